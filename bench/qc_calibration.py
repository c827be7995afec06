"""What a segment's confidence means: calibration, uncertain segments, and verdict errors.

  python -m bench.qc_calibration --work /tmp/qccal                      # analyse + fit + table
  python -m bench.qc_calibration --work /tmp/qccal --write_model        # also ship the fit

Material with known offsets, analysed once by the one analysis (``modeformer_jax.analysis``) with the
default model and no reliability rule (``min_reliability=0``):

* real loops: every shared real clip of 3 s or more (``../shared/data/real_clips``, people
  no model here trained on) played back to back to at least 30 s, as a programme repeating
  a recording would (each repeat is a shot cut), with its audio delayed by each of
  ``SHIFTS`` frames in one pass. A recording's own sync is not known, so the truth of a
  loop is its own whole-file estimate at shift 0 plus the shift: a segment is *right* when
  it is within one frame (40 ms) of that.
* the synthetic long material (``data_prep.synthetic.long``, ``offsets.mp4``): speech
  pieces with known offsets; segments inside one speech piece are scored against it.

The reliability model is a logistic regression of "right" on the segment's confidence and
vote share (``estimate.RELIABILITY_FEATURES``), fitted by
Newton's method with a small ridge. Every figure below for real material is
**leave-one-clip-out**: a clip's segments are judged by a model fitted without that clip.

Verdicts, before and after: a real loop at a shift has one true offset, so each broadcast
tolerance has one right verdict. *Before* is the rule of the previous round (every segment
with a face and speech counts; one failing segment fails the file); *after* is this round's
(segments at the edge of the search or below ``--min_reliability`` are uncertain; a file
fails when out of tolerance for ``tolerances.MIN_FAIL_S`` in a row). A false alarm is a fail
on a file whose truth is within the tolerance; a miss is a pass on a file whose truth is
outside it (``unknown`` verdicts are counted apart).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np

SHIFTS = (0, 2, -3, 5)          # frames: in sync, and out of EBU R37 both ways, and far out
LOOP_S = 30.0
RIGHT_MS = 40.0                 # a segment is right within one frame of the truth
SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _loop(clip: pathlib.Path, out: pathlib.Path, seconds: float) -> pathlib.Path:
  """``clip`` played back to back until ``seconds`` (h264 + AAC)."""
  from data_prep.synthetic.encode import write_mp4
  from modeformer_jax import media
  path = out / f"loop_{clip.parent.name}_{clip.stem}.mp4"
  if path.exists():
    return path
  dec = media.decode(str(clip))
  n = math.ceil(seconds / dec.duration)
  frames = np.concatenate([dec.frames] * n)
  per = len(dec.frames) * 640
  audio = np.concatenate([np.pad(dec.audio[:per], (0, max(0, per - dec.audio.size)))] * n)
  h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
  write_mp4(path, np.ascontiguousarray(frames[:, :h, :w]), audio)
  return path


def _segment_rows(result: dict, material: str, truth_ms) -> list[dict]:
  """One row per segment with a face and speech (the reliability rule's domain)."""
  rows = []
  for s in result["segments"]:
    if s["reason"] not in (None, "uncertain") or s.get("offset_ms") is None:
      continue
    t = truth_ms(0.5 * (s["start_s"] + s["end_s"]), s)
    if t is None:
      continue
    rows.append({"material": material, "shift": result.get("injected", 0),
                 "start_s": s["start_s"], "offset_ms": s["offset_ms"], "truth_ms": t,
                 "right": abs(s["offset_ms"] - t) <= RIGHT_MS,
                 "edge": bool(s.get("at_search_edge")),
                 "confidence": s["confidence"], "vote_fraction": s["vote_fraction"],
                 "speech_fraction": s["speech_fraction"], "face_fraction": s["face_fraction"]})
  return rows


def analyse(work: pathlib.Path, long_dir: pathlib.Path | None) -> list[dict]:
  """Analyses the material (cached in ``work/segments.json``); returns segment rows."""
  cache = work / "segments.json"
  if cache.exists():
    return json.loads(cache.read_text())
  from data_prep.synthetic import long as long_lib
  from modeformer_jax import analysis
  analyzer = analysis.Analyzer(options=analysis.AnalysisOptions(min_reliability=0.0))
  rows: list[dict] = []
  clips = long_lib._real_clip_list(SHARED / "real_clips") if (SHARED / "real_clips").is_dir() else []
  for i, clip in enumerate(clips):
    t0 = time.perf_counter()
    loop = _loop(clip, work, LOOP_S)
    results = analyzer.analyze_shifts(loop, SHIFTS)
    own = results[0]["global"]["offset_ms"]
    if own is None:
      print(f"{clip.name}: no whole-file answer, skipped", file=sys.stderr)
      continue
    for r in results:
      truth = own + 40.0 * r.get("injected", 0)
      rows += _segment_rows(r, f"real:{clip.parent.name}/{clip.name}", lambda t, s: truth)
    print(f"[{i + 1}/{len(clips)}] {clip.name}: own {own:+.1f} ms, "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
  if long_dir is not None:
    video = long_dir / "offsets.mp4"
    if not video.exists():
      long_lib.make_long_video(video, long_lib.offsets_spec(), progress=False)
    truth = json.loads(video.with_suffix(".truth.json").read_text())
    r = analyzer.analyze(video)

    def inside(t, s):
      a, ka = long_lib.truth_offset_ms(truth, s["start_s"])
      b, kb = long_lib.truth_offset_ms(truth, min(s["end_s"], truth["duration_s"]) - 1e-3)
      return a if (a, ka) == (b, kb) and ka == "speech" else None
    rows += _segment_rows(r, "synthetic:offsets.mp4", inside)
  cache.write_text(json.dumps(rows))
  return rows


def fit(rows: list[dict], ridge: float = 1e-2, iters: int = 50) -> dict:
  """Logistic regression of ``right`` on ``RELIABILITY_FEATURES`` (Newton / IRLS)."""
  from modeformer_jax.analysis.estimate import RELIABILITY_FEATURES as F
  x = np.array([[1.0] + [r[f] for f in F] for r in rows])
  y = np.array([float(r["right"]) for r in rows])
  w = np.zeros(x.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-x @ w))
    g = x.T @ (p - y) + ridge * np.r_[0, w[1:]]
    h = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.diag(np.r_[0, np.ones(len(F))])
    step = np.linalg.solve(h, g)
    w -= step
    if np.abs(step).max() < 1e-8:
      break
  return {"bias": float(w[0]), "weights": {f: float(v) for f, v in zip(F, w[1:])}}


def _cv_reliability(rows: list[dict]) -> np.ndarray:
  """Leave-one-material-out reliability of every row."""
  from modeformer_jax.analysis import estimate
  out = np.zeros(len(rows))
  mats = sorted({r["material"] for r in rows})
  for m in mats:
    train = [r for r in rows if r["material"] != m]
    model = fit(train)
    for i, r in enumerate(rows):
      if r["material"] == m:
        out[i] = estimate.reliability(model, r, r["speech_fraction"])
  return out


BORDERLINE_MS = 20.0    # a truth this close to a limit is within the measurement's error


def unreadable(rows: list[dict], rel: np.ndarray, min_reliability: float) -> list[str]:
  """Real clips the detector cannot read: fewer than half of their unshifted segments are
  reliable. Their own offset (the truth of their loops) is then unknown, so their verdicts
  are reported apart, not scored."""
  out = []
  for m in sorted({r["material"] for r in rows if r["material"].startswith("real:")}):
    idx = [i for i, r in enumerate(rows) if r["material"] == m and r["shift"] == 0]
    ok = [i for i in idx if not rows[i]["edge"] and rel[i] >= min_reliability]
    if len(ok) < 0.5 * len(idx):
      out.append(m)
  return out


def verdict_errors(rows: list[dict], rel: np.ndarray | None, min_reliability: float,
                   after: bool, skip: list[str]) -> dict:
  """False alarms and misses per tolerance over the real loops (one truth per loop and
  shift). Loops whose truth lies within ``BORDERLINE_MS`` of a limit are counted apart:
  either verdict is within the measurement's error there."""
  from modeformer_jax.qc import tolerances
  out = {n: {"false_alarms": 0, "in_tolerance_files": 0, "misses": 0,
             "out_of_tolerance_files": 0, "borderline": 0, "unknown": 0}
         for n in tolerances.STANDARDS}
  groups: dict[tuple, list[int]] = {}
  for i, r in enumerate(rows):
    if r["material"].startswith("real:") and r["material"] not in skip:
      groups.setdefault((r["material"], r["shift"]), []).append(i)
  for idx in groups.values():
    truth = rows[idx[0]]["truth_ms"]
    if after:
      keep = [i for i in idx if not rows[i]["edge"]
              and (rel is None or rel[i] >= min_reliability)]
      v = tolerances.file_verdicts([rows[i] for i in keep])
    else:    # the previous round: any failing segment with a face and speech fails the file
      v = {n: {"verdict": "unknown" if not idx else
               ("fail" if any(not t.passes(rows[i]["offset_ms"]) for i in idx) else "pass")}
           for n, t in tolerances.STANDARDS.items()}
    for n, t in tolerances.STANDARDS.items():
      o, verdict = out[n], v[n]["verdict"]
      if min(abs(truth + t.early_ms), abs(truth - t.late_ms)) < BORDERLINE_MS:
        o["borderline"] += 1
      elif verdict == "unknown":
        o["unknown"] += 1
      elif t.passes(truth):
        o["in_tolerance_files"] += 1
        o["false_alarms"] += verdict == "fail"
      else:
        o["out_of_tolerance_files"] += 1
        o["misses"] += verdict == "pass"
  return out


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m bench.qc_calibration",
                               description=__doc__.splitlines()[0])
  ap.add_argument("--work", required=True, help="material and the cached segments")
  ap.add_argument("--long", default=None, help="folder of data_prep.synthetic.long material "
                  "(default: WORK/long, written when missing)")
  ap.add_argument("--min_reliability", type=float, default=0.5)
  ap.add_argument("--write_model", action="store_true",
                  help="write the fit on all material beside the default model")
  ap.add_argument("--out", default=None, help="JSON of every figure")
  a = ap.parse_args(argv)
  from bench.common import machine
  from modeformer_jax.analysis import detectors, estimate
  work = pathlib.Path(a.work)
  work.mkdir(parents=True, exist_ok=True)
  long_dir = pathlib.Path(a.long) if a.long else work / "long"
  long_dir.mkdir(parents=True, exist_ok=True)
  rows = analyse(work, long_dir)
  print(machine())
  real = [r for r in rows if r["material"].startswith("real:")]
  print(f"{len(rows)} segments with a face and speech ({len(real)} real, "
        f"{len(rows) - len(real)} synthetic), {len({r['material'] for r in rows})} files")
  rel = _cv_reliability(rows)
  right = np.array([r["right"] for r in rows])
  edge = np.array([r["edge"] for r in rows])
  print(f"right (within {RIGHT_MS:.0f} ms): {right.mean():.1%}; at the search edge: "
        f"{edge.mean():.1%} of segments, of which right {right[edge].mean() if edge.any() else 0:.1%}")
  print("\nreliability (leave-one-file-out) against the observed share right:")
  print(f"{'reliability':>14} {'segments':>9} {'right':>7}")
  bins = []
  for lo in np.arange(0, 1, 0.1):
    sel = (rel >= lo) & (rel < lo + 0.1 + (lo >= 0.9))
    if sel.any():
      bins.append({"from": round(float(lo), 1), "segments": int(sel.sum()),
                   "right": round(float(right[sel].mean()), 3)})
      print(f"{lo:5.1f} - {lo + 0.1:3.1f} {sel.sum():9d} {right[sel].mean():7.1%}")
  keep = (rel >= a.min_reliability) & ~edge
  print(f"\nat min_reliability {a.min_reliability}: {1 - keep.mean():.1%} of segments "
        f"uncertain; right among the rest {right[keep].mean():.1%} (all: {right.mean():.1%})")
  skip = unreadable(rows, rel, a.min_reliability)
  print(f"\nclips the detector cannot read (under half of their unshifted segments reliable; "
        f"their truth is unknown, so their loops are not scored): {skip or 'none'}")
  before = verdict_errors(rows, None, 0.0, after=False, skip=skip)
  after = verdict_errors(rows, rel, a.min_reliability, after=True, skip=skip)
  print(f"verdicts on the other real loops (one truth per loop and shift; truths within "
        f"{BORDERLINE_MS:.0f} ms of a limit counted apart), before -> after:")
  print(f"{'tolerance':>30} {'false alarms':>18} {'misses':>16} {'unknown':>9} {'borderline':>10}")
  for n in before:
    b, f = before[n], after[n]
    print(f"{n:>30} {b['false_alarms']:>3}/{b['in_tolerance_files']:<3} -> "
          f"{f['false_alarms']:>2}/{f['in_tolerance_files']:<3}  "
          f"{b['misses']:>3}/{b['out_of_tolerance_files']:<3} -> "
          f"{f['misses']:>2}/{f['out_of_tolerance_files']:<3} {b['unknown']:>2} -> {f['unknown']:<3}"
          f" {f['borderline']:>6}")
  model = fit(rows)
  print(f"\nfit on all material: {json.dumps(model)}")
  report = {"machine": machine(), "shifts": SHIFTS, "segments": len(rows), "real": len(real),
            "right": float(right.mean()), "edge": float(edge.mean()), "bins": bins,
            "min_reliability": a.min_reliability, "uncertain": float(1 - keep.mean()),
            "right_kept": float(right[keep].mean()), "unreadable": skip,
            "before": before, "after": after,
            "model": model}
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(report, indent=1))
  if a.write_model:
    target = detectors.DEFAULT_MODEL / estimate.RELIABILITY_FILE
    target.write_text(json.dumps(model | {
        "what": "P(segment offset within one frame of the truth), logistic in the features",
        "made_by": "python -m bench.qc_calibration --write_model",
        "material": f"{len(real)} segments of real loops (shared real_clips), "
                    f"{len(rows) - len(real)} of synthetic long material"}, indent=1) + "\n")
    print(f"wrote {target}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
