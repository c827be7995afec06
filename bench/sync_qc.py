"""Sync QC against known truth: per-segment frame and ms errors, drift, faces, speed, memory.

  python -m data_prep.synthetic.long --out /tmp/longmat --minutes 1          # the material
  python -m bench.sync_qc --material /tmp/longmat --checkpoint demo_out/run \\
      --face_frame synthetic --out bench/sync_qc_demo.json
  python -m bench.sync_qc --material /tmp/longmat --only real_concat --out bench/sync_qc_real.json
  python -m bench.sync_qc --real_pair ../shared/data/real_clips --window 3    # relative, real
  python -m bench.sync_qc --speed 360p,720p,1080p --minutes 0.5             # real-time factor
  python -m bench.sync_qc --rss 1,10 --size 640x360                           # peak RSS vs length
  python -m bench.sync_qc --rss_trace /tmp/bench_sync_qc/bench_320x180_60min.mp4 \
      --out bench/sync_qc_rss_trace.jsonl      # RSS against input minutes, one long run

Each file is analysed in a fresh process (so its peak RSS is its own). A segment is scored
when it lies inside one piece of the truth: speech with a face must be measured (frames
right when the answer is one of the whole frames nearest the truth, i.e. within 20 ms;
ms error against the truth at the segment's centre); silent or faceless pieces must be
reported unmeasurable. Segments that straddle a piece boundary are not scored.

Real clips are not known to be in sync, so ``--real_pair`` concatenates the same clips
twice with different injected offsets (A and B, by 20 to 160 ms apart, not whole frames)
and scores each clip's measured difference against the injected one: the clip's own offset
cancels. A clip's measurement is the median over the segments inside it.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

from modeformer_jax import cli

# Offsets of the two real concatenations (ms); differences of 20..160 ms, none whole frames.
PAIR_A = (0.0, 20.0, -60.0, 100.0, 40.0, -120.0, 60.0, -20.0)
PAIR_B = (-100.0, 60.0, 40.0, -20.0, -60.0, 20.0, -40.0, 100.0)


def real_pair(root: pathlib.Path, work: pathlib.Path, checkpoint: str | None,
              face_frame: str, extra: dict) -> dict:
  """Relative offsets on real clips (see the module docstring)."""
  from data_prep.synthetic import long as long_mat
  clips = long_mat._real_clip_list(root)
  rows = {}
  for name, offs in (("A", PAIR_A), ("B", PAIR_B)):
    path = work / f"real_pair_{name}.mp4"
    o = [offs[i % len(offs)] for i in range(len(clips))]
    if not path.exists():
      long_mat.make_real_concat(path, clips, o, progress=False)
    truth = json.loads(path.with_name(path.stem + ".truth.json").read_text())
    r = _analyse(str(path), checkpoint, face_frame, extra)
    for piece in truth["pieces"]:
      segs = [s for s in r["segments"] if s["measurable"] and piece["start_s"] <= s["start_s"]
              and s["end_s"] <= piece["end_s"]]
      if segs:
        rows.setdefault(piece["source"], {})[name] = (
            float(np.median([s["offset_ms"] for s in segs])), piece["offset_ms"],
            float(np.median([s["offset_frames"] for s in segs])))
  errs, frames_ok, per = [], 0, []
  for src, d in rows.items():
    if len(d) < 2:
      continue
    (ma, ta, fa), (mb, tb, fb) = d["A"], d["B"]
    err = (ma - mb) - (ta - tb)
    errs.append(abs(err))
    frames_ok += abs((fa - fb) * 40.0 - (ta - tb)) <= 20.0 + 1e-6
    per.append({"clip": src.split("real_clips/")[-1], "true_diff_ms": ta - tb,
                "measured_diff_ms": round(ma - mb, 1)})
  e = np.array(errs) if errs else np.array([np.nan])
  return {"video": "real_pair", "clips_scored": len(errs), "of_clips": len(clips),
          "diff_frames_right": frames_ok,
          "diff_ms_err_median": round(float(np.median(e)), 2),
          "diff_ms_err_p95": round(float(np.percentile(e, 95)), 2), "per_clip": per}


def _analyse(path: str, checkpoint: str | None, face_frame: str, extra: dict) -> dict:
  """Runs one analysis in a child process; returns its result JSON."""
  code = ("import json,sys; from modeformer_jax import sync_qc; "
          "o=analysis.AnalysisOptions(face_frame=sys.argv[3], **json.loads(sys.argv[4])); "
          "r=analysis.Analyzer(sys.argv[2] or None, o).analyze(sys.argv[1]); "
          "[t.pop('thumbnail', None) for t in r['tracks']]; print('@@'+json.dumps(r))")
  out = subprocess.run([sys.executable, "-c", code, path, checkpoint or "", face_frame,
                        json.dumps(extra)], capture_output=True, text=True, check=False)
  for line in out.stdout.splitlines():
    if line.startswith("@@"):
      return json.loads(line[2:])
  raise RuntimeError(f"analysis of {path} failed:\n{out.stderr[-3000:]}")


def _truth_at(truth: dict, t: float) -> tuple[float, str, int]:
  for i, p in enumerate(truth["pieces"]):
    if p["start_s"] <= t < p["end_s"] or (i == len(truth["pieces"]) - 1 and t == p["end_s"]):
      frac = (t - p["start_s"]) / max(1e-9, p["end_s"] - p["start_s"])
      off = p["offset_ms_start"] + frac * (p["offset_ms_end"] - p["offset_ms_start"])
      return off, p["kind"], i
  return float("nan"), "none", -1


def score(result: dict, truth: dict) -> dict:
  """Per-segment comparison with the truth (see the module docstring)."""
  frame_ok, errs, silent_ok, silent_n, measured, must = 0, [], 0, 0, 0, 0
  near_half: list[float] = []
  for s in result["segments"]:
    _, k0, i0 = _truth_at(truth, s["start_s"])
    _, k1, i1 = _truth_at(truth, s["end_s"] - 1e-6)
    if i0 != i1 or i0 < 0:
      continue
    if k0 != "speech":
      silent_n += 1
      silent_ok += not s["measurable"]
      continue
    must += 1
    if not s["measurable"]:
      continue
    measured += 1
    true_ms, _, _ = _truth_at(truth, (s["start_s"] + s["end_s"]) / 2)
    right = abs(s["offset_frames"] * 40.0 - true_ms) <= 20.0 + 1e-6
    frame_ok += right
    if not right:   # how close the truth is to a half frame, where either answer is near
      x = (true_ms - 20.0) % 40.0
      near_half.append(min(x, 40.0 - x))
    errs.append(abs(s["offset_ms"] - true_ms))
  e = np.array(errs) if errs else np.array([np.nan])
  out = {"speech_segments": must, "measured": measured, "frames_right": frame_ok,
         "frames_right_pct": round(100 * frame_ok / max(1, must), 1),
         "ms_err_median": round(float(np.median(e)), 2),
         "ms_err_p95": round(float(np.percentile(e, 95)), 2),
         "unmeasurable_right": f"{silent_ok}/{silent_n}",
         # Largest distance (ms) of a wrong-frame segment's truth from a half frame.
         "wrong_frames_max_ms_from_half": round(max(near_half), 2) if near_half else None}
  if truth.get("drift_ppm"):
    true_slope = truth["drift_ppm"] * 1e-3 * 60
    got = result["drift"]["ms_per_min"]
    out["drift_true_ms_per_min"] = round(true_slope, 2)
    out["drift_ms_per_min"] = got
    out["drift_verdict"] = result["drift"]["verdict"]
    out["drift_rel_err"] = None if got is None else round(abs(got - true_slope) / true_slope, 3)
  if "speaker_side" in truth:
    tracks = {t["id"]: t for t in result["tracks"]}
    x0, _, x1, _ = truth["speaker_box"]
    chosen = [s["track"] for s in result["segments"] if s["measurable"]]
    right = sum(x0 <= (tracks[c]["mouth_xy"] or [-1])[0] < x1 for c in chosen)
    out["speaker_chosen"] = f"{right}/{len(chosen)}"
  return out


def rss_trace(path: str, out: str | None, every_s: float = 20.0) -> None:
  """Analyses ``path`` in this process, sampling resident memory (VmRSS) and the input
  position every ``every_s`` s; each sample is printed and appended to ``out`` (JSON lines)
  as it is taken, so a run stopped early keeps its trace."""
  import threading

  from modeformer_jax import analysis, media
  pos = {"frames": 0}
  real = media.Reader.chunks

  def counting(self):
    for ch in real(self):
      pos["frames"] = ch.start + len(ch.frames)
      yield ch

  media.Reader.chunks = counting
  done = threading.Event()
  t0 = time.perf_counter()

  def sample() -> None:
    while not done.wait(every_s):
      rss = next(int(line.split()[1]) for line in open("/proc/self/status")
                 if line.startswith("VmRSS")) / 1024
      row = {"wall_s": round(time.perf_counter() - t0, 1),
             "input_min": round(pos["frames"] / 25 / 60, 3), "rss_mb": round(rss, 1)}
      print(json.dumps(row), flush=True)
      if out:
        with open(out, "a") as f:
          f.write(json.dumps(row) + "\n")

  threading.Thread(target=sample, daemon=True).start()
  r = analysis.Analyzer(None).analyze(path)
  done.set()
  row = {"final": True, "input_min": r["duration_s"] / 60, **r["timing"]}
  print(json.dumps(row), flush=True)
  if out:
    with open(out, "a") as f:
      f.write(json.dumps(row) + "\n")


def _machine() -> str:
  return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
  ap = cli.parser(__name__, __doc__.split("\n\n")[0])
  ap.add_argument("--material", help="folder written by data_prep.synthetic.long")
  ap.add_argument("--only", default="", help="comma-separated video stems to run")
  ap.add_argument("--checkpoint", default=None, help="model (default: the shipped one)")
  ap.add_argument("--face_frame", default="lrs2")
  ap.add_argument("--speed", default="", help="sizes for the real-time factor, e.g. 720p")
  ap.add_argument("--rss", default="", help="minutes for peak RSS, e.g. 1,10,60")
  ap.add_argument("--size", default="640x360", help="frame size of the --rss material")
  ap.add_argument("--minutes", type=float, default=0.5, help="length of --speed material")
  ap.add_argument("--workdir", default="/tmp/bench_sync_qc")
  ap.add_argument("--real_pair", default=None, help="real_clips folder: relative offsets")
  ap.add_argument("--rss_trace", default=None, help="a long video: RSS against input time")
  ap.add_argument("--window", type=float, default=5.0, help="segment length, s")
  ap.add_argument("--out", default=None, help="write the rows as JSON here")
  args = ap.parse_args(argv)
  rows = []
  extra = {"window_s": args.window}
  print(f"machine: {_machine()}")
  if args.rss_trace:
    rss_trace(args.rss_trace, args.out)
    return 0
  if args.material:
    only = set(filter(None, args.only.split(",")))
    for tp in sorted(pathlib.Path(args.material).glob("*.truth.json")):
      truth = json.loads(tp.read_text())
      video = tp.with_name(truth["video"])
      if (only and video.stem not in only) or video.stem.startswith("long_"):
        continue
      r = _analyse(str(video), args.checkpoint, args.face_frame, extra)
      row = {"video": video.name, "duration_s": r["duration_s"], **score(r, truth),
             "global_ms": r["global"]["offset_ms"], "rtf": r["timing"]["realtime_factor"],
             "peak_rss_mb": r["timing"]["peak_rss_mb"]}
      print(json.dumps(row), flush=True)
      rows.append(row)
  if args.real_pair:
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    row = real_pair(pathlib.Path(args.real_pair), work, args.checkpoint, args.face_frame, extra)
    print(json.dumps(row), flush=True)
    rows.append(row)
  if args.speed or args.rss:
    from data_prep.synthetic import long as long_mat
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    sizes = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
    jobs = [(s, args.minutes, sizes[s]) for s in filter(None, args.speed.split(","))]
    w, h = (int(v) for v in args.size.split("x"))
    jobs += [(f"{m}min", float(m), (w, h)) for m in filter(None, args.rss.split(","))]
    for name, minutes, size in jobs:
      path = work / f"bench_{size[0]}x{size[1]}_{minutes:g}min.mp4"
      if not path.exists():
        long_mat.make_benchmark_video(path, minutes=minutes, size=size, progress=False)
      t = time.perf_counter()
      r = _analyse(str(path), args.checkpoint, args.face_frame, {})
      row = {"video": path.name, "size": f"{size[0]}x{size[1]}", "minutes": minutes,
             "rtf": r["timing"]["realtime_factor"], "wall_s": round(time.perf_counter() - t, 1),
             "peak_rss_mb": r["timing"]["peak_rss_mb"],
             "global_ms": r["global"]["offset_ms"]}
      print(json.dumps(row), flush=True)
      rows.append(row)
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps({"machine": _machine(), "rows": rows},
                                                 indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
