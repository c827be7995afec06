"""Contrastive training of ModEFormer: ``python -m modeformer_jax.train``.

  python -m modeformer_jax.train --config configs/lrs.py:dataset=lrs2,stage=1 \\
      --workdir runs/lrs2_s1 --config.data.dir=/data/lrs2_prepared
  python -m modeformer_jax.train --config configs/synthetic.py:runlocal --workdir /tmp/smoke

Any config field can be overridden with ``--config.<field>=<value>``.

Several processes (one per host): run the same command on every host. Under a TPU pod
slice on GKE, Slurm or Open MPI, ``jax.distributed`` is started from the scheduler's
environment; elsewhere pass ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
``JAX_PROCESS_ID``), and on a Cloud TPU VM pod ``--distributed=on`` (jax finds the workers
through the metadata server). A one-process run starts no distributed service.

Restore order: the workdir's latest complete checkpoint, else ``config.init_from`` (the
model's towers only: stage 2 starts from stage 1), else a fresh init. A checkpoint
(``checkpoints.py``) holds the train state (params, a learned ``log_tau`` included,
optimizer state, step, BatchNorm statistics if any), every process's data-iterator
position and a JSON meta (step, config, model config, the dataset's input spec). No RNG
state is saved: every key derives from ``config.seed`` and the step. Only process 0 writes
logs and metrics; all processes take part in checkpointing (orbax coordinates them).
"""
from __future__ import annotations

import json
import logging
import math
import pathlib
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags

from modeformer_jax import errors
from modeformer_jax.data import input_pipeline
from modeformer_jax.evaluation import embedding
from modeformer_jax.model import checkpoints
from modeformer_jax.model.models import ModEFormer
from modeformer_jax.training import config_utils, mesh as mesh_lib, train_step

log = logging.getLogger("modeformer_jax.train")


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
    return list(embedding.record_clips(d.dir, d.val_split, max_clips=int(d.val_clips)))
  except (FileNotFoundError, KeyError, ValueError) as e:
    log.warning("no validation split %r in %s (%s); skipping validation", d.val_split, d.dir, e)
    return None


def validate(model: ModEFormer, embedder: embedding.Embedder, params: Any,
             clips: list) -> dict[str, float]:
  """5- and 15-frame sync accuracy on the fixed validation subset."""
  embedder.set_params(params["params"] if "params" in params else params)
  res = embedding.evaluate(model, None, clips, lengths=(5, 15), embedder=embedder)
  return {"val_acc5": float(res["accuracy"][5]), "val_acc15": float(res["accuracy"][15])}


def _init_from(config: ml_collections.ConfigDict, state: dict, rep: Any) -> dict:
  """Replaces the fresh towers of ``state`` by those of ``config.init_from``.

  Only the model's parameters (``{'audio', 'video'}``) are taken. A learned temperature
  (``params['log_tau']``) is a parameter of the loss, not of the model, and starts again
  from ``config.loss.tau``: exported models and fixed-tau runs carry none, so taking the
  saved one would make the start depend on how the source was trained, and the new run's
  config states its temperature (pass a learned one on with ``--config.loss.tau``).
  Optimizer state, step and BatchNorm statistics also start fresh.
  """
  _, towers, meta = checkpoints.load_model(config.init_from, which="best",
                                           model_config=config.model)
  state["params"] = jax.device_put(dict(state["params"], **towers), rep)
  log.info("initialised the model from %s (step %s)%s", config.init_from, meta.get("step"),
           f"; tau starts at {config.loss.tau}" if config.loss.learn_tau else "")
  return state


def compiled_step(path: str, config: ml_collections.ConfigDict, mesh: Any) -> Any:
  """The train step saved by ``plan --save_compiled``, if it was made for this run.

  Refuses (``errors.CompiledMismatch``, naming each difference) another device kind or count,
  another global batch or N_H, or other model/loss/optimizer settings, before any step.
  """
  from modeformer_jax import plan
  from modeformer_jax.training import aot
  planner = plan.Planner(config, mesh)
  remat = bool(config.model.get("remat", False))
  step_config = planner.step_config(remat)
  here = aot.signature(devices=list(mesh.devices.flat), step_config=step_config,
                       batch_size=config.batch_size, num_hard=config.num_hard)
  # Checked before tracing; traced, not compiled: the structures the executable uses.
  lower = lambda: planner.lower(int(config.batch_size), int(config.num_hard), remat)  # noqa: E731
  return aot.load_compiled(path, here, step_config, lower)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress: bool = True, compiled: str | None = None) -> dict[str, Any]:
  """Trains until ``config.total_steps``; returns the final step, loss and validation metrics.

  Metrics stay on the device between log steps (summed there); the host reads them only
  at log, validation and checkpoint steps, so steps are dispatched back to back. At each
  of these the summed loss is checked: a NaN/inf raises :class:`errors.NonFiniteLossError`
  naming the steps it came from, before the state is validated or saved.
  """
  from modeformer_jax.model import input_spec
  workdir_p = pathlib.Path(workdir).absolute()
  workdir_p.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    (workdir_p / "config.json").write_text(config.to_json_best_effort(indent=1))
  # ---------------------------------------------------------------- mesh and model
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.batch_size, mesh)
  rep = mesh_lib.replicated(mesh)
  model = ModEFormer(config.model)
  # A step compiled ahead of time (plan --save_compiled): checked before anything is read.
  step_fn = compiled_step(compiled, config, mesh) if compiled else None
  # What the model will expect as input, as recorded by data_prep; every checkpoint keeps it.
  spec = input_spec.read_dataset_spec(config.data.dir)
  optim = dict(config.optim.to_dict())
  optim["total_steps"] = optim.get("total_steps") or config.total_steps
  tx, schedule = train_step.make_optimizer(optim)

  # ---------------------------------------------------------------- input
  data_it = input_pipeline.train_iterator(
      config.data.dir, config.data.train_split, global_batch=config.batch_size,
      spec=input_pipeline.spec_from_config(config), seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(), augment=True,
      workers=int(config.data.workers))

  # ---------------------------------------------------------------- state and restore
  # One key from the seed, made by every process alike (a replicated global array): init
  # uses it directly, the train step folds the step index into it.
  rng = jax.jit(lambda: jax.random.key(config.seed), out_shardings=rep)()
  init_fn = lambda r: train_step.create_train_state(model, tx, r, config.loss)  # noqa: E731
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                          jax.eval_shape(init_fn, rng))
  mngr = checkpoints.make_manager(workdir_p, keep=int(config.keep_checkpoints))
  latest = mngr.latest_step()
  if latest is not None:
    state = checkpoints.restore(mngr, latest, abstract, data_it, config, input_spec=spec)
    log.info("resumed from %s/checkpoints/%d", workdir_p, latest)
  else:
    state = jax.jit(init_fn, out_shardings=rep)(rng)
    if config.init_from:
      state = _init_from(config, state, rep)
  step_opts = train_step.step_options(config)
  if step_fn is None:
    step_fn = train_step.make_train_step(model, tx, mesh, config.loss, **step_opts)
  else:
    log.info("train step: the executable compiled ahead of time in %s", compiled)
  start = int(jax.device_get(state["step"]))

  # ---------------------------------------------------------------- eval setup
  writer = MetricWriter(workdir_p)
  val = _val_clips(config) if config.eval_every else None
  embedder = embedding.Embedder(model, state["params"], mesh=mesh) if val else None
  last: dict[str, float] = {}

  # ---------------------------------------------------------------- loop
  bar = None
  if progress and jax.process_index() == 0:
    from tqdm import tqdm
    bar = tqdm(total=config.total_steps, initial=start, desc="train", unit="step")
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  sums, n_summed = None, 0   # metrics summed on the device since the last log step
  checked = start            # every loss up to this step is known to be finite
  t_last, n_last = time.perf_counter(), start
  for step in range(start + 1, config.total_steps + 1):
    batch = mesh_lib.to_global(next(data_it), mesh, step_opts["host_inputs"])
    state, metrics = step_fn(state, batch, rng)
    sums, n_summed = (metrics if sums is None else add(sums, metrics)), n_summed + 1
    if bar is not None:
      bar.update(1)  # no device sync: the bar counts dispatched steps
    final = step == config.total_steps
    log_now = step % config.log_every == 0 or final
    eval_now = bool(val) and (step % config.eval_every == 0 or final)
    save_now = step % config.checkpoint_every == 0 or final
    if not (log_now or eval_now or save_now):
      continue
    # The state is about to be read: make sure the steps since the last check were finite.
    host = {k: float(v) for k, v in jax.device_get(sums).items()}
    if not math.isfinite(host["loss"]):
      mngr.wait_until_finished()
      good = mngr.latest_step()
      where = (f"{workdir_p}/checkpoints/{good}" if good is not None
               else f"none (no checkpoint was written to {workdir_p})")
      raise errors.NonFiniteLossError(f"loss is not finite in steps {checked + 1}-{step}; "
                               f"stopping. The last good checkpoint is {where}")
    checked = step
    scalars: dict[str, float] = {}
    if log_now:
      now = time.perf_counter()
      scalars.update({k: v / n_summed for k, v in host.items()})
      scalars["lr"] = float(jax.device_get(schedule(step - 1)))
      scalars["examples_per_s"] = (step - n_last) * config.batch_size / (now - t_last)
      last["loss"] = scalars["loss"]
      t_last, n_last, sums, n_summed = now, step, None, 0
    if eval_now:
      res = validate(model, embedder, state, val)
      last.update(res)
      scalars.update(res)
    if scalars:
      writer.write(step, scalars)
      if bar is not None:
        bar.set_postfix({k: f"{last[k]:.3f}" for k in ("loss", "val_acc5") if k in last})
      elif jax.process_index() == 0:
        log.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
    if save_now:
      checkpoints.save(mngr, step, state, data_it, config, input_spec=spec,
                       metrics={checkpoints.VAL_METRIC: last["val_acc5"]}
                       if eval_now else None)
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  if bar is not None:
    bar.close()
  return {"step": int(jax.device_get(state["step"])), **last}


# ------------------------------------------------------------------ CLI
def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and metrics.",
                      flag_values=fv)
  flags.DEFINE_bool("no_progress", False, "Log lines instead of a progress bar.",
                    flag_values=fv)
  flags.DEFINE_string("coordinator_address", None,
                      "Multi-process runs: HOST:PORT of process 0's coordinator.", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes.",
                       flag_values=fv)
  flags.DEFINE_integer("process_id", None, "Multi-process runs: this process, 0..N-1.",
                       flag_values=fv)
  flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                    "Start jax.distributed: auto = when the flags above or a scheduler "
                    "say there are several processes; on = always (jax detects the "
                    "cluster); off = never.", flag_values=fv)
  flags.DEFINE_string("compiled", None, "Run the train step compiled ahead of time by "
                      "`python -m modeformer_jax.plan ... --save_compiled PATH` (refused "
                      "unless made for these devices, batch and config).", flag_values=fv)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  fv = config_utils.parse_flags(argv, __doc__, _define_flags)
  # force: importing orbax has already configured the root logger (absl calls basicConfig).
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                      force=True)
  # Before anything touches a backend: jax.distributed must come first.
  mesh_lib.init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id,
                            mode=fv.distributed)
  log.info("devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
           jax.process_count())
  try:
    out = train_and_evaluate(fv.config, fv.workdir, progress=not fv.no_progress,
                             compiled=fv.compiled)
  except (errors.CompiledMismatch, FileNotFoundError, ValueError) as e:
    if fv.compiled and (isinstance(e, errors.CompiledMismatch) or fv.compiled in str(e)):
      print(f"train: {e}", file=sys.stderr)
      raise SystemExit(2) from None
    raise
  # Every process logs its result (replicated values: all processes agree).
  log.info("finished (process %d): %s", jax.process_index(), json.dumps(out))


if __name__ == "__main__":
  main()
