"""The decoder is the floor: decode-only against plain ``detect`` and ``--qc`` on one file.

  python -m bench.decode_floor --work /tmp/floor --minutes 1,10

For each length, a 720p25 H.264 + AAC file of a real talking head (``--source``, an HDTF clip
of ``../shared/data/real_clips`` by default, looped and centred on a 1280x720 canvas) is
written once; then, in one process and one run, on the same file:

* decode only: ``media.Reader`` to RGB frames and 16 kHz audio (what any file tool must do),
  timed in every round;
* plain ``detect`` (``analysis.detect_file``) and ``--qc`` (``Analyzer.analyze``), warm (model
  loaded and compiled), with the time per stage of the analysis (``timing.stages_s``) and
  the CPU seconds (both cores); files of a minute or less in three rounds of decode only,
  plain, qc (then decode only, qc, plain), the fastest of each, so the machine's load
  weighs on both sides of the ratio (longer files: one round);
* cold start: ``python -m modeformer_jax.detect FILE`` and ``--qc`` as a person runs them,
  wall time, on the shortest file; the start-up cost is that minus the warm analysis.

Throughput is video seconds per wall second; "analysis share of decode rate" is the warm
analysis throughput over the decode-only throughput (the issue's target: >= 50%).
"""
from __future__ import annotations

import json
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import modeformer_jax  # noqa: F401 - before numpy, as in the CLI (its OpenBLAS setting)
import numpy as np

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SOURCE = SHARED / "real_clips" / "hdtf" / "WDA_KatieHill_000.mp4"


def make_file(source: pathlib.Path, out: pathlib.Path, minutes: float,
              size: tuple[int, int] = (1280, 720)) -> pathlib.Path:
  """``source`` looped to ``minutes`` on a ``size`` canvas, written in chunks."""
  import cv2

  from data_prep.synthetic.long import Mp4StreamWriter, fit_box
  from modeformer_jax import media
  path = out / f"floor_{minutes:g}min_{size[0]}x{size[1]}.mp4"
  if path.exists():
    return path
  dec = media.decode(str(source))
  x0, y0, x1, y1 = fit_box(dec.frames.shape[2], dec.frames.shape[1], *size)
  w, h = x1 - x0, y1 - y0
  canvas = np.zeros((len(dec.frames), size[1], size[0], 3), np.uint8)
  for i, f in enumerate(dec.frames):
    canvas[i, y0:y0 + h, x0:x0 + w] = cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC)
  per = len(dec.frames) * 640
  audio = np.pad(dec.audio[:per], (0, max(0, per - dec.audio.size)))
  total = int(round(minutes * 60 * 25))
  with Mp4StreamWriter(path, size[0], size[1]) as wr:
    done = 0
    while done < total:
      n = min(len(canvas), total - done)
      wr.write(canvas[:n], audio[:n * 640])
      done += n
  return path


def _cpu_s() -> float:
  """CPU seconds of this process so far, all threads (user + system)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def decode_only(path: pathlib.Path) -> dict:
  from modeformer_jax import media
  t0, c0 = time.perf_counter(), _cpu_s()
  frames = 0
  reader = media.Reader(str(path))
  for ch in reader.chunks():
    frames += len(ch.frames)
  wall = time.perf_counter() - t0
  return {"wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - c0, 2), "video_s": frames / 25,
          "x_realtime": round(frames / 25 / wall, 2)}


def warm(analyzer, path: pathlib.Path, rounds: int = 1) -> dict:
  """Decode only, plain ``detect`` and ``--qc`` on ``path``, ``rounds`` times, each round
  decode first and then plain, qc or qc, plain (neither always first); the fastest of each.
  The decoder is timed in every round beside the analysis, so a shared machine's load
  moves numerator and denominator alike."""
  from modeformer_jax import analysis
  runs = {"plain": [], "qc": []}
  decodes = []
  order = [("plain", "qc"), ("qc", "plain")]
  for i in range(rounds):
    decodes.append(decode_only(path))
    for name in order[i % 2]:
      t0, c0 = time.perf_counter(), _cpu_s()
      if name == "plain":
        plain = analysis.detect_file(analyzer, path)
      else:
        qc = analyzer.analyze(path)
      runs[name].append((time.perf_counter() - t0, _cpu_s() - c0))
  (pw, pc), (qw, qcpu) = min(runs["plain"]), min(runs["qc"])
  video_s = qc["duration_s"]
  return {"plain_wall_s": round(pw, 2), "qc_wall_s": round(qw, 2),
          "plain_cpu_s": round(pc, 2), "qc_cpu_s": round(qcpu, 2), "rounds": rounds,
          "plain_x_realtime": round(video_s / pw, 2),
          "qc_x_realtime": round(video_s / qw, 2),
          "plain_offset_ms": plain["offset_ms"], "qc_offset_ms": qc["global"]["offset_ms"],
          "stages_s": qc["timing"]["stages_s"],
          "decode": min(decodes, key=lambda d: d["wall_s"]),
          "decode_walls_s": [d["wall_s"] for d in decodes]}


def cold(path: pathlib.Path, work: pathlib.Path) -> dict:
  out = {}
  for name, extra in (("plain", []), ("qc", ["--qc", "--no_report"])):
    # A fresh folder: --qc skips files an earlier run finished (resume).
    shutil.rmtree(work / f"cold_{name}", ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modeformer_jax.detect", str(path), "--out",
                    str(work / f"cold_{name}"), "--json", *extra], check=True,
                   capture_output=True)
    out[f"{name}_wall_s"] = round(time.perf_counter() - t0, 2)
  return out


def main(argv: list[str] | None = None) -> int:
  from modeformer_jax import analysis, cli
  ap = cli.parser(__name__, __doc__.split("\n\n")[0])
  ap.add_argument("--work", required=True)
  ap.add_argument("--minutes", default="1,10", help="comma-separated file lengths")
  ap.add_argument("--source", default=str(DEFAULT_SOURCE))
  analysis.add_flags(ap.add_argument_group("the analysis (detect's options)"))
  ap.add_argument("--no_cold", action="store_true")
  ap.add_argument("--out", default=None, help="JSON of every figure")
  a = ap.parse_args(argv)
  from bench.common import machine
  work = pathlib.Path(a.work)
  work.mkdir(parents=True, exist_ok=True)
  print(machine())
  try:
    options = analysis.options_from_flags(a)
  except ValueError as e:
    ap.error(str(e))
  analyzer = analysis.Analyzer(options=options)
  rows = []
  lengths = [float(m) for m in a.minutes.split(",")]
  for minutes in lengths:
    path = make_file(pathlib.Path(a.source), work, minutes)
    if not rows:   # compile and start MediaPipe before anything is timed
      analysis.detect_file(analyzer, make_file(pathlib.Path(a.source), work, 0.2))
    row = {"minutes": minutes, "file": path.name}
    row["analysis"] = warm(analyzer, path, rounds=3 if minutes <= 1 else 1)
    row["decode"] = row["analysis"].pop("decode")
    row["analysis_share_of_decode_rate"] = round(
        row["analysis"]["qc_x_realtime"] / row["decode"]["x_realtime"], 3)
    if not a.no_cold and minutes == min(lengths):
      row["cold"] = cold(path, work)
      row["cold"]["startup_s"] = round(row["cold"]["plain_wall_s"]
                                       - row["analysis"]["plain_wall_s"], 2)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    rows.append(row)
    d, an = row["decode"], row["analysis"]
    print(f"\n{path.name}: decode only {d['wall_s']} s ({d['x_realtime']}x real time, "
          f"{d['cpu_s']} CPU s); "
          f"plain detect {an['plain_wall_s']} s ({an['plain_x_realtime']}x); --qc "
          f"{an['qc_wall_s']} s ({an['qc_x_realtime']}x, {an['qc_cpu_s']} CPU s); analysis at "
          f"{row['analysis_share_of_decode_rate']:.0%} of the decode rate")
    total = sum(an["stages_s"].values())
    print("  where --qc's time goes: " + ", ".join(
        f"{k} {v:.1f} s ({v / an['qc_wall_s']:.0%})" for k, v in
        sorted(an["stages_s"].items(), key=lambda kv: -kv[1]))
        + f", other {an['qc_wall_s'] - total:.1f} s")
    if "cold" in row:
      c = row["cold"]
      print(f"  cold: detect {c['plain_wall_s']} s, --qc {c['qc_wall_s']} s (start-up "
            f"{c['startup_s']} s)")
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
