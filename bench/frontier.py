"""The paper's B x N_H trade-off as the target compilers see it (deviceless, nothing runs).

  python -m bench.frontier                 # sweep (resumes), then the report
  python -m bench.frontier --report        # table, plot and bench/frontier.json from the cache

For each chip kind (one small slice per kind: v5e-4, v5p-8, v6e-4, h100-8, h200-8), the paper
model's stage-2 step (bf16; gathered easy negatives) is compiled by the target's own compiler
through ``python -m modeformer_jax.plan`` (one process per compile, so a crash or a stop
loses only that compile). Each result is cached in ``bench/frontier_compiles/`` and a rerun
skips what is there: a sweep stopped anywhere resumes where it stopped.

Few compiles, because a paper-model compile is slow on 2 cores. Per-chip peak is close to
affine in the chip's videos v and audio windows v*(1+N_H) far from the limit, so compiles at
small batches fit ``peak = c0 + c1*v + c2*v*(1+N_H)`` (least squares over every compile of
that kind) and predict a starting point; near the limit both compilers rematerialise, so
the limit itself is searched:

- GPUs (XLA:GPU, 1-4 min a compile): the planner's bracket search over full compiles,
  started at the prediction or the largest compile that already fitted; confirmed = one
  compile that fits and one 8 videos per chip more that does not.
- TPUs (libtpu): a full compile near a v5e's limit spends 20-60 minutes of these cores in
  code generation, after libtpu has already accepted or refused the program. So a TPU
  limit is bracketed by memory checks (:func:`_memory_check`): each compile is stopped as
  soon as libtpu's log shows code generation under way, its out-of-memory refusal having
  come before that. Full compiles at 32 per chip give each kind's breakdown (arguments,
  code) and the fit's intercept; v5e-4's compiles at 32 and 128 per chip, N_H = 2 and 11,
  give the starting slopes of the others.

The XLA:CPU estimate (the planner's ``--target cpu``, same devices simulated) is compiled
at confirmed points with ``--cpu_errors``, for its error against each target compiler.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from modeformer_jax import plan

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / "frontier_compiles"
OUT = REPO / "bench" / "frontier.json"
PLOT = REPO / "docs" / "frontier.png"
CONFIG = "configs/modeformer.py:paper"
KINDS = ("v5e-4", "v5p-8", "v6e-4", "h100-8", "h200-8")
NUM_HARD = (2, 5, 11, 25)
GRAIN = 8            # per-chip videos are searched in multiples of this
FIT_POINTS = ((32, 2), (128, 2), (32, 11))   # (videos per chip, N_H) compiled to fit
# TPU kinds: full compiles only at 32 per chip (a full TPU compile at 128 per chip takes
# 20-35 min here); the limit itself is found by libtpu's memory checks (minutes each).
TPU_FIT_POINTS = ((32, 2),)
FIT_DONOR = "v5e-4"   # the TPU kind whose per-video slopes start the others' searches
PAPER_B = 2000
# The slices chips are booked in, per kind, for "how many chips does B need".
SLICES = {"v5e": (1, 4, 8, 16, 32, 64, 128, 256), "v5p": (4, 8, 16, 32, 64, 128, 256, 512),
          "v6e": (1, 4, 8, 16, 32, 64, 128, 256), "h100": (1, 2, 4, 8, 16, 32, 64),
          "h200": (1, 2, 4, 8, 16, 32, 64)}


def _key(target: str, stage: int, per_chip: int, num_hard: int, remat: bool,
         chips: int, microbatch: int = 0, host_inputs: bool = False) -> str:
  # '_m40': the cached step with the batch on the chip; '_m40h': lips and mel in host memory.
  return (f"{target}_s{stage}_v{per_chip}_h{num_hard}_r{int(remat)}_n{chips}"
          + (f"_m{microbatch}{'h' if host_inputs else ''}" if microbatch else ""))


def _chips(target: str) -> int:
  from modeformer_jax.training import aot
  return 1 if target == "cpu" else aot.target(target).chips


def compile_point(target: str, stage: int, per_chip: int, num_hard: int, remat: bool = False,
                  chips: int | None = None, log=print, microbatch: int = 0,
                  check_only: bool = False, host_inputs: bool = False) -> dict[str, Any]:
  """One compile through the planner CLI (cached): its row, or {'error': ...}.
  ``microbatch`` > 0 compiles the cached two-pass step (its batch in host memory with
  ``host_inputs``). ``check_only`` (TPU targets): stop
  once libtpu's buffer assignment has accepted or refused the program (see
  :func:`_memory_check`); a full compile of the same point, cached, is used instead."""
  chips = chips or _chips(target)
  # The GPU compiler's deviceless devices describe no host memory (plan falls back to the
  # batch on the chip), so a GPU point is the on-chip form whatever was asked.
  host_inputs = bool(microbatch) and host_inputs and (target == "cpu" or _is_tpu(target))
  key = _key(target, stage, per_chip, num_hard, remat, chips, microbatch, host_inputs)
  full = CACHE / f"{key}.json"
  if check_only:
    if full.exists():
      return json.loads(full.read_text())
    key += "_check"
  path = CACHE / f"{key}.json"
  if path.exists():
    return json.loads(path.read_text())
  CACHE.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "rows.json"
    cmd = [sys.executable, "-m", "modeformer_jax.plan", "--target", target,
           "--config", CONFIG, "--dtype", "bfloat16", "--batch_sizes", str(per_chip * chips),
           "--num_hard", str(num_hard), "--stages", str(stage),
           "--remat", "on" if remat else "off", "--nosearch", "--noeval", "--json", str(out)]
    if target == "cpu":
      cmd += ["--devices", str(chips)]
    if microbatch:
      cmd += [f"--config.microbatch={microbatch}", f"--config.host_inputs={host_inputs}"]
    t0 = time.time()
    log(f"  compiling {key}{' (memory check only)' if check_only else ''} ...")
    if check_only:
      row = _memory_check(cmd, pathlib.Path(tmp), out)
    else:
      res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
      row = _read_row(res.returncode, res.stderr or res.stdout, out)
  row.setdefault("per_device", per_chip)
  row.setdefault("N_H", num_hard)
  row.setdefault("stage", stage)
  row.setdefault("remat", remat)
  row.update(target=target, chips=chips, wall_s=round(time.time() - t0, 1),
             command=" ".join(cmd[1:]).replace(" --json " + str(out), ""))
  path.write_text(json.dumps(row, indent=1, default=str))
  log(f"    -> {_brief(row)}")
  return row


def _read_row(returncode: int, text: str, out: pathlib.Path) -> dict[str, Any]:
  if returncode != 0 or not out.exists():
    return {"error": " | ".join(text.strip().splitlines()[-3:])[-600:]}
  data = json.loads(out.read_text())
  return dict(data["rows"][0], device_kind=data["device_kind"], budget=data["budget"])


# libtpu's own log lines (libtpu 0.0.42.1) that say its buffer assignment is done: the
# heap simulation's size, and the first lines of code generation. Its out-of-memory refusal
# comes between the two (seen here: within a second of the heap simulation), so a program
# that reaches code generation has passed the check. Near the limit libtpu rematerialises
# first, and says by how much ("rematerialization hbm reduction: 16.01G => 14.30G").
_HEAP = re.compile(r"(?:Primary|Fallback) algorithm finished with size: (\d+)")
_CODEGEN = re.compile(r"LloModule|llo_loop|lowering_emitter")
_REMAT = re.compile(r"rematerialization hbm reduction:\s*(\S+) => (\S+)")


def _die_with_parent() -> None:
  """Linux: the compile is killed with the sweep (else a stopped sweep leaves an hour of
  code generation running unwatched)."""
  try:
    import ctypes
    import signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass


def _memory_check(cmd: list[str], tmp: pathlib.Path, out: pathlib.Path,
                  limit_s: float = 1800.0) -> dict[str, Any]:
  """Run a TPU planner compile only until libtpu's buffer assignment answers.

  A refusal (libtpu's out-of-memory error) ends the compile by itself within a minute or
  two of HLO passes; a program that fits then spends 20-60 min of these 2 cores in code
  generation, which adds nothing to the question "does it fit". So the compile is stopped
  when libtpu's log shows code generation under way, and the row says ``memory_check:
  passed`` with libtpu's heap size (the temporaries before code generation; full compiles
  here add 0.1-0.2 GiB of temporaries and 0.2-0.3 GiB of code to it: bench/RESULTS.md)."""
  logdir = tmp / "tpu_logs"
  logdir.mkdir()
  env = dict(os.environ, TPU_LOG_DIR=str(logdir))
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
  t0, heap, remat = time.time(), None, None
  try:
    while proc.poll() is None and time.time() - t0 < limit_s:
      time.sleep(5)
      logs = list(logdir.glob(f"*INFO*.{proc.pid}")) or list(
          pathlib.Path("/tmp/tpu_logs").glob(f"*INFO*.{proc.pid}"))
      if not logs:
        continue
      text = logs[0].read_text(errors="replace")
      m = _HEAP.search(text)
      if m and _CODEGEN.search(text[m.end():]) and "Ran out of memory" not in text:
        heap, remat = int(m.group(1)), _REMAT.search(text)
        break
  finally:
    if proc.poll() is None:
      proc.kill()
    text_out = proc.communicate()[0] or ""
  if heap is not None:
    return {"memory_check": "passed", "heap": heap,
            "compiler_remat": f"{remat.group(1)} => {remat.group(2)}" if remat else None,
            "note": "libtpu's buffer assignment accepted it; code generation not run"}
  if proc.returncode is None or time.time() - t0 >= limit_s:
    return {"error": f"no answer from libtpu's buffer assignment in {limit_s:.0f} s"}
  return _read_row(proc.returncode, text_out, out)


def _brief(r: dict[str, Any]) -> str:
  if r.get("memory_check") == "passed":
    return f"passed libtpu's memory check (heap {r['heap'] / 2**30:.2f} GiB; {r['wall_s']} s)"
  if "error" in r:
    return "error: " + r["error"][:200]
  if r.get("over_compiler"):
    return f"over (compiler refused) in {r['wall_s']} s"
  mark = "fits" if r["peak"] <= r["budget"] else "over"
  host = (f", batch in host memory {r['host_argument'] / 2**30:.2f} GiB"
          if r.get("host_argument") else "")
  return (f"peak {r['peak'] / 2**30:.2f} GiB of {r['budget'] / 2**30:.2f}{host}: {mark} "
          f"({r['wall_s']} s)")


def fits(r: dict[str, Any]) -> bool | None:
  if r.get("memory_check") == "passed":
    return True
  if "error" in r:
    return None
  if r.get("over_compiler"):
    return False
  return r["peak"] <= r["budget"]


def cached_step_limit(target: str, num_hard: int, microbatch: int, start: int = PAPER_B,
                      rel: float = 0.1, log=print) -> tuple[int | None, int | None]:
  """The cached two-pass step's largest videos per chip, bracketed by compiles (stage 2,
  batch on the chip): doubles from ``start`` until one is over, then bisects until the
  bracket is within ``rel``. Returns (largest fitting, smallest over); per-chip B stays a
  multiple of ``microbatch``. Each compile is cached like any point."""
  def ok(v: int) -> bool:
    f = fits(compile_point(target, 2, v, num_hard, microbatch=microbatch, log=log))
    if f is None:
      raise RuntimeError(f"{target} v={v} N_H={num_hard}: the compile failed")
    return f
  lo, hi = None, None
  v = start
  while hi is None:
    if ok(v):
      lo, v = v, v * 2
    else:
      hi = v
      if lo is None:   # even the start is over: halve down
        while lo is None and v > microbatch:
          v = max(microbatch, (v // 2) // microbatch * microbatch)
          if ok(v):
            lo = v
          else:
            hi = v
        break
  while lo is not None and hi - lo > max(microbatch, rel * lo):
    mid = (lo + hi) // 2 // microbatch * microbatch
    if mid in (lo, hi):
      break
    if ok(mid):
      lo = mid
    else:
      hi = mid
  return lo, hi


def cached_brackets(target: str, microbatch: int) -> dict[int, tuple[int, int]]:
  """From the compile cache: per N_H, the cached step's largest fitting and smallest
  refused videos per chip (stage 2, batch on the chip, no remat)."""
  out: dict[int, list[int | None]] = {}
  for p in CACHE.glob(f"{target}_s2_v*_h*_r0_n*_m{microbatch}.json"):
    m = re.match(rf"{re.escape(target)}_s2_v(\d+)_h(\d+)_r0_n\d+_m{microbatch}$", p.stem)
    if not m:
      continue
    v, h = int(m.group(1)), int(m.group(2))
    f = fits(json.loads(p.read_text()))
    lo, hi = out.setdefault(h, [None, None])
    if f and (lo is None or v > lo):
      out[h][0] = v
    elif f is False and (hi is None or v < hi):
      out[h][1] = v
  return {h: (lo, hi) for h, (lo, hi) in sorted(out.items()) if lo and hi}


def plot_cached(target: str, one_pass: str, microbatch: int, path: pathlib.Path) -> None:
  """The cached step's largest B per chip against the one-pass step's, over N_H."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cached = cached_brackets(target, microbatch)
  base = json.loads((REPO / "bench" / "frontier.json").read_text())["targets"][one_pass]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  hs = sorted(cached)
  ax.plot(hs, [cached[h][0] for h in hs], "o-", label=f"cached step (microbatch {microbatch})")
  ones = sorted((int(h), v["largest"]) for h, v in base["frontier"].items() if v.get("largest"))
  ax.plot([h for h, _ in ones], [v for _, v in ones], "s--", label="one-pass step")
  ax.axhline(PAPER_B, color="grey", lw=0.8, ls=":")
  ax.text(hs[-1], PAPER_B * 1.08, "B = 2000 (the paper)", ha="right", fontsize=8, color="grey")
  ax.set_yscale("log")
  ax.set_xlabel("hard negatives N_H")
  ax.set_ylabel("largest videos per chip (fits; next compile over)")
  ax.set_title(f"{base['device_kind']}, stage 2, paper model, bf16: compiled (XLA:GPU), not run",
               fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _cached(target: str, remat: bool = False) -> list[dict[str, Any]]:
  """The one-pass stage-2 compiles of ``target`` that the compiler accepted."""
  rows = []
  for p in sorted(CACHE.glob(f"{target}_s2_*_r{int(remat)}_n*.json")):
    if "_m" in p.stem.split("_n")[-1]:
      continue
    r = json.loads(p.read_text())
    if "error" not in r and r.get("peak") is not None and not r.get("over_compiler"):
      rows.append(r)
  return rows


def _fixed(r: dict[str, Any]) -> float:
  """The part of a row's peak that does not depend on the batch: state, code."""
  return r["peak"] - r["temp"]


def fit(rows: list[dict[str, Any]]) -> np.ndarray | None:
  """``peak = fixed + t0 + t1*v + t2*v*(1+N_H)``: ``fixed`` (arguments, outputs, code)
  read off the compiles, the temporaries fitted by least squares (three points or more,
  two batch sizes and two N_H among them). Returns (fixed + t0, t1, t2)."""
  pts = {(r["per_device"], r["N_H"]): r for r in rows}
  if len(pts) < 3 or len({h for _, h in pts}) < 2 or len({v for v, _ in pts}) < 2:
    return None
  x = np.array([[1.0, v, v * (1 + h)] for v, h in pts], float)
  y = np.array([r["temp"] for r in pts.values()], float)
  (t0, t1, t2), *_ = np.linalg.lstsq(x, y, rcond=None)
  return np.array([float(np.median([_fixed(r) for r in pts.values()])) + t0, t1, t2])


def _is_tpu(target: str) -> bool:
  from modeformer_jax.training import aot
  return target != "cpu" and aot.target(target).platform == "tpu"


def _budget(target: str) -> int:
  """A TPU kind's HBM per chip as libtpu reports it (for a kind with no full compile)."""
  from modeformer_jax.training import aot
  return int(aot.CHIPS[aot.target(target).chip].memory)


def borrowed_fit(target: str, rows: list[dict[str, Any]], remat: bool) -> np.ndarray | None:
  """A TPU kind compiled at one batch size: FIT_DONOR's per-video slopes through this
  kind's own (32, N_H = 2) compile. Only a search's starting point: the memory checks
  decide the limit."""
  donor = fit(_cached(FIT_DONOR, remat))
  own = [r for r in rows if r["N_H"] == 2]
  if donor is None:
    return None
  if not own:      # no full compile of this kind: the donor's fit as it is (a start only)
    return donor
  r = own[0]
  c0 = r["peak"] - donor[1] * r["per_device"] - donor[2] * r["per_device"] * (1 + r["N_H"])
  return np.array([c0, donor[1], donor[2]])


def kind_fit(target: str, rows: list[dict[str, Any]],
             remat: bool) -> tuple[np.ndarray | None, str]:
  """The fit a kind's searches start from, and whose it is: its own compiles', or (a TPU
  kind compiled at one batch size) FIT_DONOR's slopes."""
  coef = fit(rows)
  if coef is not None:
    return coef, target
  if _is_tpu(target):
    coef = borrowed_fit(target, rows, remat)
    if coef is not None:
      return coef, f"{FIT_DONOR}'s slopes"
  return None, ""


def scaled_guess(target: str, num_hard: int, coef: np.ndarray, budget: int) -> int | None:
  """A TPU search's start from a limit already bracketed: this kind's at another N_H
  (scaled by the fit's per-video cost), else FIT_DONOR's (also scaled by the memory left
  after the fixed part). libtpu rematerialises near its limit, so these limits sit far
  above the affine fit's prediction, and scaling a measured one starts much closer."""
  def cost(c: np.ndarray, h: int) -> float:
    return c[1] + c[2] * (1 + h)

  for h in sorted(NUM_HARD, key=lambda x: abs(x - num_hard)):
    got = confirmed(target, h)
    if got.get("status") == "confirmed" and h != num_hard:
      return max(GRAIN, int(got["largest"] * cost(coef, h) / cost(coef, num_hard))
                 // GRAIN * GRAIN)
  if target == FIT_DONOR:
    return None
  donor_rows = _cached(FIT_DONOR)
  donor = fit(donor_rows)
  for h in sorted(NUM_HARD, key=lambda x: abs(x - num_hard)):
    got = confirmed(FIT_DONOR, h)
    if donor is not None and got.get("status") == "confirmed":
      room = (budget - coef[0]) / (donor_rows[0]["budget"] - donor[0])
      return max(GRAIN, int(got["largest"] * room * cost(donor, h) / cost(donor, num_hard))
                 // GRAIN * GRAIN)
  return None


def predict(coef: np.ndarray, num_hard: int, budget: int) -> int:
  """Largest per-chip v (a multiple of GRAIN) the fit says fits ``budget``."""
  slope = coef[1] + coef[2] * (1 + num_hard)
  v = (budget - coef[0]) / slope
  return max(0, int(v) // GRAIN * GRAIN)


def frontier(target: str, num_hard: Sequence[int], confirm: Sequence[int], remat: bool,
             log=print) -> dict[int, dict[str, Any]]:
  """Fit, predict and confirm the largest per-chip batch per N_H for one target."""
  # Fit points: small per-chip batches, because a compile's time grows with the batch. The
  # fit only starts each search; a confirmed limit has a compile or check on either side.
  tpu = _is_tpu(target)
  for v, h in (TPU_FIT_POINTS if tpu else FIT_POINTS):
    compile_point(target, 2, v, h, remat, log=log)
  out: dict[int, dict[str, Any]] = {}
  for h in num_hard:
    rows = _cached(target, remat)
    coef, fit_from = kind_fit(target, rows, remat)
    if coef is None:
      out[h] = {"status": "fit failed (fewer than 3 compiled points)"}
      continue
    budget = rows[0]["budget"] if rows else _budget(target)
    v = predict(coef, h, budget)
    res = {"predicted": v, "fit": [float(c) for c in coef], "fit_from": fit_from}
    if h in confirm and v >= GRAIN and tpu:
      guess = scaled_guess(target, h, coef, budget) or v
      res["search_start"] = guess
      res.update(_bracket_checks(target, h, guess, coef, budget, remat, log))
    elif h in confirm and v >= GRAIN:
      # The planner's own bracket search, started at the prediction, over cached compiles.
      search = _CachedSearch(target, remat, log)
      # Start at the prediction, or at the largest compile that already fits when that is
      # higher (XLA:GPU rematerialises near its limit, so the affine fit can be low).
      start = max(v, confirmed(target, h).get("largest_compiled_fit", 0))
      best = search.largest_batch(h, remat, budget, multiple=GRAIN, log=lambda _: None,
                                  guess=start * search.n)
      if best is None:
        res["status"] = "none fits"
      else:
        over = search.cache.get((best["B"] + GRAIN * search.n, h, remat), {})
        res.update(status="confirmed", largest=best["per_device"], peak=best["peak"],
                   over_peak=over.get("peak"), compiles=len(search.cache))
    else:
      res["status"] = "predicted" if v >= GRAIN else "none fits"
    out[h] = res
  return out


def _bracket_checks(target: str, num_hard: int, v: int, coef: np.ndarray, budget: int,
                    remat: bool, log) -> dict[str, Any]:
  """A TPU kind's bracket from libtpu's memory checks: a per-chip v it accepts and a
  larger one it refuses, at most ~3% apart (a GRAIN apart below 256 per chip).

  Starts at ``v`` (the fit's guess). After a refusal it moves down by the excess libtpu
  states over the fit's slope; after an acceptance it moves up by steps that double from
  1/16 of v (libtpu rematerialises near its limit, so the affine fit is a floor there,
  not a prediction); then it bisects."""
  slope = coef[1] + coef[2] * (1 + num_hard)
  checks: dict[int, dict[str, Any]] = {}

  def ok(u: int) -> bool | None:
    if u not in checks:
      checks[u] = compile_point(target, 2, u, num_hard, remat, log=log, check_only=True)
    return fits(checks[u])

  def grain(x: float) -> int:
    return max(GRAIN, int(x) // GRAIN * GRAIN)

  lo = hi = None
  probe, step = v, grain(v / 16)
  while lo is None or hi is None:
    if len(checks) >= 12:
      return {"status": "not bracketed", "checks": len(checks)}
    answer = ok(probe)
    if answer is None:
      return {"status": "check failed", "error": checks[probe].get("error")}
    if answer:
      lo = probe
      probe, step = lo + step, step * 2
    else:
      hi = probe
      if probe <= GRAIN:
        return {"status": "none fits", "checks": len(checks)}
      excess = (checks[probe].get("peak") or budget) - budget
      probe = max(GRAIN, probe - grain(excess / slope))
  while hi - lo > grain(lo / 32):
    mid = (lo + hi) // 2 // GRAIN * GRAIN
    if ok(mid) is None:
      return {"status": "check failed", "error": checks[mid].get("error")}
    lo, hi = (mid, hi) if fits(checks[mid]) else (lo, mid)
  return {"status": "confirmed", "largest": lo, "refused_at": hi, "by": "libtpu memory checks",
          "compiler_remat": checks[lo].get("compiler_remat"), "checks": len(checks)}


class _CachedSearch(plan.Planner):
  """``plan.Planner.largest_batch`` over :func:`compile_point` (one process per compile,
  cached on disk), in per-chip batches of GRAIN."""

  def __init__(self, target: str, remat: bool, log):  # pylint: disable=super-init-not-called
    self.target, self.remat, self.log = target, remat, log
    self.n = _chips(target)
    self.cache: dict[tuple[int, int, bool], dict[str, Any]] = {}

  def measure(self, batch_size: int, num_hard: int, remat: bool) -> dict[str, Any]:
    key = (batch_size, num_hard, remat)
    if key not in self.cache:
      r = compile_point(self.target, 2, batch_size // self.n, num_hard, remat, log=self.log)
      if "error" in r:
        raise RuntimeError(f"{self.target} B={batch_size} N_H={num_hard}: {r['error']}")
      self.cache[key] = r
    return self.cache[key]


def confirmed(target: str, num_hard: int) -> dict[str, Any]:
  """The cached bracket: the largest v that fits and the smallest v above it that does not,
  when they are close (one GRAIN, or ~3% for the memory checks' search); else the
  largest compiled fit, if any."""
  rows = {}
  for p in CACHE.glob(f"{target}_s2_v*_h{num_hard}_r0_n*.json"):
    if "_m" in p.stem.split("_n")[-1]:
      continue
    r = json.loads(p.read_text())
    if fits(r) is not None:
      rows[r["per_device"]] = r   # a full compile and a check of one v agree or the last wins
  fitting = [v for v, r in rows.items() if fits(r)]
  if not fitting:
    return {}
  lo = max(fitting)
  above = [v for v, r in rows.items() if v > lo and fits(r) is False]
  if not above or min(above) - lo > max(GRAIN, lo // 32 // GRAIN * GRAIN):
    return {"largest_compiled_fit": lo}
  hi = min(above)
  by = "libtpu memory checks" if rows[lo].get("memory_check") else "full compiles"
  return {"status": "confirmed", "largest": lo, "refused_at": hi, "peak": rows[lo].get("peak"),
          "over_peak": rows[hi].get("peak"), "by": by,
          "compiler_remat": rows[lo].get("compiler_remat")}


def slices_for(kind: str, per_chip: int, batch: int = PAPER_B) -> int | None:
  """The smallest bookable slice whose chips hold ``batch`` (None if none listed does)."""
  for n in SLICES[kind]:
    if n * per_chip >= batch:
      return n
  return None


def cpu_error(target: str, r: dict[str, Any], log=print) -> dict[str, Any] | None:
  """The XLA:CPU estimate at a target row's (devices, B, N_H, stage): its % error."""
  est = compile_point("cpu", r["stage"], r["per_device"], r["N_H"], r["remat"],
                      chips=r["chips"], log=log)
  if "error" in est or est.get("peak") is None:
    return None
  return {"target": target, "device_kind": r["device_kind"], "stage": r["stage"],
          "per_chip": r["per_device"], "N_H": r["N_H"], "target_peak": r["peak"],
          "cpu_peak": est["peak"], "error_pct": 100.0 * (est["peak"] - r["peak"]) / r["peak"]}


def report(results: dict[str, Any], path_plot: pathlib.Path = PLOT) -> str:
  """The 'What fits where' table (markdown) and the plot; returns the table."""
  lines = ["| chip (slice compiled) | memory per chip | " + " | ".join(
      f"N_H = {h}" for h in NUM_HARD) + " | chips for B = 2000, N_H = 2 | N_H = 11 |",
           "|---|---|" + "---|" * len(NUM_HARD) + "---|---|"]
  for target, res in results["targets"].items():
    kind = target.split("-")[0]
    cells = []
    for h in NUM_HARD:
      f = res["frontier"].get(str(h)) or res["frontier"].get(h) or {}
      if f.get("status") == "confirmed" and f.get("by") == "libtpu memory checks":
        cells.append(f"**{f['largest']}** (memory checks)")
      elif f.get("status") == "confirmed":
        cells.append(f"**{f['largest']}**")
      elif f.get("scaled"):
        cells.append(f"~{f['scaled']} (scaled)")
      elif f.get("largest_compiled_fit"):
        cells.append(f">= {f['largest_compiled_fit']} (compiled; fit {f.get('predicted')})")
      elif f.get("predicted"):
        cells.append(f"{f['predicted']} (fit)")
      else:
        cells.append(f.get("status", "-"))
    need = []
    for h in (2, 11):
      f = res["frontier"].get(str(h)) or res["frontier"].get(h) or {}
      # From a confirmed limit, else from the fit (labelled): never from a lower bound.
      v = f.get("largest") if f.get("status") == "confirmed" else (
          f.get("scaled") or f.get("predicted"))
      n = slices_for(kind, v) if v else None
      name = f"{kind}-{n if kind in ('v5e', 'v6e', 'h100', 'h200') else 2 * n}" if n else ""
      need.append(("-" if not n else f"{n} ({name})" if f.get("status") == "confirmed"
                   else f"{n} ({name}; {'scaled' if f.get('scaled') else 'fit'})"))
    lines.append(f"| {res['device_kind']} ({target}) | {res['budget'] / 2**30:.2f} GiB | "
                 + " | ".join(cells) + " | " + " | ".join(need) + " |")
  table = "\n".join(lines)
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for target, res in results["targets"].items():
      hs, vs, conf = [], [], []
      for h in NUM_HARD:
        f = res["frontier"].get(str(h)) or {}
        v = f.get("largest") or f.get("scaled") or f.get("largest_compiled_fit") or \
            f.get("predicted")
        if v:
          hs.append(h), vs.append(v), conf.append(f.get("status") == "confirmed")
      if hs:
        line, = ax.plot(hs, vs, "-", label=f"{res['device_kind']} ({res['budget'] / 2**30:.0f} GiB)")
        ax.plot([h for h, c in zip(hs, conf) if c], [v for v, c in zip(vs, conf) if c], "o",
                color=line.get_color())
        ax.plot([h for h, c in zip(hs, conf) if not c], [v for v, c in zip(vs, conf) if not c],
                "o", mfc="none", color=line.get_color())
    ax.set_xlabel("hard negatives N_H"), ax.set_ylabel("largest videos per chip (B per chip)")
    ax.set_yscale("log"), ax.set_xticks(list(NUM_HARD))
    ax.set_title("Stage 2, paper model, bf16: compiled by each target's compiler\n"
                 "(filled: bracketed, GPUs by full compiles, TPUs by libtpu's memory checks;"
                 " open: fit or scaled)", fontsize=8)
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
    fig.tight_layout()
    path_plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_plot, dpi=120)
    plt.close(fig)
  except ImportError:
    pass
  return table


def collect(kinds: Sequence[str], sweep: bool, confirm: Sequence[int], log=print) -> dict:
  out: dict[str, Any] = {"config": CONFIG, "dtype": "bfloat16", "stage": 2,
                         "fit": "peak = fixed + t1*v + t2*v*(1+N_H), v = videos per chip; fixed = arguments + "
                                "outputs - aliased + code, read off the compiles",
                         "targets": {}, "cpu_errors": []}
  from modeformer_jax.training import aot
  for t in kinds:
    if not sweep and not list(CACHE.glob(f"{t}_s2_*.json")):
      continue
    res = frontier(t, NUM_HARD, confirm if sweep else (), False, log=log) if sweep else None
    if res is None:   # report only: predictions from what is cached, confirmations read back
      res = {}
      rows = _cached(t)
      coef, _ = kind_fit(t, rows, False)
      for h in NUM_HARD:
        if coef is None:
          continue
        budget = rows[0]["budget"] if rows else _budget(t)
        v = predict(coef, h, budget)
        r = {"predicted": v, "fit": [float(c) for c in coef], "status": "predicted"}
        r.update(confirmed(t, h))
        if _is_tpu(t) and r.get("status") != "confirmed":
          # libtpu rematerialises near its limit, so the affine fit is far low there (v5e,
          # N_H = 2: fit 1280 per chip, libtpu accepts 2200): a confirmed limit scaled by
          # the fit's per-video cost is the better estimate. Labelled, never bold.
          r["scaled"] = scaled_guess(t, h, coef, budget)
        res[h] = r
    rows = _cached(t)
    if not rows and not any(v.get("status") == "confirmed" or v.get("scaled")
                            for v in res.values()):
      continue
    chip = aot.CHIPS[aot.target(t).chip]
    out["targets"][t] = {"device_kind": rows[0]["device_kind"] if rows else chip.kind,
                         "budget": rows[0]["budget"] if rows else _budget(t),
                         "chips": _chips(t), "frontier": {str(h): v for h, v in res.items()},
                         "compiles": len(list(CACHE.glob(f"{t}_*.json")))}
  return out


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m bench.frontier", description=__doc__.split("\n\n")[0])
  ap.add_argument("--kinds", default=",".join(KINDS), help="targets, one slice per chip kind")
  ap.add_argument("--confirm", default="2,5,11,25",
                  help="N_H values confirmed by compiles either side (others: the fit's)")
  ap.add_argument("--report", action="store_true", help="no new compiles: report the cache")
  ap.add_argument("--cpu_errors", action="store_true",
                  help="also compile the XLA:CPU estimate at each confirmed point")
  ap.add_argument("--point", action="append", default=[],
                  help="only compile TARGET,STAGE,B,N_H[,REMAT[,MICROBATCH[,host]]] (B global; "
                       "',host': the cached step's batch in host memory; "
                       "repeatable), e.g. h200-1,2,2000,2 for bench/accelerator.py's one-GPU "
                       "comparison, v5e-1,2,2000,25,0,40 for the cached step")
  ap.add_argument("--cached_limit", action="append", default=[],
                  help="TARGET,N_H,MICROBATCH: bracket the cached step's largest videos per "
                       "chip by compiles (stage 2, paper, bf16; repeatable), e.g. "
                       "h100-1,25,40")
  ap.add_argument("--check", action="store_true",
                  help="with --point on a TPU target: libtpu's memory check only (stop at "
                       "code generation), not a full compile")
  ap.add_argument("--import_plan", action="append", default=[],
                  help="add the stage-2 rows of a `plan --json` file (paper, bf16, one "
                       "target) to the cache, as fit points")
  args = ap.parse_args(argv)
  for path in args.import_plan:
    data = json.loads(pathlib.Path(path).read_text())
    for r in data["rows"]:
      if r.get("microbatch") or data.get("dtype") != "bfloat16":
        continue
      key = _key(data["target"], r["stage"], r["per_device"], r["N_H"], r["remat"],
                 data["devices"])
      dest = CACHE / f"{key}.json"
      if not dest.exists():
        dest.write_text(json.dumps(dict(r, device_kind=data["device_kind"],
                                        budget=data["budget"], target=data["target"],
                                        chips=data["devices"], command=f"from {path}"),
                                   indent=1, default=str))
        print(f"imported {key} from {path}")
  if args.import_plan and not args.point:
    return 0
  if args.cached_limit:
    for spec in args.cached_limit:
      t, h, mb = spec.split(",")
      lo, hi = cached_step_limit(t, int(h), int(mb))
      print(f"cached step on {t}, N_H = {h}, microbatch {mb}: fits {lo} videos per chip, "
            f"over at {hi}", flush=True)
    t, _, mb = args.cached_limit[0].split(",")
    if t == "h100-1":
      plot_cached(t, "h100-8", int(mb), REPO / "docs" / "cached_frontier.png")
      print("wrote docs/cached_frontier.png")
    return 0
  if args.point:
    for p in args.point:
      t, st, b, h, *rest = p.split(",")
      n = _chips(t)
      if int(b) % n:
        raise SystemExit(f"--point {p}: B={b} does not divide by {t}'s {n} chips")
      remat = bool(rest and rest[0] in ("1", "on"))
      mb = int(rest[1]) if len(rest) > 1 else 0
      host = len(rest) > 2 and rest[2] == "host"
      check = args.check and _is_tpu(t)
      print(_brief(compile_point(t, int(st), int(b) // n, int(h), remat, microbatch=mb,
                                 check_only=check, host_inputs=host)))
    return 0
  kinds = [k for k in args.kinds.split(",") if k]
  confirm = [int(h) for h in args.confirm.split(",") if h]
  log = lambda s: print(s, flush=True)  # noqa: E731
  results = collect(kinds, not args.report, confirm, log=log)
  if args.cpu_errors or args.report:
    for t, res in results["targets"].items():
      for h, f in res["frontier"].items():
        if f.get("status") != "confirmed" or f.get("by") == "libtpu memory checks":
          continue    # a memory check has no peak to compare with
        key = _key(t, 2, f["largest"], int(h), False, res["chips"])
        row = json.loads((CACHE / f"{key}.json").read_text())
        have = (CACHE / f"{_key('cpu', 2, f['largest'], int(h), False, res['chips'])}.json")
        if args.cpu_errors or have.exists():
          e = cpu_error(t, row, log=log)
          if e:
            results["cpu_errors"].append(e)
  table = report(results)
  OUT.write_text(json.dumps(results, indent=1))
  print(table)
  for e in results["cpu_errors"]:
    print(f"XLA:CPU estimate vs {e['device_kind']} compiler at {e['per_chip']} per chip, "
          f"N_H={e['N_H']}: {e['cpu_peak'] / 2**30:.2f} vs {e['target_peak'] / 2**30:.2f} GiB "
          f"({e['error_pct']:+.0f}%)")
  print(f"wrote {OUT.relative_to(REPO)} and {PLOT.relative_to(REPO)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
