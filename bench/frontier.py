"""The paper's B x N_H trade-off as the target compilers see it (deviceless, nothing runs).

  python -m bench.frontier                 # sweep (resumes), then the report
  python -m bench.frontier --report        # table, plot and bench/frontier.json from the cache

For each chip kind (one small slice per kind: v5e-4, v5p-8, v6e-4, h100-8, h200-8), the paper
model's stage-2 step (bf16; gathered easy negatives) is compiled by the target's own compiler
through ``python -m modeformer_jax.plan`` (one process per compile, so a crash or a stop
loses only that compile). Each result is cached in ``bench/frontier_compiles/`` and a rerun
skips what is there: a sweep stopped anywhere resumes where it stopped.

Few compiles, because a paper-model TPU compile takes ~6 minutes on 2 cores: per-chip peak
is close to affine in the chip's videos v and audio windows v*(1+N_H), so three compiles
per kind fit ``peak = c0 + c1*v + c2*v*(1+N_H)`` (least squares over every compile of that
kind as more arrive); the largest v per chip that fits is predicted for each N_H, then
confirmed by a compile at it (fits) and one a step above (over). A confirmation that
disagrees is added to the fit and the prediction redone. The XLA:CPU estimate (the
planner's ``--target cpu``, same devices simulated) is compiled at the confirmed points too,
for its error against each target compiler.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
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
PAPER_B = 2000
# The slices chips are booked in, per kind, for "how many chips does B need".
SLICES = {"v5e": (1, 4, 8, 16, 32, 64, 128, 256), "v5p": (4, 8, 16, 32, 64, 128, 256, 512),
          "v6e": (1, 4, 8, 16, 32, 64, 128, 256), "h100": (1, 2, 4, 8, 16, 32, 64),
          "h200": (1, 2, 4, 8, 16, 32, 64)}


def _key(target: str, stage: int, per_chip: int, num_hard: int, remat: bool,
         chips: int, microbatch: int = 0) -> str:
  return (f"{target}_s{stage}_v{per_chip}_h{num_hard}_r{int(remat)}_n{chips}"
          + (f"_m{microbatch}" if microbatch else ""))


def _chips(target: str) -> int:
  from modeformer_jax import aot
  return 1 if target == "cpu" else aot.target(target).chips


def compile_point(target: str, stage: int, per_chip: int, num_hard: int, remat: bool = False,
                  chips: int | None = None, log=print, microbatch: int = 0) -> dict[str, Any]:
  """One compile through the planner CLI (cached): its row, or {'error': ...}.
  ``microbatch`` > 0 compiles the cached two-pass step."""
  chips = chips or _chips(target)
  key = _key(target, stage, per_chip, num_hard, remat, chips, microbatch)
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
      cmd += [f"--config.microbatch={microbatch}"]
    t0 = time.time()
    log(f"  compiling {key} ...")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0 or not out.exists():
      tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
      row = {"error": " | ".join(tail)[-600:]}
    else:
      data = json.loads(out.read_text())
      row = dict(data["rows"][0], device_kind=data["device_kind"], budget=data["budget"])
  row.update(target=target, chips=chips, wall_s=round(time.time() - t0, 1),
             command=" ".join(cmd[1:]).replace(" --json " + str(out), ""))
  path.write_text(json.dumps(row, indent=1, default=str))
  log(f"    -> {_brief(row)}")
  return row


def _brief(r: dict[str, Any]) -> str:
  if "error" in r:
    return "error: " + r["error"][:200]
  if r.get("over_compiler"):
    return f"over (compiler refused) in {r['wall_s']} s"
  mark = "fits" if r["peak"] <= r["budget"] else "over"
  return f"peak {r['peak'] / 2**30:.2f} GiB of {r['budget'] / 2**30:.2f}: {mark} ({r['wall_s']} s)"


def fits(r: dict[str, Any]) -> bool | None:
  if "error" in r:
    return None
  if r.get("over_compiler"):
    return False
  return r["peak"] <= r["budget"]


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


def predict(coef: np.ndarray, num_hard: int, budget: int) -> int:
  """Largest per-chip v (a multiple of GRAIN) the fit says fits ``budget``."""
  slope = coef[1] + coef[2] * (1 + num_hard)
  v = (budget - coef[0]) / slope
  return max(0, int(v) // GRAIN * GRAIN)


def frontier(target: str, num_hard: Sequence[int], confirm: Sequence[int], remat: bool,
             log=print) -> dict[int, dict[str, Any]]:
  """Fit, predict and confirm the largest per-chip batch per N_H for one target."""
  # Fit points: small per-chip batches, because a TPU compile's time grows with the batch
  # (~9 CPU-minutes at 32 per chip, ~25 at 500 on these 2 cores). The extrapolation's error
  # is measured where a large point exists (v5p-8 at 500 per chip) and every prediction
  # that is confirmed has compiles on both sides of it.
  for v, h in FIT_POINTS:
    compile_point(target, 2, v, h, remat, log=log)
  out: dict[int, dict[str, Any]] = {}
  for h in num_hard:
    rows = _cached(target, remat)
    coef = fit(rows)
    if coef is None:
      out[h] = {"status": "fit failed (fewer than 3 compiled points)"}
      continue
    budget = rows[0]["budget"]
    v = predict(coef, h, budget)
    res = {"predicted": v, "fit": [float(c) for c in coef]}
    if h in confirm and v >= GRAIN:
      # The planner's own bracket search, started at the prediction, over cached compiles.
      search = _CachedSearch(target, remat, log)
      best = search.largest_batch(h, remat, budget, multiple=GRAIN, log=lambda _: None,
                                  guess=v * search.n)
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
  """The largest cached per-chip v that fits with v + GRAIN compiled and over, if any."""
  rows = {}
  for p in CACHE.glob(f"{target}_s2_v*_h{num_hard}_r0_n*.json"):
    if "_m" in p.stem.split("_n")[-1]:
      continue
    r = json.loads(p.read_text())
    if fits(r) is not None:
      rows[r["per_device"]] = r
  best = [v for v, r in rows.items() if fits(r) and v + GRAIN in rows
          and fits(rows[v + GRAIN]) is False]
  if not best:
    fitting = [v for v, r in rows.items() if fits(r)]
    return {"largest_compiled_fit": max(fitting)} if fitting else {}
  v = max(best)
  return {"status": "confirmed", "largest": v, "peak": rows[v]["peak"],
          "over_peak": rows[v + GRAIN].get("peak")}


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
      if f.get("status") == "confirmed":
        cells.append(f"**{f['largest']}**")
      elif f.get("largest_compiled_fit"):
        cells.append(f">= {f['largest_compiled_fit']} (compiled; fit {f.get('predicted')})")
      elif f.get("predicted"):
        cells.append(f"{f['predicted']} (fit)")
      else:
        cells.append(f.get("status", "-"))
    need = []
    for h in (2, 11):
      f = res["frontier"].get(str(h)) or res["frontier"].get(h) or {}
      v = f.get("largest") or f.get("largest_compiled_fit") or f.get("predicted")
      n = slices_for(kind, v) if v else None
      need.append(f"{n} ({target.split('-')[0]}-{n if kind in ('v5e', 'v6e', 'h100', 'h200') else 2 * n})"
                  if n else "-")
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
        v = f.get("largest") or f.get("largest_compiled_fit") or f.get("predicted")
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
                 "(filled: confirmed by compiles either side; open: fit)", fontsize=9)
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
  for t in kinds:
    if not sweep and not _cached(t):
      continue
    res = frontier(t, NUM_HARD, confirm if sweep else (), False, log=log) if sweep else None
    if res is None:   # report only: predictions from what is cached, confirmations read back
      res = {}
      rows = _cached(t)
      coef = fit(rows)
      for h in NUM_HARD:
        if coef is None:
          continue
        v = predict(coef, h, rows[0]["budget"])
        r = {"predicted": v, "fit": [float(c) for c in coef], "status": "predicted"}
        r.update(confirmed(t, h))
        res[h] = r
    rows = _cached(t)
    if not rows:
      continue
    out["targets"][t] = {"device_kind": rows[0]["device_kind"], "budget": rows[0]["budget"],
                         "chips": rows[0]["chips"], "frontier": {str(h): v for h, v in res.items()},
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
                  help="only compile TARGET,STAGE,B,N_H[,REMAT[,MICROBATCH]] (B global; "
                       "repeatable), e.g. h200-1,2,2000,2 for bench/accelerator.py's one-GPU "
                       "comparison, v5e-1,2,2000,25,0,40 for the cached step")
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
  if args.point:
    for p in args.point:
      t, st, b, h, *rest = p.split(",")
      n = _chips(t)
      if int(b) % n:
        raise SystemExit(f"--point {p}: B={b} does not divide by {t}'s {n} chips")
      remat = bool(rest and rest[0] in ("1", "on"))
      mb = int(rest[1]) if len(rest) > 1 else 0
      print(_brief(compile_point(t, int(st), int(b) // n, int(h), remat, microbatch=mb)))
    return 0
  kinds = [k for k in args.kinds.split(",") if k]
  confirm = [int(h) for h in args.confirm.split(",") if h]
  log = lambda s: print(s, flush=True)  # noqa: E731
  results = collect(kinds, not args.report, confirm, log=log)
  if args.cpu_errors or args.report:
    for t, res in results["targets"].items():
      for h, f in res["frontier"].items():
        if f.get("status") != "confirmed":
          continue
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
