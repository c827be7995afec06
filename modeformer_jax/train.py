"""Contrastive training of ModEFormer: ``python -m modeformer_jax.train``.

  python -m modeformer_jax.train --config configs/lrs2_stage1.py --workdir runs/lrs2_s1 \\
      --config.data.dir=/data/lrs2_prepared
  python -m modeformer_jax.train --config configs/synthetic.py:runlocal --workdir /tmp/smoke

Any config field can be overridden with ``--config.<field>=<value>``. Restore order: the
workdir's latest complete checkpoint, else ``config.init_from`` (parameters only; stage 2
starts from stage 1), else a fresh init. Only process 0 writes logs; all processes take
part in checkpointing (orbax coordinates them).
"""
from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modeformer_jax import checkpoints, evaluation, input_pipeline, train_step
from modeformer_jax.models import ModEFormer

log = logging.getLogger("modeformer_jax.train")


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class MetricWriter:
  """TensorBoard scalars + a JSON-lines history; silent on processes other than 0."""

  def __init__(self, workdir: pathlib.Path):
    self.active = jax.process_index() == 0
    self.tb = None
    self.history = workdir / "metrics.jsonl"
    if self.active:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.active:
      return
    for k, v in scalars.items():
      self.tb.add_scalar(k, v, step)
    self.tb.flush()
    with open(self.history, "a") as f:
      f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def read_history(workdir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """``{metric: [(step, value), ...]}`` from a workdir's metrics.jsonl (last write wins)."""
  rows: dict[str, dict[int, float]] = {}
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if path.exists():
    for line in path.read_text().splitlines():
      r = json.loads(line)
      for k, v in r.items():
        if k != "step":
          rows.setdefault(k, {})[int(r["step"])] = v
  return {k: sorted(v.items()) for k, v in rows.items()}


def _val_clips(config: ml_collections.ConfigDict) -> list | None:
  """The fixed validation subset, decoded once (None when the split is absent)."""
  d = config.data
  try:
    return list(evaluation.record_clips(d.dir, d.val_split, max_clips=int(d.val_clips)))
  except (FileNotFoundError, KeyError, ValueError) as e:
    log.warning("no validation split %r in %s (%s); skipping validation", d.val_split, d.dir, e)
    return None


def validate(model: ModEFormer, embedder: evaluation.Embedder, params: Any,
             clips: list) -> dict[str, float]:
  """5- and 15-frame sync accuracy on the fixed validation subset."""
  embedder.set_params(params["params"] if "params" in params else params)
  res = evaluation.evaluate(model, None, clips, lengths=(5, 15), embedder=embedder)
  return {"val_acc5": float(res["accuracy"][5]), "val_acc15": float(res["accuracy"][15])}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True) -> dict[str, Any]:
  """Trains until ``config.total_steps``; returns the final metrics."""
  workdir_p = pathlib.Path(workdir).absolute()
  workdir_p.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (workdir_p / "config.json").write_text(config.to_json_best_effort(indent=1))

  # ---------------------------------------------------------------- mesh and model
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  if config.batch_size % len(devices):
    raise ValueError(f"batch_size {config.batch_size} does not divide by {len(devices)} devices")
  model = ModEFormer(config.model)
  optim = dict(config.optim.to_dict())
  optim["total_steps"] = optim.get("total_steps") or config.total_steps
  tx, schedule = train_step.make_optimizer(optim)

  # ---------------------------------------------------------------- input
  spec = input_pipeline.spec_from_config(config)
  data_it = input_pipeline.train_iterator(
      config.data.dir, config.data.train_split, global_batch=config.batch_size, spec=spec,
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), augment=True, workers=int(config.data.workers))

  # ---------------------------------------------------------------- state and restore
  rng = jax.random.key(config.seed)
  init_fn = lambda r: train_step.create_train_state(model, tx, r, config.loss)  # noqa: E731
  abstract = jax.eval_shape(init_fn, rng)
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                          abstract)
  mngr = checkpoints.make_manager(workdir_p, keep=int(config.keep_checkpoints))
  latest = mngr.latest_step()
  if latest is not None:
    state = checkpoints.restore(mngr, latest, abstract, data_it, config)
    log.info("resumed from %s/checkpoints/%d", workdir_p, latest)
  else:
    state = jax.jit(init_fn, out_shardings=rep)(rng)
    if config.init_from:
      _, params, meta = checkpoints.load_params(config.init_from, which="best",
                                                model_config=config.model)
      state["params"] = jax.device_put(params, rep)
      log.info("initialised params from %s (step %s)", config.init_from, meta.get("step"))
  step_fn = train_step.make_train_step(model, tx, mesh, config.loss)
  start = int(jax.device_get(state["step"]))

  # ---------------------------------------------------------------- eval setup
  writer = MetricWriter(workdir_p)
  val = _val_clips(config) if config.eval_every else None
  embedder = evaluation.Embedder(model, state["params"], mesh=mesh) if val else None
  last: dict[str, float] = {}

  # ---------------------------------------------------------------- loop
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar = tqdm(total=config.total_steps, initial=start, desc="train", unit="step")
  t_last, n_last, window = time.perf_counter(), start, []
  for step in range(start + 1, config.total_steps + 1):
    batch = input_pipeline.to_global(next(data_it), mesh)
    state, metrics = step_fn(state, batch, jax.random.fold_in(rng, step))
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      mngr.wait_until_finished()
      good = mngr.latest_step()
      raise NonFiniteLossError(f"loss is {loss} at step {step}; stopping. The last good "
                               f"checkpoint is {workdir_p}/checkpoints/{good}")
    window.append({k: float(v) for k, v in metrics.items()})
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f"{loss:.3f}", **({"val5": f"{last['val_acc5']:.3f}"}
                                             if "val_acc5" in last else {}))
    scalars: dict[str, float] = {}
    if step % config.log_every == 0 or step == config.total_steps:
      now = time.perf_counter()
      scalars.update({k: float(np.mean([w[k] for w in window])) for k in window[0]})
      scalars["lr"] = float(schedule(step - 1))
      scalars["examples_per_s"] = (step - n_last) * config.batch_size / (now - t_last)
      t_last, n_last, window = now, step, []
    if val and (step % config.eval_every == 0 or step == config.total_steps):
      last = validate(model, embedder, state, val)
      scalars.update(last)
    if scalars:
      writer.write(step, scalars)
      if bar is None and jax.process_index() == 0:
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    if step % config.checkpoint_every == 0 or step == config.total_steps:
      checkpoints.save(mngr, step, state, data_it, config,
                       metrics={checkpoints.VAL_METRIC: last["val_acc5"]}
                       if "val_acc5" in scalars else None)
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  if bar is not None:
    bar.close()
  return {"step": int(jax.device_get(state["step"])), **last}


# ------------------------------------------------------------------ CLI
def main(argv: Any) -> None:
  del argv
  from absl import flags
  FLAGS = flags.FLAGS
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  jnp.zeros(())  # initialise the backend before logging device facts
  log.info("devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
           jax.process_count())
  train_and_evaluate(FLAGS.config, FLAGS.workdir, progress=not FLAGS.no_progress)


def _define_flags() -> None:
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (path.py:arg).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and metrics.")
  flags.DEFINE_bool("no_progress", False, "Log lines instead of a progress bar.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  import sys
  from absl import app
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # for `configs`
  _define_flags()
  app.run(main)
