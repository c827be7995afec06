"""GRID sync accuracy split into speech and silence positions, from GRID's word alignments.

  python -m bench.grid_speech --checkpoint runs/grid_s1 --data_dir data/grid_s1_prepared \\
      --split val --align_dir ../shared/data/grid_s1/align

GRID sentences are 3 s recordings in which the speaker talks for about half the time; the
rest is silence with a closed mouth, where every audio offset that keeps the audio window in
silence fits equally well. The standard protocol counts those positions too, so this prints
the same per-position accuracy (best offset within +-1 frame, clip length K averaging) pooled
over positions whose centre frame is inside a word, and over the rest. Not part of the
standard protocol: a diagnostic of where the errors are.
"""
from __future__ import annotations

import pathlib

import numpy as np
from tqdm import tqdm

from bench.common import machine
from modeformer_jax import cli
from modeformer_jax.analysis import detectors
from modeformer_jax.data import records
from modeformer_jax.evaluation import embedding, protocol

SILENCE = {"sil", "sp"}


def speech_frames(align_file: pathlib.Path, num_frames: int) -> np.ndarray:
  """bool [num_frames]: frames inside a word (GRID units: 1/1000 video frame)."""
  mask = np.zeros(num_frames, bool)
  for line in align_file.read_text().split("\n"):
    parts = line.split()
    if len(parts) == 3 and parts[2] not in SILENCE:
      lo, hi = int(parts[0]) / 1000.0, int(parts[1]) / 1000.0
      mask[int(np.floor(lo)):int(np.ceil(hi))] = True
  return mask


def main(argv: list[str] | None = None) -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--which", default="latest")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--split", default="val")
  parser.add_argument("--align_dir", required=True)
  args = parser.parse_args(argv)
  embedder = detectors.load_detector(args.checkpoint, which=args.which, chunk=256).embedder
  n = len(records.open_split(args.data_dir, args.split))
  hits = {k: {"speech": [], "silence": []} for k in protocol.CLIP_LENGTHS}
  speech_share = []
  for name, scores, reason in tqdm(embedding.score_clips(
      embedder, embedding.record_clips(args.data_dir, args.split)), total=n, desc="clips"):
    if scores is None:
      print(f"skipped {reason}")
      continue
    stem = pathlib.Path(name).stem
    p = scores.shape[0]
    speech = speech_frames(pathlib.Path(args.align_dir) / f"{stem}.align", p + 4)
    centre = speech[np.arange(p) + 2]
    speech_share.append(centre.mean())
    for k in protocol.CLIP_LENGTHS:
      ok = np.abs(protocol.best_offsets(scores, k)) <= 1
      hits[k]["speech"] += list(ok[centre])
      hits[k]["silence"] += list(ok[~centre])
  print(machine())
  print(f"{args.checkpoint} on {args.data_dir}:{args.split}; {len(speech_share)} clips; "
        f"{100 * np.mean(speech_share):.1f}% of positions have their centre frame in a word")
  print("| positions | " + " | ".join(f"{k} frames" for k in protocol.CLIP_LENGTHS) + " |")
  print("|---|" + "---:|" * len(protocol.CLIP_LENGTHS))
  for part in ("speech", "silence"):
    print(f"| {part} ({len(hits[5][part])}) | " +
          " | ".join(f"{100 * np.mean(hits[k][part]):.2f}" for k in protocol.CLIP_LENGTHS) + " |")
  every = {k: hits[k]["speech"] + hits[k]["silence"] for k in protocol.CLIP_LENGTHS}
  print(f"| all, pooled ({len(every[5])}) | " +
        " | ".join(f"{100 * np.mean(every[k]):.2f}" for k in protocol.CLIP_LENGTHS) + " |")


if __name__ == "__main__":
  main()
