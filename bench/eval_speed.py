"""Evaluation speed: embed-once protocol vs re-embedding the audio for every offset.

  python -m bench.eval_speed --data_dir demo_out/prepared --split test --variant tiny

Both paths score the same clips against offsets -15..+15 with the same (untrained) model.
"embed once" is ``embedding.evaluate``: P video and P audio windows per clip are embedded
once and the 31 offsets are dot products. "per offset" re-runs the audio encoder for each
of the 31 offsets, as a model that mixes modalities would have to. The two score matrices
are compared, then clips/s of each is printed.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from bench.common import machine
from modeformer_jax import cli
from modeformer_jax.evaluation import embedding, protocol
from modeformer_jax.model import windows
from modeformer_jax.model.models import MODEL_VARIANTS, ModEFormer, ModelConfig


def per_offset_scores(emb: embedding.Embedder, lips: np.ndarray, mel: np.ndarray,
                      max_offset: int = 15) -> np.ndarray:
  """Scores [P, 31] with the audio encoder re-run for every offset (the slow baseline)."""
  vw, aw = windows.clip_windows(lips, mel)
  p = vw.shape[0]
  v = emb.video(vw)
  v /= np.linalg.norm(v, axis=-1, keepdims=True)
  out = np.full((p, 2 * max_offset + 1), -np.inf, np.float32)
  for c, d in enumerate(range(-max_offset, max_offset + 1)):
    idx = np.arange(p) + d
    ok = (idx >= 0) & (idx < p)
    if ok.any():
      a = emb.audio(aw[idx[ok]])
      a /= np.linalg.norm(a, axis=-1, keepdims=True)
      out[ok, c] = np.sum(v[ok] * a, axis=-1)
  return out


def main() -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--split", default="test")
  parser.add_argument("--variant", default="tiny")
  parser.add_argument("--max_clips", type=int, default=12)
  args = parser.parse_args()
  print("machine:", machine())
  model = ModEFormer(ModelConfig.from_mapping(MODEL_VARIANTS[args.variant]))
  params = model.init(jax.random.key(0))
  emb = embedding.Embedder(model, params, chunk=256)
  clips = list(embedding.record_clips(args.data_dir, args.split, max_clips=args.max_clips))
  embedding.evaluate(model, params, clips[:1], embedder=emb)  # compile
  per_offset_scores(emb, *clips[0][1:])
  t = time.perf_counter()
  fast = embedding.score_clips(emb, clips)
  fast = [s for _, s, _ in fast]
  t_fast = time.perf_counter() - t
  t = time.perf_counter()
  slow = [per_offset_scores(emb, lips, mel) for _, lips, mel in clips]
  t_slow = time.perf_counter() - t
  diff = max(float(np.nanmax(np.abs(np.where(np.isfinite(a), a - b, 0)))) for a, b in zip(fast, slow))
  frames = sum(c[1].shape[0] for c in clips)
  print(f"{len(clips)} clips, {frames} frames, model {args.variant}; max |score difference| {diff:.2e}")
  print(f"embed once : {t_fast:7.2f} s  {len(clips) / t_fast:7.2f} clips/s")
  print(f"per offset : {t_slow:7.2f} s  {len(clips) / t_slow:7.2f} clips/s")
  print(f"speed-up   : {t_slow / t_fast:.1f}x")
  res = protocol.evaluate_scores(fast, lengths=(5,))
  print(f"(untrained model accuracy at 5 frames: {res['accuracy'][5]:.3f})")


if __name__ == "__main__":
  main()
