"""Training on one accelerator from a clip package: ``python -m modeformer_jax.train_device``.

  python -m modeformer_jax.train_device --package device_pkg --out $OUT           # the run
  python -m modeformer_jax.train_device --package device_pkg --out /tmp/s --smoke  # CPU check

For a machine that has jax, flax, optax, orbax, numpy and OpenCV but not grain, ArrayRecord,
ml_collections, PyAV or librosa, gives minutes, and returns a few flat files of at most
16 MiB (``bench/faces_v3_device.sh`` runs it there; docs/training.md has the whole round).

* Data: a clip package (``modeformer_jax.data.clip_package``, built by ``data_prep.device_package``),
  decoded into memory. Batch ``i`` takes consecutive clips of a seeded per-epoch permutation,
  one entry per clip, cut and augmented by ``input_pipeline.clip_entries`` (the grain
  pipeline's own function) with a generator seeded by ``(seed, i)``: the stream does not
  depend on the worker count. Forked workers write batches into shared memory slots, so
  batches never pass through a pipe.
* Recipe: ``configs/faces.py:exact`` (``LOSS``, ``OPTIM``, ``example_spec``; a test keeps
  them equal): InfoNCE, tau 0.1, easy negatives, hard negatives from 1 frame away, no
  tolerance, the faces augmentation, Adam with cosine decay. Compute in bfloat16 (params
  float32). The step is ``train_step.make_train_step``.
* Time: ``--minutes`` bounds the whole process (decode and compile included). Without
  ``--steps`` the step is compiled, timed over ``--probe_steps`` steps inside the warm-up
  (where the schedule does not depend on the run's length), and compiled again with the
  cosine decay ending at the deadline. The loop stops at the deadline in any case.
* Output in ``--out``: ``<name>-<step>.msgpack`` model files (``checkpoints.save_model_file``,
  with the package's input spec, so ``detect --checkpoint FILE`` uses them directly) every
  ``--save_every_s`` seconds and at the end, the newest ``--keep``; ``metrics.jsonl``;
  ``run.json`` (the plan, rates, compile time, XLA's FLOPs per step).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import mmap
import multiprocessing
import os
import pathlib
import time
from typing import Any

import numpy as np

from modeformer_jax.data import clip_package, input_pipeline
from modeformer_jax.model.windows import MEL_WINDOW, WINDOW_FRAMES

log = logging.getLogger("modeformer_jax.train_device")

# configs/faces.py:exact, the recipe of faces_v2 (tests/test_device_package.py keeps them
# equal; the batch, steps, model and compute dtype are this module's own).
LOSS = {"tau": 0.1, "learn_tau": False, "easy_negatives": True, "tolerance": 0}
OPTIM = {"lr": 5e-4, "schedule": "cosine", "warmup_steps": 100, "grad_clip": 1.0,
         "weight_decay": 0.0}
MAX_FILE_BYTES = 16 * 2 ** 20        # the most a device run may return per file
PROBE_SKIP = 10                      # first steps left out of the probe's rate (warm-up)


def example_spec(num_hard: int = 4) -> input_pipeline.ExampleSpec:
  """How entries are cut and augmented (``configs/faces.py:exact``)."""
  return input_pipeline.ExampleSpec(
      num_hard=num_hard, min_shift=1, max_shift=15, entries_per_clip=1, brightness=12.0,
      contrast=0.15, max_crop_shift=3, color=0.1, scale=0.1, rotation=6.0, flip=True,
      audio_gain_db=6.0, noise_snr_db=10.0)


# ------------------------------------------------------------------ batches
def batch_shapes(batch: int, num_hard: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The pipeline's batch layout (``input_pipeline`` module docstring)."""
  a = 1 + num_hard
  return {"video": ((batch, WINDOW_FRAMES, *clip_package.LIP_SHAPE), np.uint8),
          "audio": ((batch, a, 80, MEL_WINDOW), np.float32),
          "clip": ((batch,), np.int32), "video_time": ((batch,), np.int32),
          "audio_time": ((batch, a), np.int32)}


class BatchMaker:
  """Batch ``i`` of a run over a decoded package (see the module docstring)."""

  def __init__(self, pkg: clip_package.Package, batch: int, spec: input_pipeline.ExampleSpec,
               seed: int, augment: bool = True):
    self.pkg, self.batch, self.spec, self.seed, self.augment = pkg, batch, spec, seed, augment
    # Clips too short for a window and one hard negative cannot make an entry.
    self.usable = np.array([i for i, c in enumerate(pkg.clips)
                            if c["num_frames"] >= WINDOW_FRAMES + spec.min_shift], np.int64)
    if self.usable.size == 0:
      raise ValueError("no clip of the package is long enough to train on")
    self._perms: dict[int, np.ndarray] = {}

  def clips_of(self, i: int) -> np.ndarray:
    """Package clip indices of batch ``i``: entries ``iB .. iB+B-1`` of the epoch stream."""
    n = self.usable.size
    j = np.arange(i * self.batch, (i + 1) * self.batch)
    out = np.empty(self.batch, np.int64)
    for e in np.unique(j // n):
      if e not in self._perms:
        self._perms = {e: np.random.default_rng([self.seed, int(e)]).permutation(n)}
      sel = j // n == e
      out[sel] = self.usable[self._perms[e][j[sel] % n]]
    return out

  def fill(self, i: int, out: dict[str, np.ndarray]) -> None:
    """Writes batch ``i`` into ``out`` (arrays of ``batch_shapes``)."""
    rng = np.random.default_rng([self.seed, i, 1])
    for k, c in enumerate(self.clips_of(i)):
      lips, mel = self.pkg.clip(int(c))
      e = input_pipeline.clip_entries(lambda t, lips=lips: lips[t:t + WINDOW_FRAMES], mel,
                                      len(lips), int(c), self.spec, rng, self.augment,
                                      name=self.pkg.clips[c]["clip_id"])
      for key, arr in out.items():
        arr[k] = e[key][0]


class SharedSlots:
  """``slots`` batches in anonymous shared memory, made before the workers are forked."""

  def __init__(self, slots: int, batch: int, num_hard: int):
    self.arrays = {}
    for key, (shape, dtype) in batch_shapes(batch, num_hard).items():
      nbytes = slots * int(np.prod(shape)) * np.dtype(dtype).itemsize
      buf = mmap.mmap(-1, nbytes)   # MAP_SHARED: written by a worker, read by the trainer
      self.arrays[key] = np.frombuffer(buf, dtype).reshape((slots, *shape))
    self.slots = slots

  def slot(self, s: int) -> dict[str, np.ndarray]:
    return {k: v[s] for k, v in self.arrays.items()}


_WORKER: tuple[BatchMaker, SharedSlots] | None = None   # inherited by forked workers


def _fill(slot: int, i: int) -> int:
  maker, slots = _WORKER
  maker.fill(i, slots.slot(slot))
  return i


class Loader:
  """Batches 0, 1, 2, ... in order, ``slots`` of them prepared ahead by ``workers`` processes.

  ``get(i)`` returns batch ``i``'s slot; the caller must ``release(i)`` once the batch is on
  the device, which hands the slot to batch ``i + slots``. ``workers=0`` fills in-process.
  Start it before JAX touches a backend: forking a process with live accelerator threads
  can deadlock.
  """

  def __init__(self, maker: BatchMaker, workers: int, slots: int):
    global _WORKER
    self.shared = SharedSlots(slots, maker.batch, maker.spec.num_hard)
    _WORKER = (maker, self.shared)
    self.workers, self.pending, self.wait_s = workers, {}, 0.0
    self.pool = None
    if workers > 0:
      import cv2
      cv2.setNumThreads(1)   # no OpenCV thread pool to fork; each worker is one thread anyway
      self.pool = multiprocessing.get_context("fork").Pool(workers)
    for i in range(slots if self.pool else 0):
      self._submit(i)

  def _submit(self, i: int) -> None:
    self.pending[i] = self.pool.apply_async(_fill, (i % self.shared.slots, i))

  def get(self, i: int) -> dict[str, np.ndarray]:
    t = time.perf_counter()
    if self.pool is None:
      _fill(i % self.shared.slots, i)
    else:
      self.pending.pop(i).get()
    self.wait_s += time.perf_counter() - t
    return self.shared.slot(i % self.shared.slots)

  def release(self, i: int) -> None:
    if self.pool is not None:
      self._submit(i + self.shared.slots)

  def close(self) -> None:
    if self.pool is not None:
      self.pool.terminate()
      self.pool.join()


# ------------------------------------------------------------------ output
class Outputs:
  """Model files (newest ``keep``), ``metrics.jsonl`` and ``run.json`` in one flat folder."""

  def __init__(self, out: pathlib.Path, name: str, keep: int):
    self.out, self.name, self.keep = out, name, keep
    out.mkdir(parents=True, exist_ok=True)
    self.saved: list[pathlib.Path] = []

  def metrics(self, row: dict[str, Any]) -> None:
    with open(self.out / "metrics.jsonl", "a") as f:
      f.write(json.dumps(row) + "\n")

  def save(self, step: int, params: Any, model_cfg: dict, card: dict) -> pathlib.Path:
    from modeformer_jax.model import checkpoints  # orbax: only once there is something to save
    path = checkpoints.save_model_file(self.out / f"{self.name}-{step:06d}.msgpack", params,
                                       model_cfg, dict(card, step=step))
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
      raise RuntimeError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} a file may have")
    self.saved = [p for p in self.saved if p != path] + [path]
    for old in self.saved[:-self.keep]:
      old.unlink(missing_ok=True)
    self.saved = self.saved[-self.keep:]
    log.info("saved %s (%.1f MB)", path.name, size / 1e6)
    return path

  def run_json(self, info: dict[str, Any]) -> None:
    (self.out / "run.json").write_text(json.dumps(info, indent=1, default=str))


# ------------------------------------------------------------------ run
def _flops(compiled: Any) -> float:
  """FLOPs of one step from XLA's cost analysis (nan where the backend gives none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def train(args: argparse.Namespace) -> dict[str, Any]:
  """The run of the module docstring; returns what ``run.json`` holds."""
  t0 = time.monotonic()
  deadline = t0 + args.minutes * 60.0 - args.reserve_s
  out = Outputs(pathlib.Path(args.out), args.name, args.keep)
  info: dict[str, Any] = {"args": vars(args)}

  # ---------------------------------------------------------------- data, then workers
  pkg = clip_package.load(args.package, threads=8)
  info["decode_s"] = round(time.monotonic() - t0, 1)
  spec = example_spec(args.num_hard)
  maker = BatchMaker(pkg, args.batch, spec, args.seed)
  frames = sum(c["num_frames"] for c in pkg.clips)
  log.info("package %s: %d clips (%d usable), %d frames, decoded in %.1f s", args.package,
           len(pkg), maker.usable.size, frames, info["decode_s"])
  workers = args.workers if args.workers >= 0 else max(1, (os.cpu_count() or 2) - 2)
  loader = Loader(maker, workers, slots=max(2, 2 * workers))

  # ---------------------------------------------------------------- model and step
  import jax
  import jax.numpy as jnp

  from modeformer_jax.model import models
  from modeformer_jax.training import mesh as mesh_lib, train_step
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(args.batch, mesh)
  rep = mesh_lib.replicated(mesh)
  model_cfg = models.model_config(args.variant, dtype=args.dtype)
  model = models.ModEFormer(model_cfg)
  optim = dict(OPTIM, lr=args.lr or OPTIM["lr"])
  rng = jax.device_put(jax.random.key(args.seed), rep)
  n_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(model.init, rng)))
  if n_params * 4 > MAX_FILE_BYTES - 2 ** 20:
    raise ValueError(f"{args.variant}: {n_params} float32 parameters do not fit a "
                     f"{MAX_FILE_BYTES}-byte model file")
  devices = jax.devices()
  info.update(device=f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
              jax=jax.__version__, params=n_params, workers=workers)
  log.info("devices %s; %s: %.2fM parameters, %s compute; batch %d, N_H %d; %d workers",
           info["device"], args.variant, n_params / 1e6, args.dtype, args.batch,
           args.num_hard, workers)

  def compile_step(total: int) -> tuple[Any, Any, Any, float]:
    """``(tx, schedule, compiled step, seconds)`` for a cosine decay over ``total`` steps."""
    # Runs shorter than the warm-up (smoke runs) warm up over half of their steps.
    warmup = min(optim["warmup_steps"], total // 2)
    tx, schedule = train_step.make_optimizer(dict(optim, total_steps=total,
                                                  warmup_steps=warmup))
    t = time.monotonic()
    step_fn = train_step.make_train_step(model, tx, mesh, LOSS)
    abstract = jax.eval_shape(lambda r: train_step.create_train_state(model, tx, r, LOSS), rng)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                            abstract)
    compiled = step_fn.lower(abstract, train_step.abstract_batch(args.batch, args.num_hard,
                                                                 mesh), rng).compile()
    return tx, schedule, compiled, time.monotonic() - t

  fixed = args.steps > 0
  total = args.steps if fixed else 10 ** 6   # a placeholder until the probe has timed it
  tx, schedule, compiled, info["compile_s"] = compile_step(total)
  info["flops_per_step"] = _flops(compiled)
  try:
    mem = compiled.memory_analysis()
    info["temp_bytes"] = int(mem.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    pass
  init = jax.jit(lambda r: train_step.create_train_state(model, tx, r, LOSS),
                 out_shardings=rep).lower(rng)
  # Init runs once: on a CPU, compiling it well takes longer than running it badly.
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  state = init.compile(fast if devices[0].platform == "cpu" else None)(rng)
  log.info("compiled in %.1f s; %.3g FLOP per step", info["compile_s"], info["flops_per_step"])

  # ---------------------------------------------------------------- loop
  # Saved for inference in float32 (the shipped models' dtype); the card says how it trained.
  saved_cfg = dict(model_cfg.to_dict(), dtype="float32")
  card = {"input_spec": pkg.input_spec, "variant": args.variant, "train_dtype": args.dtype,
          "trained_on": "clip package: " + ", ".join(
              f"{s['dataset']} {s['split']} ({s['clips']} clips)"
              for s in pkg.index["sources"]),
          "batch": args.batch, "num_hard": args.num_hard, "device": info["device"],
          "recipe": "modeformer_jax.train_device (configs/faces.py:exact)"}
  add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  sums, n_summed, step = None, 0, 0
  t_log = t_save = time.monotonic()
  probe_t: float | None = None
  wait_at_log, status = 0.0, "finished"
  while True:
    if step >= total:
      break
    if time.monotonic() >= deadline:
      status = "stopped at the deadline"
      break
    batch = mesh_lib.to_global(loader.get(step), mesh)
    jax.block_until_ready(batch)   # the slot is free once its bytes are on the device
    loader.release(step)
    state, metrics = compiled(state, batch, rng)
    sums, n_summed = (metrics if sums is None else add(sums, metrics)), n_summed + 1
    step += 1
    if not fixed and step == PROBE_SKIP:
      jax.block_until_ready(state)
      probe_t = time.monotonic()
    if not fixed and step == args.probe_steps:
      # Plan: the rate after warm-up, to the deadline; the new schedule is the old one up
      # to here (both still in the linear warm-up), so the state carries over.
      # The second compile is assumed to take as long as the first.
      jax.block_until_ready(state)
      rate = (step - PROBE_SKIP) / (time.monotonic() - probe_t)
      left = deadline - time.monotonic() - info["compile_s"]
      total = step + max(1, int(rate * left * 0.95))
      tx, schedule, compiled, recompile_s = compile_step(total)
      info.update(probe_steps_per_s=round(rate, 3), recompile_s=round(recompile_s, 1),
                  planned_steps=total)
      log.info("probe: %.2f steps/s; recompiled in %.1f s; planned %d steps", rate,
               recompile_s, total)
    final = step >= total
    if step % args.log_every and not final and time.monotonic() - t_save < args.save_every_s:
      continue
    host = {k: float(v) for k, v in jax.device_get(sums).items()}
    if not math.isfinite(host["loss"]):
      status = f"non-finite loss in steps {step - n_summed + 1}-{step}"
      log.error("%s; the last saved model file is kept", status)
      break
    now = time.monotonic()
    row = {"step": step, **{k: v / n_summed for k, v in host.items()},
           "lr": float(schedule(step - 1)), "steps_per_s": n_summed / (now - t_log),
           "examples_per_s": n_summed * args.batch / (now - t_log),
           "loader_wait": (loader.wait_s - wait_at_log) / (now - t_log),
           "elapsed_s": now - t0}
    out.metrics(row)
    log.info("step %d loss %.4f acc %.3f lr %.2e %.2f steps/s %.0f ex/s wait %.0f%%", step,
             row["loss"], row["accuracy"], row["lr"], row["steps_per_s"],
             row["examples_per_s"], 100 * row["loader_wait"])
    sums, n_summed, t_log, wait_at_log = None, 0, now, loader.wait_s
    if now - t_save >= args.save_every_s:
      out.save(step, state["params"], saved_cfg,
               dict(card, wall_s=round(now - t0, 1)))
      t_save = time.monotonic()
  loader.close()
  if step and not status.startswith("non-finite"):
    jax.block_until_ready(state)
    out.save(step, state["params"], saved_cfg,
             dict(card, wall_s=round(time.monotonic() - t0, 1)))
  info.update(status=status, steps=step, wall_s=round(time.monotonic() - t0, 1),
              files=[p.name for p in out.saved])
  out.run_json(info)
  log.info("%s after %d steps, %.1f s: %s", status, step, info["wall_s"], info["files"])
  return info


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--package", required=True, help="clip package folder (data_prep.device_package)")
  p.add_argument("--out", required=True, help="flat folder for model files and logs")
  p.add_argument("--name", default="faces_v3", help="model file prefix")
  p.add_argument("--variant", default="small", help="models.MODEL_VARIANTS")
  p.add_argument("--dtype", default="bfloat16", help="compute dtype (params stay float32)")
  p.add_argument("--batch", type=int, default=None, help="global batch (default 512; smoke 8)")
  p.add_argument("--num_hard", type=int, default=4)
  p.add_argument("--lr", type=float, default=None, help=f"default {OPTIM['lr']}")
  p.add_argument("--steps", type=int, default=None,
                 help="fixed step count; default: planned from the probe to the deadline")
  p.add_argument("--minutes", type=float, default=None,
                 help="wall-clock budget of the whole process (default 7; smoke 10)")
  p.add_argument("--reserve_s", type=float, default=15.0,
                 help="kept back from --minutes for the final save and exit")
  p.add_argument("--probe_steps", type=int, default=40,
                 help="steps timed before planning (inside the warm-up)")
  p.add_argument("--save_every_s", type=float, default=120.0)
  p.add_argument("--keep", type=int, default=3, help="newest model files kept")
  p.add_argument("--log_every", type=int, default=None, help="default 100; smoke 1")
  p.add_argument("--workers", type=int, default=-1, help="batch processes (-1: cores - 2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true",
                 help="CPU check of the same command: batch 8, 4 steps, 1 worker, 10 minutes")
  return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
  """Fills the defaults that ``--smoke`` changes."""
  smoke = args.smoke
  args.batch = args.batch or (8 if smoke else 512)
  args.steps = args.steps if args.steps is not None else (4 if smoke else 0)
  # A smoke run's budget is a guard, not a target: CPU compile times vary with the load.
  args.minutes = args.minutes or (10.0 if smoke else 7.0)
  args.log_every = args.log_every or (1 if smoke else 100)
  if smoke:
    args.workers = min(args.workers, 1) if args.workers >= 0 else 1
  if not args.steps and not PROBE_SKIP < args.probe_steps < OPTIM["warmup_steps"]:
    raise ValueError(f"--probe_steps must be over {PROBE_SKIP} and end inside the warm-up "
                     f"({OPTIM['warmup_steps']} steps)")
  return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  args = parser().parse_args(argv)
  return train(resolve(args))


if __name__ == "__main__":
  # Through the imported module, not __main__: the workers' tasks name their function by
  # module, and under runpy (tests) __main__ is someone else.
  from modeformer_jax import train_device
  train_device.main()
