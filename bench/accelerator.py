"""The paper's scale on one accelerator: B = 2000 train steps, the N_H x B frontier, MFU.

  bash bench/accelerator.sh                     # on the device: writes $OUT/accelerator.json
  python -m bench.accelerator --smoke           # the same code: micro model, on the CPU
  python -m bench.accelerator --out r.json --budget_s 420 --frontier_num_hard 2,11

One command, one JSON file (``--out``, rewritten after every item) and a table on stdout.
In order, each item skipped and recorded as such when the time budget would not cover it:

1. ``peak``: a large bf16 matmul on random data, the reference of every MFU below;
2. ``paper``: the real sharded train step (``train_step.make_train_step``, compiled through
   ``plan.Planner.compile``) at B = 2000, N_H = 2, bf16, in two loss forms: stage 1, the
   positive and hard negatives only (``loss.easy_negatives=False``), and stage 2, the
   gathered InfoNCE (every video against all B(1+N_H) audio windows): compile time, median
   step time, pairs/s, FLOPs, MFU, peak device memory;
3. ``eval``: embed-once scoring of 100-frame clips (``embedding.score_clips``): clips/s, MFU;
4. ``frontier``: per N_H, stage 2, the largest B the device's own compiler says fits
   (``plan.Planner`` on the device: ``memory_analysis``, re-aimed once), then confirmed by
   running that step; then the same with remat on (``--remat_num_hard``).

Every run is a child process (``--task``): ``memory_stats``' peak is a high-water mark over
a process's life with no reset, so only a fresh process reports one step's peak, and an
out-of-memory error stays in its child. The parent never touches the accelerator (its JAX
runs on the CPU); while the children run it compiles, on the CPU, what ``python -m
modeformer_jax.plan`` estimates for each (B, N_H) a child ran, for the planner's error.
``--smoke`` runs the children in-process (a CPU keeps no memory statistics to isolate) with
a memory limit of its own, so the frontier logic runs too. FLOPs: model FLOPs are
3 x (B x video + B(1+N_H) x audio) forward FLOPs per window from XLA's cost analysis of
each tower with the native 3D convolution (forward + backward = 3 x forward; no remat
recompute, loss or optimizer);
XLA's count for the whole compiled step is reported beside them.

Three memory figures per step: the device's measured peak, the planner's XLA:CPU estimate
(``plan cpu``) and the deviceless GPU compiler's (``aot``: the same one-GPU step compiled
here beforehand by ``python -m bench.frontier --point h200-1,STAGE,B,N_H``, read from
bench/frontier_compiles/), each with its error. ``peak`` also records the real GPU's own
target description (``target_config``), to check the one aot.py writes by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import compiled_flops, machine, matmul_peak, memory_stats
from modeformer_jax import plan
from modeformer_jax.evaluation import embedding
from modeformer_jax.model import models, windows
from modeformer_jax.training import mesh as mesh_lib, train_step as ts

REPO = pathlib.Path(__file__).resolve().parents[1]
# The training recipe of configs/lrs.py (config_utils.training_config), as plain dicts: the
# device has no ml_collections. easy_negatives is set per stage.
LOSS = {"tau": 0.1, "learn_tau": False, "tolerance": 1}
OPTIM = {"lr": 1e-4, "schedule": "constant", "grad_clip": 1.0}
STAGE_EASY = {1: False, 2: True}
# XLA's lowest optimisation level: for CPU smoke runs, whose timings mean nothing.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
PAPER_GFLOP_PER_PAIR = 4.98   # docs/model.md: forward, one video + one audio window
STAGES_NOTE = ("stage 1 = positive + hard negatives only (loss.easy_negatives=False); stage 2 "
               "= plus the globally gathered easy negatives. configs/lrs.py trains both "
               "stages with easy negatives on; this bench measures both loss forms")


@dataclasses.dataclass
class Settings:
  """What one run measures; ``DEVICE`` and ``SMOKE`` differ only in scale."""
  variant: str = "paper"
  dtype: str = "bfloat16"
  batch: int = 2000                     # the paper's global batch
  num_hard: int = 2                     # the paper's stage-1 N_H
  steps: int = 20                       # timed steps per paper-point run
  warmup: int = 2
  # In the order run (the budget may cut the tail): 11, the paper's stage-2 choice; 2, the
  # paper point's neighbour; 25, the far end of the paper's range; then 5.
  frontier_num_hard: tuple[int, ...] = (11, 2, 25, 5)
  remat_num_hard: tuple[int, ...] = (11,)
  frontier_steps: int = 3
  multiple: int = 8                     # frontier granularity of B
  fill: float = 0.97                    # aim the frontier at this fraction of the limit
  low_water: float = 0.85               # re-aim once when the analysis is below this
  max_compiles: int = 2                 # per frontier child
  eval_clips: int = 512
  eval_frames: int = 100
  eval_group: int = 16                  # clips per embedding chunk (score_clips' group)
  peak_n: int = 16384
  peak_seconds: float = 3.0
  memory_limit: int | None = None       # bytes; None = the device's bytes_limit
  mem_fraction: float = 0.95            # XLA_PYTHON_CLIENT_MEM_FRACTION of the children
  fast_compile: bool = False
  isolate: bool = True                  # children in their own processes
  budget_s: float = 420.0
  items: tuple[str, ...] = ("paper", "eval", "frontier", "remat")   # the peak always runs


DEVICE = Settings()
SMOKE = Settings(variant="micro", batch=16, steps=3, warmup=1, frontier_num_hard=(11,),
                 remat_num_hard=(11,), frontier_steps=1, eval_clips=4, eval_frames=24,
                 eval_group=2, peak_n=256, peak_seconds=0.3, memory_limit=128 * 2**20,
                 fast_compile=True, isolate=False, budget_s=300.0)


# ====================================================================== the children's side
def _mesh():
  return mesh_lib.make_mesh(jax.local_devices()[:1])


def _model_cfg(variant: str, dtype: str) -> dict[str, Any]:
  return models.model_config(variant, dtype=dtype).to_dict()


def _compile_options(spec: dict[str, Any]) -> dict | None:
  return FAST_COMPILE if spec["fast_compile"] else None


def _planner(spec: dict[str, Any], mesh, easy: bool, conv3d: str = "auto") -> plan.Planner:
  """The planner of the paper's recipe for one loss form; it also compiles what is run
  (``conv3d='auto'``: the form this backend runs; native on every accelerator)."""
  cfg = {"model": _model_cfg(spec["variant"], spec["dtype"]),
         "loss": dict(LOSS, easy_negatives=easy), "optim": OPTIM}
  return plan.Planner(cfg, mesh, compiler_options=_compile_options(spec), conv3d=conv3d)


def _is_oom(err: BaseException) -> bool:
  text = str(err)
  return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _floor(x: float, multiple: int) -> int:
  return max(multiple, int(x) // multiple * multiple)


def aim_batch(batch: int, peak: int, target: float, fixed: int, multiple: int) -> int:
  """The B whose peak reaches ``target`` bytes if the peak is ``fixed`` plus a part linear in
  B (the planner's observation), from one measured ``(batch, peak)``."""
  per_entry = max(peak - fixed, 1) / batch
  return _floor((target - fixed) / per_entry, multiple)


def choose_batch(compile_fn: Callable[[int], tuple[Any, dict[str, Any]]], batch: int,
                 limit: int | None, *, fill: float, low_water: float, max_compiles: int,
                 fixed: int, multiple: int) -> tuple[tuple | None, list[dict[str, Any]]]:
  """Compiles at ``batch`` and, with a memory ``limit``, re-aims B (``aim_batch``) until the
  compiled peak lies in ``[low_water, fill] x limit`` or ``max_compiles`` are spent.

  ``compile_fn(B) -> (compiled, row)`` with ``row['peak']``, ``row['compile_s']``. Returns
  ``((B, compiled, row) of the largest B within ``fill x limit`` or None, compile log)``.
  Without a limit the first compile is taken as it is.
  """
  best, log = None, []
  for _ in range(max_compiles):
    compiled, row = compile_fn(batch)
    log.append({"B": batch, "analysis_peak": row["peak"], "compile_s": row["compile_s"]})
    if limit is None:
      return (batch, compiled, row), log
    target = fill * limit
    if row["peak"] <= target and (best is None or batch > best[0]):
      best = (batch, compiled, row)
    if low_water * limit <= row["peak"] <= target:
      break
    aimed = aim_batch(batch, row["peak"], target, fixed, multiple)
    if aimed == batch or (best is not None and aimed <= best[0]):
      break
    batch = aimed
  return best, log


def _init_state(planner, spec: dict[str, Any], mesh):
  """A fresh train state, initialised with the remat-off model: remat changes only how
  the forward runs, never the parameters, so every child compiles the same init."""
  model = planner.model(False)
  key = jax.random.key(0)
  init = jax.jit(lambda r: ts.create_train_state(model, planner.tx, r, planner.loss_cfg),
                 out_shardings=mesh_lib.replicated(mesh))
  return init.lower(key).compile(_compile_options(spec))(key)


def run_peak(spec: dict[str, Any]) -> dict[str, Any]:
  """The same-run reference: a large matmul on random data, and the device's description."""
  dtype = jnp.dtype(spec["peak_dtype"])
  flops = matmul_peak(spec["peak_n"], dtype, min_seconds=spec["peak_seconds"])
  dev = jax.local_devices()[0]
  stats = memory_stats() or {}
  return {"status": "ok", "tflops": flops / 1e12, "n": spec["peak_n"], "dtype": str(dtype),
          "device_kind": dev.device_kind, "platform": dev.platform, "jax": jax.__version__,
          "machine": machine(), "bytes_limit": stats.get("bytes_limit"),
          "target_config": _target_config(dev)}


def _target_config(dev: Any) -> str | None:
  """The real GPU's own GpuTargetConfigProto (text), to check aot.py's hand-written one."""
  if dev.platform != "gpu":
    return None
  try:
    from jax.experimental import topologies
    return str(topologies.get_topology_for_devices([dev]).target_config)
  except Exception as e:  # noqa: BLE001 - a finding to record, not a reason to stop
    return f"(unavailable: {type(e).__name__}: {e})"[:500]


def target_compiler_peak(device_kind: str | None, r: dict[str, Any]) -> int | None:
  """The deviceless GPU compiler's peak for the same one-GPU step, if it was compiled
  (``python -m bench.frontier --point h200-1,STAGE,B,N_H``; bench/frontier_compiles/)."""
  kind = (device_kind or "").lower()
  chip = "h200" if "h200" in kind else ("h100" if "h100" in kind else None)
  if chip is None or r.get("B") is None:
    return None
  path = (pathlib.Path(__file__).resolve().parent / "frontier_compiles" /
          f"{chip}-1_s{r.get('stage')}_v{r['B']}_h{r.get('N_H')}_r{int(bool(r.get('remat')))}"
          "_n1.json")
  if not path.exists():
    return None
  row = json.loads(path.read_text())
  return None if "error" in row or row.get("over_compiler") else row.get("peak")


def run_step(spec: dict[str, Any]) -> dict[str, Any]:
  """Compiles the train step for ``spec`` (re-aiming B at a memory limit when one is given),
  runs warm-up steps (the real fit check) and times ``spec['steps']`` more."""
  mesh = _mesh()
  planner = _planner(spec, mesh, spec["easy_negatives"])
  batch, num_hard, remat = spec["B"], spec["N_H"], spec["remat"]
  limit = spec.get("limit")
  out: dict[str, Any] = {"N_H": num_hard, "remat": remat}
  best, out["compiles"] = choose_batch(
      lambda b: planner.compile(b, num_hard, remat), batch, limit,
      fill=spec.get("fill", 1.0), low_water=spec.get("low_water", 0.0),
      max_compiles=spec.get("max_compiles", 1), fixed=spec.get("fixed", 0),
      multiple=spec.get("multiple", 1))
  if best is None:
    last = out["compiles"][-1]
    out.update(B=last["B"], status="over", error=f"the device's memory_analysis gives "
               f"{last['analysis_peak']} bytes > {spec['fill']} x the limit {limit}; not run")
    return out
  batch, compiled, row = best
  flops = compiled_flops(compiled)
  out.update(B=batch, analysis_peak=row["peak"], analysis_temp=row["temp"],
             analysis_argument=row["argument"], compile_s=row["compile_s"],
             xla_flops=flops if math.isfinite(flops) else None)
  try:
    state = _init_state(planner, spec, mesh)
    data = jax.device_put(ts.random_batch(batch, num_hard, seed=1),
                          mesh_lib.batch_sharding(mesh))
    rng = jax.random.key(1)
    for _ in range(spec["warmup"]):
      state, metrics = compiled(state, data, rng)
      jax.block_until_ready((state, metrics))
    times = []
    for _ in range(spec["steps"]):
      t0 = time.perf_counter()
      state, metrics = compiled(state, data, rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  except Exception as e:  # noqa: BLE001 -- an OOM is a result here, not a crash
    out.update(status="oom" if _is_oom(e) else "error", error=str(e)[:1500])
    return out
  stats = memory_stats()
  out.update(status="ok", step_times=times, step_s=statistics.median(times),
             loss=float(metrics["loss"]), accuracy=float(metrics["accuracy"]),
             negatives_per_video=float(metrics["negatives_per_video"]),
             peak_bytes=stats.get("peak_bytes_in_use") if stats else None,
             bytes_limit=stats.get("bytes_limit") if stats else None)
  return out


def run_eval(spec: dict[str, Any]) -> dict[str, Any]:
  """Embed-once scoring (``embedding.score_clips``) of synthetic clips of ``frames`` frames."""
  mesh = _mesh()
  planner = _planner(spec, mesh, True)
  model = planner.model(False)
  # The step children's init program (a persistent-cache hit), not a second one.
  params = _init_state(planner, spec, mesh)["params"]
  frames, group = spec["frames"], spec["group"]
  positions = windows.num_positions(frames)
  emb = embedding.Embedder(model, params, chunk=group * positions, mesh=mesh)
  r = np.random.default_rng(0)
  clips = [(f"c{i}", r.integers(0, 256, (frames, *model.video_shape[1:]), dtype=np.uint8),
            r.standard_normal((80, windows.num_mel_frames(frames))).astype(np.float32))
           for i in range(group)]
  t0 = time.perf_counter()
  list(embedding.score_clips(emb, clips, group=group))   # compiles both towers
  compile_s = time.perf_counter() - t0
  n = max(group, spec["clips"] // group * group)
  t0 = time.perf_counter()
  for i in range(0, n, group):
    list(embedding.score_clips(emb, clips, group=group))
  sec = time.perf_counter() - t0
  return {"status": "ok", "clips": n, "frames": frames, "windows_per_clip": positions,
          "seconds": sec, "clips_per_s": n / sec, "first_pass_s": compile_s}


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "peak": run_peak, "step": run_step, "eval": run_eval}


def run_task(spec: dict[str, Any]) -> dict[str, Any]:
  """One child's work; never raises (an error becomes the result)."""
  t0 = time.perf_counter()
  try:
    out = TASKS[spec["kind"]](spec)
  except Exception as e:  # noqa: BLE001
    out = {"status": "oom" if _is_oom(e) else "error", "error": str(e)[:1500],
           "traceback": traceback.format_exc()[-3000:]}
  out["wall_s"] = time.perf_counter() - t0
  return out


def _child_main(spec_json: str, result_path: str) -> int:
  spec = json.loads(spec_json)
  if spec.get("cache_dir"):
    jax.config.update("jax_compilation_cache_dir", spec["cache_dir"])
  out = run_task(spec)
  pathlib.Path(result_path).write_text(json.dumps(out))
  return 0


# ====================================================================== the parent's side
class Budget:
  """Wall-clock budget of the whole run, checked before each item."""

  def __init__(self, seconds: float):
    self.seconds, self.t0 = seconds, time.monotonic()

  def elapsed(self) -> float:
    return time.monotonic() - self.t0

  def left(self) -> float:
    return self.seconds - self.elapsed()


class Worker:
  """One daemon thread for the parent's CPU compiles, in submission order, so they overlap
  the children's accelerator work. Daemon: the run ends at its budget even mid-compile."""

  def __init__(self):
    self.q: queue.Queue = queue.Queue()
    threading.Thread(target=self._loop, daemon=True).start()

  def _loop(self) -> None:
    while True:
      fn, fut = self.q.get()
      try:
        fut.set_result(fn())
      except BaseException as e:  # noqa: BLE001
        fut.set_exception(e)

  def submit(self, fn: Callable[[], Any]) -> Future:
    fut: Future = Future()
    self.q.put((fn, fut))
    return fut


def _result(fut: Future | None, timeout: float) -> Any:
  """A future's value, or a dict saying why there is none (not done in time, failed)."""
  if fut is None:
    return {"status": "skipped", "reason": "not computed"}
  try:
    return fut.result(timeout=max(timeout, 0.0))
  except FutureTimeout:
    return {"status": "skipped", "reason": "budget: the CPU compile had not finished"}
  except Exception as e:  # noqa: BLE001
    return {"status": "error", "error": str(e)[:500]}


class CpuSide:
  """What the parent computes on its CPU: the planner's estimates (``plan.Planner`` on a CPU
  mesh: exactly ``python -m modeformer_jax.plan --target cpu``'s numbers), the towers'
  forward FLOPs, and JAX's residual bytes per batch entry (the frontier's first aim)."""

  def __init__(self, s: Settings):
    self.s = s
    spec = {"variant": s.variant, "dtype": s.dtype, "fast_compile": s.fast_compile}
    mesh = _mesh()
    # conv3d native: what `python -m modeformer_jax.plan` estimates (its default).
    self.planners = {easy: _planner(spec, mesh, easy, "native") for easy in (False, True)}

  def estimate(self, easy: bool, batch: int, num_hard: int, remat: bool) -> dict[str, Any]:
    row = dict(self.planners[easy].measure(batch, num_hard, remat))
    return {"status": "ok", "peak": row["peak"], "compile_s": row["compile_s"],
            "residuals": row["residuals"]}

  def tower_flops(self) -> dict[str, Any]:
    """Forward FLOPs of one window per tower: XLA's cost analysis of the compiled tower,
    traced with the native 3D convolution. Accelerators always run that form, and its count
    (valid taps only) is the model's; XLA:CPU's other forms also count the zero-padded time
    taps (paper video tower: 3.68 native against 4.12 GFLOP in the CPU's default forms)."""
    model = self.planners[True].model(False)
    params = jax.eval_shape(model.init, jax.random.key(0))
    out = {}
    for name, fn, shape, dtype in (("video", model.embed_video, model.video_shape, jnp.uint8),
                                   ("audio", model.embed_audio, model.audio_shape[:2],
                                    jnp.float32)):
      with plan.conv3d_form("native"):
        lowered = jax.jit(fn).lower(params, jax.ShapeDtypeStruct((1, *shape), dtype))
      out[name] = compiled_flops(lowered.compile(
          FAST_COMPILE if self.s.fast_compile else None))
    return {"status": "ok", "video": out["video"], "audio": out["audio"],
            "source": "XLA cost analysis of each tower compiled on the CPU, batch 1, with "
                      "the native 3D convolution (the form accelerators run)"}

  def entry_residuals(self, num_hard: int, remat: bool) -> float:
    """Bytes JAX keeps for the backward pass per batch entry (backend-independent)."""
    model = self.planners[True].model(remat)
    a = 1 + num_hard
    with plan.conv3d_form("native"):
      return float(plan.residual_bytes(model, 2, a) - plan.residual_bytes(model, 1, a))

  def state_bytes(self) -> int:
    p = self.planners[True]
    model = p.model(False)
    state = jax.eval_shape(lambda r: ts.create_train_state(model, p.tx, r, p.loss_cfg),
                           jax.random.key(0))
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)))


class Runner:
  """Runs child tasks in order, in their own processes (``isolate``) or in-process, and
  skips one whose expected time exceeds what is left of the budget."""

  def __init__(self, s: Settings, budget: Budget, cache_dir: str):
    self.s, self.budget, self.cache_dir = s, budget, cache_dir
    self.walls: dict[str, float] = {}

  def expected(self, group: str) -> float:
    """The longest wall time seen for this group of tasks, else for any step task."""
    if group in self.walls:
      return self.walls[group]
    steps = [v for k, v in self.walls.items() if k != "peak"]
    return max(steps) if steps else 0.0

  def run(self, spec: dict[str, Any], group: str) -> dict[str, Any]:
    need, left = self.expected(group), self.budget.left()
    if need > left or left <= 0:
      return {"status": "skipped", "reason": f"budget: {max(left, 0):.0f} s left, {group} "
              f"expected to take {need:.0f} s (the longest comparable run so far)"}
    spec = dict(spec, cache_dir=self.cache_dir, fast_compile=self.s.fast_compile)
    t0 = time.monotonic()
    out = self._isolated(spec, left) if self.s.isolate else run_task(spec)
    wall = time.monotonic() - t0
    out["child_wall_s"] = wall
    self.walls[group] = max(self.walls.get(group, 0.0), wall)
    return out

  def _isolated(self, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    fd, path = tempfile.mkstemp(suffix=".json", prefix="accelerator_task_")
    os.close(fd)
    env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=str(self.s.mem_fraction))
    cmd = [sys.executable, "-m", "bench.accelerator", "--task", json.dumps(spec),
           "--result", path]
    try:
      proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout)
      text = pathlib.Path(path).read_text()
      if proc.returncode or not text:
        return {"status": "crashed", "error": f"child exited with {proc.returncode} and "
                f"{'a' if text else 'no'} result (its output is in the log)"}
      return json.loads(text)
    except subprocess.TimeoutExpired:
      return {"status": "skipped", "reason": f"budget: killed after {timeout:.0f} s"}
    finally:
      pathlib.Path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------------- figures
def step_figures(r: dict[str, Any], flops: dict[str, Any], peak_tflops: float | None) -> None:
  """Adds pairs/s, model FLOPs, MFU to a step result (in place)."""
  if r.get("status") != "ok":
    return
  b, a, sec = r["B"], 1 + r["N_H"], r["step_s"]
  r["pairs_per_s"] = b / sec            # positive (video, audio) pairs, i.e. entries
  r["windows_per_s"] = b * a / sec      # audio windows embedded per second
  if flops.get("status") == "ok":
    model = 3 * (b * flops["video"] + b * a * flops["audio"])
    r["model_flops"] = model
    r["model_tflops_per_s"] = model / sec / 1e12
    r["xla_over_model"] = r["xla_flops"] / model if r.get("xla_flops") else None
    if peak_tflops:
      r["mfu"] = model / sec / 1e12 / peak_tflops


def plan_error(r: dict[str, Any], est: dict[str, Any], on_device: bool) -> dict[str, Any]:
  """The planner's CPU estimate against the measured peak (device) or, in a CPU run, the
  child's own CPU memory_analysis; percent error = (estimate - measured) / measured."""
  row = {"item": label(r), "B": r.get("B"), "N_H": r.get("N_H"), "remat": r.get("remat"),
         "stage": r.get("stage"), "plan_cpu_bytes": est.get("peak"),
         "device_analysis_bytes": r.get("analysis_peak")}
  if on_device and r.get("peak_bytes"):
    row.update(measured_bytes=r["peak_bytes"],
               measured_source="memory_stats peak_bytes_in_use of the child process")
  elif not on_device and r.get("analysis_peak"):
    row.update(measured_bytes=r["analysis_peak"],
               measured_source="CPU smoke: the child's own XLA:CPU memory_analysis (no "
                               "device; not a measurement)")
  m = row.get("measured_bytes")
  if m and est.get("peak"):
    row["plan_error_pct"] = 100.0 * (est["peak"] - m) / m
  if r.get("target_compiler_bytes"):
    row["target_compiler_bytes"] = r["target_compiler_bytes"]
    if m:
      row["target_compiler_error_pct"] = 100.0 * (r["target_compiler_bytes"] - m) / m
  if m and r.get("analysis_peak") and on_device:
    row["device_analysis_error_pct"] = 100.0 * (r["analysis_peak"] - m) / m
  if est.get("status") != "ok":
    row["plan_status"] = est
  return row


def frontier_aim(s: Settings, limit: int, k: float, fixed: int, residuals: float) -> int:
  """First B to compile for a frontier point: per-entry bytes = ``k`` x JAX's residual
  bytes per entry, ``k`` calibrated on the stage-2 paper point."""
  return _floor((s.fill * limit - fixed) / max(k * residuals, 1.0), s.multiple)


# ---------------------------------------------------------------------- report
def _gib(x: Any) -> str:
  return f"{x / 2**30:.2f}" if isinstance(x, (int, float)) and x else "-"


def _pct(x: Any) -> str:
  return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def table(report: dict[str, Any]) -> str:
  """The readable summary printed at the end (and rebuilt from the JSON by ``--table``)."""
  lines = [f"machine (parent): {report.get('machine')}"]
  pk = report.get("peak", {})
  dev = "measured on the device" if report.get("on_device") else (
      "CPU SMOKE: no figure below is an accelerator measurement")
  lines.append(f"device: {pk.get('device_kind')} ({pk.get('platform')}), jax "
               f"{pk.get('jax')}; {dev}")
  if pk.get("status") == "ok":
    lines.append(f"peak: {pk['n']}^2 {pk['dtype']} matmul {pk['tflops']:.1f} TFLOP/s; "
                 f"bytes_limit {_gib(report.get('memory_limit'))} GiB "
                 f"({report.get('memory_limit_source')})")
  fl = report.get("tower_flops", {})
  if fl.get("status") == "ok":
    lines.append(f"forward GFLOP per window: video {fl['video'] / 1e9:.3f}, audio "
                 f"{fl['audio'] / 1e9:.3f} (sum {(fl['video'] + fl['audio']) / 1e9:.2f}; "
                 f"docs/model.md: {PAPER_GFLOP_PER_PAIR} for the paper model)")
  key = lambda r: (r.get("stage"), r.get("B"), r.get("N_H"), r.get("remat"))  # noqa: E731
  errs = {key(e): e for e in report.get("plan_accuracy", [])}
  rows = [[fn(r, errs.get(key(r), {})) for _, _, fn in _COLUMNS] for r in _rows(report)]
  lines.append("")
  for cells in [[t for t, _, _ in _COLUMNS]] + rows:
    lines.append("".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}"
                         for c, (_, w, _) in zip(cells, _COLUMNS)))
  ev = report.get("eval", {})
  if ev.get("status") == "ok":
    lines.append(f"\neval: {ev['clips']} clips of {ev['frames']} frames, "
                 f"{ev['clips_per_s']:.1f} clips/s, model {_num(ev.get('model_tflops_per_s'), 1)} "
                 f"TFLOP/s, MFU {_pct(ev.get('mfu'))}")
  elif ev:
    lines.append(f"\neval: {ev.get('status')} {ev.get('reason', ev.get('error', ''))[:200]}")
  for sk in report.get("skipped", []):
    lines.append(f"skipped: {sk['item']}: {sk['reason']}")
  for n in report.get("notes", []):
    lines.append(f"note: {n}")
  return "\n".join(lines)


def _num(x: Any, digits: int) -> str:
  return f"{x:.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _err(e: dict[str, Any], key: str = "plan_error_pct") -> str:
  return _num(e.get(key), 1) + "%" if key in e else "-"


# The table's columns: (title, width; negative = left-aligned, cell of (result, plan row)).
_COLUMNS: tuple[tuple[str, int, Callable[[dict, dict], str]], ...] = (
    ("item", -22, lambda r, e: label(r)),
    ("B", 7, lambda r, e: str(r.get("B", "-"))),
    ("N_H", 5, lambda r, e: str(r.get("N_H", "-"))),
    ("remat", 6, lambda r, e: "on" if r.get("remat") else "off"),
    ("status", 8, lambda r, e: r.get("status", "-")),
    ("compile s", 10, lambda r, e: _num(r.get("compile_s"), 1)),
    ("step s", 9, lambda r, e: _num(r.get("step_s"), 3)),
    ("pairs/s", 9, lambda r, e: _num(r.get("pairs_per_s"), 0)),
    ("TFLOP/s", 9, lambda r, e: _num(r.get("model_tflops_per_s"), 1)),
    ("MFU", 7, lambda r, e: _pct(r.get("mfu"))),
    ("xla/model", 10, lambda r, e: _num(r.get("xla_over_model"), 2)),
    ("peak GiB", 9, lambda r, e: _gib(r.get("peak_bytes"))),
    ("dev.an.", 8, lambda r, e: _gib(r.get("analysis_peak"))),
    ("plan cpu", 9, lambda r, e: _gib(e.get("plan_cpu_bytes"))),
    ("plan err", 9, lambda r, e: _err(e)),
    ("aot GiB", 8, lambda r, e: _gib(e.get("target_compiler_bytes"))),
    ("aot err", 8, lambda r, e: _err(e, "target_compiler_error_pct")),
)


def label(r: dict[str, Any]) -> str:
  """A step result's name in the table and the JSON's plan_accuracy rows."""
  extra = (" remat" if r.get("remat") else "") + (" retry" if r.get("retry") else "")
  if r.get("frontier"):
    return f"frontier N_H={r.get('N_H')}{extra}"
  return f"stage {r.get('stage')}{extra}"


def _rows(report: dict[str, Any]):
  yield from report.get("paper", [])
  for f in report.get("frontier", []):
    yield from f.get("attempts", [])


class Report:
  """The JSON file, rewritten whole after every item (an interrupted run keeps its items)."""

  def __init__(self, path: pathlib.Path, data: dict[str, Any]):
    self.path, self.data = path, data
    self.lock = threading.Lock()

  def skip(self, item: str, reason: str) -> None:
    self.data.setdefault("skipped", []).append({"item": item, "reason": reason})

  def write(self) -> None:
    with self.lock:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      tmp = self.path.with_suffix(".tmp")
      tmp.write_text(json.dumps(self.data, indent=1, default=str))
      tmp.replace(self.path)


# ---------------------------------------------------------------------- the run
class Bench:
  """One run: the items in order, each written to the report as soon as it is done."""

  def __init__(self, s: Settings, out: pathlib.Path, command: str):
    self.s = s
    self.budget = Budget(s.budget_s)
    cache_dir = tempfile.mkdtemp(prefix="accelerator_xla_cache_")
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    self.rep = Report(out, {"schema": 1, "command": command,
                            "settings": dataclasses.asdict(s), "machine": machine(),
                            "on_device": False, "paper": [], "frontier": [],
                            "plan_accuracy": [], "skipped": [], "notes": [STAGES_NOTE]})
    self.data = self.rep.data
    self.runner = Runner(s, self.budget, cache_dir)
    # The CPU side starts at once, in the background: the towers' FLOPs, the state's
    # bytes and the residual bytes the frontier aims with.
    self.cpu = CpuSide(s)
    self.worker = Worker()
    self.flops_f = self.worker.submit(self.cpu.tower_flops)
    self.fixed_f = self.worker.submit(self.cpu.state_bytes)
    wanted = ([(s.num_hard, False)] + [(h, False) for h in s.frontier_num_hard]
              + [(h, True) for h in s.remat_num_hard])
    self.resid_f = {key: self.worker.submit(lambda key=key: self.cpu.entry_residuals(*key))
                    for key in dict.fromkeys(wanted)}
    self.estimates: list[tuple[dict, Future]] = []
    self.limit: int | None = None
    self.peak_tflops: float | None = None

  def _estimate(self, r: dict[str, Any], easy: bool) -> None:
    """Queues the CPU planner's estimate for a compiled step result."""
    if r.get("analysis_peak") is not None:
      self.estimates.append((r, self.worker.submit(
          lambda: self.cpu.estimate(easy, r["B"], r["N_H"], r["remat"]))))

  def _step(self, spec: dict[str, Any], group: str, **tags: Any) -> dict[str, Any]:
    r = self.runner.run(dict(spec, kind="step", variant=self.s.variant, dtype=self.s.dtype),
                        group)
    r.update(tags, N_H=spec["N_H"], remat=spec["remat"], B=r.get("B", spec["B"]))
    self._estimate(r, spec["easy_negatives"])
    if r.get("status") == "skipped":
      self.rep.skip(label(r), r["reason"])
    _say(f"{label(r)}: {_brief(r)}")
    return r

  def peak(self) -> None:
    s = self.s
    pk = self.runner.run({"kind": "peak", "peak_n": s.peak_n, "peak_dtype": "bfloat16",
                          "peak_seconds": s.peak_seconds}, "peak")
    self.data["peak"] = pk
    self.data["on_device"] = pk.get("status") == "ok" and pk.get("platform") != "cpu"
    self.limit = s.memory_limit or pk.get("bytes_limit")
    self.data["memory_limit"] = self.limit
    self.data["memory_limit_source"] = (
        "--memory_limit" if s.memory_limit else
        f"the device's bytes_limit at XLA_PYTHON_CLIENT_MEM_FRACTION={s.mem_fraction}")
    self.peak_tflops = pk.get("tflops") if pk.get("status") == "ok" else None
    _say(f"peak: {_brief(pk)}")

  def paper(self) -> None:
    """B = 2000, N_H = 2 in both loss forms; stage 2 first, as it calibrates the frontier's
    aim. Remat only where remat off runs out of memory."""
    s = self.s
    for stage in (2, 1):
      spec = {"B": s.batch, "N_H": s.num_hard, "easy_negatives": STAGE_EASY[stage],
              "steps": s.steps, "warmup": s.warmup}
      for remat in (False, True):
        r = self._step(dict(spec, remat=remat), "paper", stage=stage,
                       easy_negatives=STAGE_EASY[stage])
        self.data["paper"].append(r)
        self.rep.write()
        if r.get("status") != "oom":
          break

  def eval(self) -> None:
    s = self.s
    ev = self.runner.run({"kind": "eval", "variant": s.variant, "dtype": s.dtype,
                          "clips": s.eval_clips, "frames": s.eval_frames,
                          "group": s.eval_group}, "eval")
    if ev.get("status") == "skipped":
      self.rep.skip("eval", ev["reason"])
    self.data["eval"] = ev
    _say(f"eval: {_brief(ev)}")

  def _calibration(self) -> tuple[float, int]:
    """(bytes per residual byte, fixed bytes) for the frontier's first aim."""
    left = self.budget.left()
    fixed = _result(self.fixed_f, left)
    fixed = fixed if isinstance(fixed, int) else 0
    cal = next((r for r in self.data["paper"] if r["stage"] == 2 and not r["remat"]
                and r.get("status") == "ok"), None)
    res = _result(self.resid_f[(self.s.num_hard, False)], left)
    k, how = 2.0, "no stage-2 paper point to calibrate on: 2 x JAX's residual bytes"
    if cal and isinstance(res, float):
      used = cal.get("peak_bytes") or cal["analysis_peak"]
      k = max(used - fixed, 1) / (cal["B"] * res)
      how = (f"{k:.2f} x JAX's residual bytes per entry, calibrated on the stage-2 paper "
             f"point's {'measured peak' if cal.get('peak_bytes') else 'memory_analysis'}")
    self.data["frontier_aim"] = {"bytes_per_residual_byte": k, "how": how, "fixed": fixed}
    return k, fixed

  def frontier(self, remat: bool, num_hard: Sequence[int]) -> None:
    """Per N_H: the largest B the device's compiler says fits, run to confirm it; one retry
    10% smaller (fresh process) after an out-of-memory error."""
    s = self.s
    k, fixed = self._calibration()
    for h in num_hard:
      point: dict[str, Any] = {"N_H": h, "remat": remat, "attempts": []}
      self.data["frontier"].append(point)
      res = _result(self.resid_f[(h, remat)], self.budget.left())
      if not self.limit or not isinstance(res, float):
        self.rep.skip(f"frontier N_H={h}{' remat' if remat else ''}",
                      "no memory limit known" if not self.limit else f"no residuals: {res}")
        continue
      point["first_aim"] = frontier_aim(s, self.limit, k, fixed, res)
      spec = {"B": point["first_aim"], "N_H": h, "remat": remat, "easy_negatives": True,
              "steps": s.frontier_steps, "warmup": 1, "limit": self.limit, "fill": s.fill,
              "low_water": s.low_water, "max_compiles": s.max_compiles,
              "multiple": s.multiple, "fixed": fixed}
      tags = {"stage": 2, "frontier": True}
      r = self._step(spec, "frontier", **tags)
      point["attempts"].append(r)
      if r.get("status") == "oom":
        retry = dict(spec, B=_floor(0.9 * r["B"], s.multiple), max_compiles=1)
        point["attempts"].append(self._step(retry, "frontier", retry=True, **tags))
      point["largest_fit_B"] = max((a["B"] for a in point["attempts"]
                                    if a.get("status") == "ok"), default=None)
      point["failed_B"] = [a["B"] for a in point["attempts"]
                           if a.get("status") in ("oom", "over")]
      self.rep.write()

  def finish(self) -> dict[str, Any]:
    """Waits (within the budget) for the CPU side, then adds FLOPs, MFU, planner errors."""
    data, left = self.data, self.budget.left
    flops = _result(self.flops_f, left())
    flops = flops if isinstance(flops, dict) else {}
    data["tower_flops"] = flops
    for r in _rows(data):
      step_figures(r, flops, self.peak_tflops)
    ev = data.get("eval", {})
    if ev.get("status") == "ok" and flops.get("status") == "ok":
      model = ev["clips"] * ev["windows_per_clip"] * (flops["video"] + flops["audio"])
      ev["model_tflops_per_s"] = model / ev["seconds"] / 1e12
      if self.peak_tflops:
        ev["mfu"] = ev["model_tflops_per_s"] / self.peak_tflops
    kind = data.get("peak", {}).get("device_kind")
    for r, fut in self.estimates:
      r["target_compiler_bytes"] = target_compiler_peak(kind, r)
      est = _result(fut, left())
      data["plan_accuracy"].append(plan_error(r, est if isinstance(est, dict) else {},
                                              data["on_device"]))
    if not data["on_device"]:
      data["notes"].append("no accelerator: every figure is a CPU smoke figure, not a "
                           "device measurement")
    data["elapsed_s"] = self.budget.elapsed()
    self.rep.write()
    return data


def run(s: Settings, out: pathlib.Path, command: str) -> dict[str, Any]:
  """Measures everything ``s`` asks for, writing ``out`` as it goes; returns the report."""
  b = Bench(s, out, command)
  b.peak()
  b.rep.write()
  if "paper" in s.items:
    b.paper()
  if "eval" in s.items:
    b.eval()
    b.rep.write()
  if "frontier" in s.items:
    b.frontier(False, s.frontier_num_hard)
  if "remat" in s.items:
    b.frontier(True, s.remat_num_hard)
  return b.finish()


def _brief(r: dict[str, Any]) -> str:
  keys = ("status", "B", "compile_s", "step_s", "peak_bytes", "analysis_peak", "clips_per_s",
          "reason", "error")
  return ", ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={str(r[k])[:300]}"
                   for k in keys if r.get(k) is not None)


def _say(text: str) -> None:
  print(text, flush=True)


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(",") if x.strip())


def settings(args: argparse.Namespace) -> Settings:
  """The device defaults, or the smoke's, with the flags given on top."""
  s = dataclasses.replace(SMOKE if args.smoke else DEVICE)
  for f in dataclasses.fields(Settings):
    v = getattr(args, f.name, None)
    if v is not None:
      if f.name == "items":
        v = tuple(x.strip() for x in v.split(",") if x.strip())
        unknown = set(v) - set(DEVICE.items)
        if unknown:
          raise SystemExit(f"--items: unknown {sorted(unknown)}; known {list(DEVICE.items)}")
      elif f.name.endswith("num_hard") and isinstance(v, str):
        v = _ints(v)
      setattr(s, f.name, v)
  return s


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--smoke", action="store_true", help="micro model on the CPU, < 1 minute")
  p.add_argument("--out", default="accelerator.json", help="the JSON results file")
  p.add_argument("--budget_s", type=float, help="wall-clock budget (device default 420)")
  p.add_argument("--variant", help="model variant (default paper; smoke micro)")
  p.add_argument("--dtype", help="compute dtype (default bfloat16)")
  p.add_argument("--batch", type=int, help="the paper point's global batch (default 2000)")
  p.add_argument("--num_hard", type=int, help="the paper point's N_H (default 2)")
  p.add_argument("--steps", type=int, help="timed steps per paper-point run (default 20)")
  p.add_argument("--frontier_num_hard", help="N_H values of the frontier (default 2,11,25,5)")
  p.add_argument("--remat_num_hard", help="N_H values with remat on (default 11; '' = none)")
  p.add_argument("--eval_clips", type=int, help="clips scored (default 512)")
  p.add_argument("--items", help="what to run besides the peak: paper,eval,frontier,remat "
                 "(default all)")
  p.add_argument("--memory_limit", type=int, help="bytes; default the device's bytes_limit")
  p.add_argument("--mem_fraction", type=float, help="children's XLA_PYTHON_CLIENT_MEM_FRACTION")
  p.add_argument("--isolate", action=argparse.BooleanOptionalAction,
                 help="children in their own processes (default on; smoke off)")
  p.add_argument("--table", help="print the table of an existing JSON file and exit")
  p.add_argument("--task", help=argparse.SUPPRESS)
  p.add_argument("--result", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns a process exit code."""
  args = parse(argv)
  if args.task:
    return _child_main(args.task, args.result)
  if args.table:
    print(table(json.loads(pathlib.Path(args.table).read_text())))
    return 0
  # The parent compiles only for the CPU; the accelerator is left whole to the children
  # (a parent on the GPU would preallocate most of its memory).
  jax.config.update("jax_platforms", "cpu")
  if jax.local_devices()[0].platform != "cpu":
    raise SystemExit("bench.accelerator: a JAX backend started before the parent could keep "
                     "to the CPU")
  s = settings(args)
  command = "python -m bench.accelerator " + " ".join(sys.argv[1:] if argv is None else argv)
  report = run(s, pathlib.Path(args.out), command.strip())
  print("\n" + table(report), flush=True)
  print(f"\nwrote {args.out} ({report['elapsed_s']:.0f} s)", flush=True)
  return 0 if report["peak"].get("status") == "ok" else 1


if __name__ == "__main__":
  code = main()
  # The parent's worker thread may still be compiling a CPU estimate that nobody waits
  # for: end now rather than when it finishes (the report is written).
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
