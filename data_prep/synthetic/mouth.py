"""Mouth motion from the speech plan: lip opening and rounding, per millisecond and per frame.

The lips open with the loudness of each vowel (open vowels open more), close for p/b/m and
pauses, narrow and protrude for rounded vowels (o, u, sh) and spread for i/s. The tracks are
smoothed with centred windows, so the mouth neither leads nor lags the sound.
"""
from __future__ import annotations

import numpy as np

from data_prep.synthetic.constants import MS_PER_FRAME
from data_prep.synthetic.plan import ATTACK, RELEASE, Segment, envelope


def articulator_tracks(segs: list[Segment], t0: float, num_ms: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Mouth opening and rounding at 1 kHz over ``[t0, t0 + num_ms / 1000)``, smoothed.

  The vowel opening carries the same attack/release shape as the vowel's loudness, so the
  mouth opens and closes with the sound. Smoothing is centred (no lag).
  """
  opening = np.zeros(num_ms, np.float32)
  rounding = np.zeros(num_ms, np.float32)
  for s in segs:
    a = int(round((s.start - t0) * 1000))
    b = min(num_ms, int(round((s.end - t0) * 1000)))
    if b <= max(a, 0):
      continue
    n = b - a
    shape = np.ones(n, np.float32)
    if s.kind == "vowel":
      # Lips are already partly open entering a vowel, and close less than the sound decays.
      shape = 0.35 + 0.65 * envelope(n, 1000, ATTACK["vowel"], RELEASE["vowel"])
    lo = max(a, 0)
    opening[lo:b] = (s.open * shape)[lo - a:]
    rounding[lo:b] = s.round
  kernel = np.hanning(33)[1:-1]
  kernel /= kernel.sum()
  opening = np.convolve(opening, kernel, mode="same").astype(np.float32)
  rounding = np.convolve(rounding, np.hanning(63)[1:-1] / np.hanning(63)[1:-1].sum(),
                         mode="same").astype(np.float32)
  return opening, rounding


def frame_tracks(segs: list[Segment], t0: float, margin: int, num_frames: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame opening and rounding ``[num_frames]`` of a clip whose plan starts at ``t0``.

  The plan covers ``margin`` frames before and after the clip; frame ``t``'s mouth is the
  track averaged over the frame's own interval ``[t / 25, (t + 1) / 25)`` s.
  """
  total = num_frames + 2 * margin
  opening, rounding = articulator_tracks(segs, t0, total * MS_PER_FRAME)
  lo, hi = margin * MS_PER_FRAME, (margin + num_frames) * MS_PER_FRAME
  open_f = opening[lo:hi].reshape(num_frames, MS_PER_FRAME).mean(1)
  round_f = rounding[lo:hi].reshape(num_frames, MS_PER_FRAME).mean(1)
  return open_f, round_f
