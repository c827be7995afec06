"""Seed keys and the random helpers every part draws from.

Each random draw of a dataset with seed ``s`` comes from its own ``SeedSequence`` key:

  [s, speaker, 0]              the speaker (``speakers.make_speaker``)
  [s, speaker, 1, video]       the scene of one video (``speakers.make_scene``)
  [s, speaker, 2, clip]        a clip's content (``clip.render_clip``; the key plus the margin)
  [s, speaker, 2, clip, 99]    a clip's length (``dataset.generate_dataset``)

so the same seed gives the same arrays, and the same mp4 bytes, whatever the number of worker
processes and the order they run in.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


def keyed_rng(*key: int) -> np.random.Generator:
  """A generator seeded from ``SeedSequence(key)``."""
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def seed_key(seed: int | np.integer | Iterable[int]) -> list[int]:
  """``seed`` (an int or a sequence of ints) as a list of ints."""
  if isinstance(seed, (int, np.integer)):
    return [int(seed)]
  return [int(s) for s in seed]


def smooth_noise(rng: np.random.Generator, n: int, knots_per_s: float, sr: float
                 ) -> np.ndarray:
  """Smooth random curve in about [-1, 1]: cosine-interpolated random knots."""
  k = int(n / sr * knots_per_s) + 3
  vals = rng.uniform(-1, 1, k)
  pos = np.arange(n) / sr * knots_per_s
  i = np.floor(pos).astype(np.int64)
  w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
  return (vals[i] * (1 - w) + vals[i + 1] * w).astype(np.float32)
