"""Offset detection with injected audio shifts: how often the detector finds the shift.

  # held-out utterances of a prepared split (source videos found through its manifest)
  python -m bench.detect_shifts --checkpoint runs/grid_s1 --prepared data/grid_s1_prepared:val
  # any videos (cropped as the model's training data, or --layout)
  python -m bench.detect_shifts --checkpoint modeformer_jax/weights/grid_s1 ../shared/data/real_clips/*/*.mp4

Every video's audio is delayed by each shift in ``--shifts`` (default -7..+7 frames), all
in one pass of the analysis ``detect`` runs (``analysis.detect_shifted``; windows that would
read the silence a shift moves in are not scored), and the detector's answer is compared
with it: exact, and within +-1 frame. A source that is not
perfectly in sync to begin with shows up as a constant bias, so the mean error is printed
too. Each (file, shift) is one detection: a shift with no answer (too little overlap left
after it, no speech or face in reach) is listed with its reason and counted, and does not
cost the file's other shifts; a file refused at every shift is listed once, with its reason.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
from tqdm import tqdm

from bench.common import machine
from modeformer_jax import analysis, cli, errors
from modeformer_jax.analysis import detectors
from modeformer_jax.data import records


def prepared_sources(spec: str, max_clips: int | None) -> list[str]:
  """Source video paths of a prepared ``DIR:SPLIT`` (from its manifest and records)."""
  data_dir, _, split = spec.rpartition(":")
  root = pathlib.Path(records.read_manifest(data_dir)["source_root"])
  source = records.open_split(data_dir, split)
  n = len(source) if max_clips is None else min(max_clips, len(source))
  return [str(root / records.decode_record(source[i])["source"]) for i in range(n)]


def summarize(rows: list[dict]) -> dict:
  """Exact / within-1 rates and the mean signed error over detection rows.

  ``relative_*`` measure the error against the clip's own detection at zero injected shift
  (when 0 was among the shifts), which is the fairer score for recordings that are not
  perfectly in sync to begin with.
  """
  err = np.array([r["detected"] - r["injected"] for r in rows])
  out = {"detections": int(err.size), "exact": float(np.mean(err == 0)),
         "within_1": float(np.mean(np.abs(err) <= 1)), "mean_error": float(err.mean()),
         "median_abs_error": float(np.median(np.abs(err)))}
  base = {r["file"]: r["detected"] for r in rows if r["injected"] == 0}
  rel = np.array([r["detected"] - base[r["file"]] - r["injected"] for r in rows
                  if r["file"] in base and r["injected"] != 0])
  if rel.size:
    out["relative_exact"] = float(np.mean(rel == 0))
    out["relative_within_1"] = float(np.mean(np.abs(rel) <= 1))
  return out


def print_refusals(failed: list[dict], shifts: list[int]) -> None:
  """One line per file refused at every shift (its reasons), then one per refused
  (file, shift) of the files that answer at other shifts."""
  by_file: dict[str, list[dict]] = {}
  for f in failed:
    by_file.setdefault(f["file"], []).append(f)
  for path, fs in by_file.items():
    reasons = sorted({f"{f['kind']}: {f['error']}" for f in fs})
    if len(fs) == len(shifts):
      print(f"refused {path} at every shift: " + " | ".join(reasons))
    else:
      for f in sorted(fs, key=lambda f: f["injected"]):
        print(f"refused {path} at shift {f['injected']:+d}: {f['kind']}: {f['error']}")


def main(argv: list[str] | None = None) -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("videos", nargs="*")
  parser.add_argument("--checkpoint", default=str(detectors.DEFAULT_MODEL))
  parser.add_argument("--which", default="latest", help="for a workdir: latest | best")
  parser.add_argument("--prepared", default=None, help="DIR:SPLIT of a prepared dataset")
  parser.add_argument("--max_clips", type=int, default=None)
  parser.add_argument("--layout", default="auto", choices=detectors.LAYOUT_CHOICES,
                      help="'auto': the model's own training crop")
  parser.add_argument("--shifts", default="-7:7", help="'a:b' (inclusive) or a comma list")
  parser.add_argument("--json_out", default=None, help="write per-detection rows here")
  analysis.add_flags(parser.add_argument_group("the analysis (detect's options)"))
  args = parser.parse_args(argv)
  if ":" in args.shifts:
    lo, hi = (int(x) for x in args.shifts.split(":"))
    shifts = list(range(lo, hi + 1))
  else:
    shifts = [int(x) for x in args.shifts.split(",")]
  files = list(args.videos)
  if args.prepared:
    files += prepared_sources(args.prepared, args.max_clips)
  if not files:
    parser.error("give videos or --prepared DIR:SPLIT")

  det = detectors.load_detector(args.checkpoint, which=args.which, layout=args.layout, chunk=256)
  meta = det.meta
  try:
    qc = analysis.options_from_flags(args)
  except ValueError as e:
    parser.error(str(e))
  analyzer = analysis.Analyzer(options=qc, detector=det)
  print(machine())
  print(f"model {args.checkpoint} ({meta.get('trained_on', 'training checkpoint')}); "
        f"face landmarks every {qc.detect_every} frame(s), audio windows every "
        f"{qc.audio_every} mel frame(s); "
        f"{len(files)} videos x {len(shifts)} shifts ({shifts[0]:+d}..{shifts[-1]:+d})")
  rows, failed = [], []
  t0 = time.perf_counter()
  for path in tqdm(files, desc="videos"):
    try:
      results = analysis.detect_shifted(analyzer, path, shifts, strict=False)
    except (errors.FeatureError, ValueError) as e:    # the file itself: every shift
      results = [{"injected": k, "error": e} for k in shifts]
    for r in results:
      if "error" in r:
        e = r["error"]
        failed.append({"file": path, "injected": r["injected"],
                       "kind": getattr(e, "kind", "error"),
                       "error": getattr(e, "reason", str(e))})
      else:
        rows.append({"file": path, "injected": r["injected"],
                     "detected": r["offset_frames"], "confidence": r["confidence"]})
  seconds = time.perf_counter() - t0
  print_refusals(failed, shifts)
  if not rows:
    sys.exit("no video could be read")
  s = summarize(rows)
  answered = {r["file"] for r in rows}
  print(f"{len(answered)} of {len(files)} videos answer; {s['detections']} of "
        f"{len(files) * len(shifts)} (video, shift) detections, {len(failed)} refused; "
        f"{seconds:.1f} s")
  print(f"exact: {100 * s['exact']:.1f}%   within +-1: {100 * s['within_1']:.1f}%   "
        f"mean error {s['mean_error']:+.2f} frames   median |error| {s['median_abs_error']:.1f}")
  if "relative_exact" in s:
    print(f"relative to each clip's own zero-shift detection: exact "
          f"{100 * s['relative_exact']:.1f}%   within +-1: {100 * s['relative_within_1']:.1f}%")
  groups = sorted({pathlib.Path(r["file"]).parent.name for r in rows})
  if len(groups) > 1:
    for g in groups:
      g_rows = [r for r in rows if pathlib.Path(r["file"]).parent.name == g]
      gs = summarize(g_rows)
      print(f"  {g}: {len({r['file'] for r in g_rows})} videos, {gs['detections']} detections, "
            f"exact {100 * gs['exact']:.1f}%, "
            f"within +-1 {100 * gs['within_1']:.1f}%")
  by_shift = {k: summarize([r for r in rows if r["injected"] == k]) for k in shifts}
  print("injected: " + " ".join(f"{k:+d}" .rjust(5) for k in shifts))
  print("exact %:  " + " ".join(f"{100 * by_shift[k]['exact']:5.0f}" for k in shifts))
  if args.json_out:
    pathlib.Path(args.json_out).write_text(json.dumps(
        {"summary": s, "by_shift": by_shift, "rows": rows, "skipped": failed}, indent=1))


if __name__ == "__main__":
  main()
