"""Offline preparation throughput and size: video seconds per wall second per core, bytes/hour.

  .venv/bin/python -m bench.prepare                       # 24 synthetic clips, 2 workers
  .venv/bin/python -m bench.prepare --clips 200 --workers 16
  .venv/bin/python -m bench.prepare --src ../shared/data/real_clips/vox2_crop --layout folder \\
      --feature_layout vox2
  .venv/bin/python -m bench.prepare --runners local,DirectRunner --codecs jpeg   # Beam vs local

Prepares the same inputs once per runner and lip codec with ``data_prep.prepare`` into a
temporary folder and prints, per run: seconds of video prepared per wall second, the same
per worker process ("per core": workers are single-threaded apart from the video decoder),
and shard bytes on disk per hour of video. Wall time includes starting the worker processes
(and, for Beam, building and running the pipeline). With more than one runner it also
checks that every runner wrote byte-identical shards.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
import time

from bench.common import machine
from modeformer_jax import cli
from modeformer_jax.data import records
from data_prep import prepare as prep
from data_prep import synthetic


def run(src: pathlib.Path, layout: str, out: pathlib.Path, codec: str, workers: int,
        feature_layout: str | None, runner: str = "local") -> dict:
  """One timed preparation; returns its figures."""
  t0 = time.perf_counter()
  report = prep.prepare(layout, src, out, workers=workers, lip_codec=codec,
                        feature_layout=feature_layout, progress=False, runner=runner)
  wall = time.perf_counter() - t0
  manifest = records.read_manifest(out)
  seconds = sum(s["seconds"] for s in manifest["splits"].values())
  shard_bytes = sum((out / n).stat().st_size for s in manifest["splits"].values()
                    for n in s["shards"])
  return {"runner": runner, "codec": codec, "clips": report["written"], "skipped": report["skipped"],
          "video_s": seconds, "wall_s": wall, "video_s_per_s": seconds / wall,
          "per_core": seconds / wall / max(1, workers),
          "gb_per_hour": shard_bytes / seconds * 3600 / 1e9}


def main() -> None:
  p = cli.parser(__name__, __doc__.split("\n\n")[0])
  p.add_argument("--clips", type=int, default=24, help="synthetic clips (without --src)")
  p.add_argument("--seconds", default="3,5", help="synthetic clip length range")
  p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
  p.add_argument("--src", default=None, help="prepare this dataset root instead")
  p.add_argument("--layout", default="lrs2")
  p.add_argument("--feature_layout", default=None)
  p.add_argument("--runners", default="local",
                 help="comma-separated: local and/or Beam runners (DirectRunner needs '.[beam]')")
  p.add_argument("--codecs", default="jpeg,raw")
  a = p.parse_args()
  print(f"machine: {machine()}")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    if a.src is None:
      lo, hi = (float(v) for v in a.seconds.split(","))
      src = tmp / "synthetic"
      # Speakers x clips = a.clips (2 test and 1 val speaker come from it too).
      per = 4
      speakers = max(1, -(-a.clips // per))
      t0 = time.perf_counter()
      synthetic.generate_dataset(src, num_speakers=max(1, speakers - 3),
                                 num_test_speakers=min(2, speakers - 1),
                                 num_val_speakers=min(1, max(0, speakers - 3)),
                                 clips_per_speaker=per, min_seconds=lo, max_seconds=hi,
                                 workers=a.workers, progress=False)
      print(f"generated {speakers * per} synthetic clips in {time.perf_counter() - t0:.1f} s")
      layout = "lrs2"
    else:
      src, layout = pathlib.Path(a.src), a.layout
    src_bytes = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    print(f"source: {src} ({layout}), {src_bytes / 1e6:.1f} MB of files; workers={a.workers}")
    print(f"{'runner':12} {'codec':6} {'clips':>5} {'video s':>8} {'wall s':>7} "
          f"{'video s/s':>9} {'per core':>8} {'GB/hour':>8}  skipped")
    runners = a.runners.split(",")
    for codec in a.codecs.split(","):
      for runner in runners:
        r = run(src, layout, tmp / f"out_{codec}_{runner}", codec, a.workers,
                a.feature_layout, runner)
        print(f"{runner:12} {codec:6} {r['clips']:5d} {r['video_s']:8.1f} {r['wall_s']:7.1f} "
              f"{r['video_s_per_s']:9.1f} {r['per_core']:8.1f} {r['gb_per_hour']:8.3f}  "
              f"{r['skipped'] or '-'}", flush=True)
      if len(runners) > 1:
        shards = [sorted((tmp / f"out_{codec}_{rn}").glob("*.array_record-?????-of-?????"))
                  for rn in runners]
        same = all([f.read_bytes() for f in s] == [f.read_bytes() for f in shards[0]]
                   and [f.name for f in s] == [f.name for f in shards[0]] for s in shards)
        print(f"{codec}: shards of {', '.join(runners)} byte-identical: {same} "
              f"({len(shards[0])} shards)")


if __name__ == "__main__":
  main()
