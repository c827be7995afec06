"""The speech plan: one timed list of segments that drives both the audio and the mouth.

Random syllables (an optional consonant onset, a vowel, an optional coda) form words of 1-3
syllables, separated by short gaps and, more rarely, longer pauses: about 3-5 syllables per
second. Each segment carries its loudness (``amp``), the mouth opening it aims at and the lip
rounding; ``envelope`` with ``ATTACK``/``RELEASE`` gives the fade-in and fade-out that the
sound (``speech``) and the lips (``mouth``) share, so the mouth opens and closes with the sound.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# Vowels: formants F1-F3 (Hz, adult male reference, scaled per speaker), how far the mouth opens
# (also sets loudness: open vowels are louder) and lip rounding (-: spread, +: rounded).
VOWELS = {
    "a": ((730, 1090, 2440), 1.00, 0.0),
    "ae": ((660, 1720, 2410), 0.85, -0.1),
    "uh": ((640, 1190, 2390), 0.65, 0.0),
    "e": ((530, 1840, 2480), 0.60, -0.2),
    "i": ((270, 2290, 3010), 0.30, -0.35),
    "o": ((570, 840, 2410), 0.70, 0.6),
    "u": ((300, 870, 2240), 0.30, 1.0),
}
_VOWEL_NAMES = tuple(VOWELS)
_VOWEL_P = np.array([0.22, 0.14, 0.14, 0.16, 0.14, 0.1, 0.1])
_ONSETS = ("", "p", "b", "m", "t", "d", "k", "s", "sh", "f", "h", "n", "l")
_ONSET_P = np.array([0.2, 0.08, 0.07, 0.09, 0.09, 0.05, 0.07, 0.09, 0.04, 0.05, 0.05, 0.06, 0.06])
_CODAS = ("", "m", "n", "s", "t", "k")
_CODA_P = np.array([0.62, 0.08, 0.1, 0.08, 0.07, 0.05])

# Fade-in and fade-out (seconds) of each sounding segment kind.
ATTACK = {"vowel": 0.025, "liquid": 0.02, "nasal": 0.015, "noise": 0.012, "burst": 0.002,
          "closure": 0.01}
RELEASE = {"vowel": 0.04, "liquid": 0.02, "nasal": 0.02, "noise": 0.02, "burst": 0.01,
           "closure": 0.01}


@dataclasses.dataclass
class Segment:
  """One stretch of the plan: a vowel, a consonant's part, or a pause."""
  kind: str
  start: float               # seconds on the clip clock (may be negative: the margin)
  end: float
  amp: float = 0.0           # audio level
  open: float = 0.0          # mouth opening target (fraction of max_open)
  round: float | None = None  # lip rounding; None: take the next vowel's (anticipation)
  formants: tuple = ()       # vowel / liquid formants, Hz
  band: tuple = ()           # noise band, Hz


def envelope(n: int, sr: float, attack: float, release: float) -> np.ndarray:
  """Raised-cosine attack and release over ``n`` samples at rate ``sr``."""
  env = np.ones(n, np.float32)
  na, nr = min(n, max(1, int(attack * sr))), min(n, max(1, int(release * sr)))
  env[:na] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(na) + 0.5) / na)
  env[n - nr:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(nr) + 0.5) / nr)
  return env


def _add(segs: list, t: float, dur: float, kind: str, **kw) -> float:
  segs.append(Segment(kind, t, t + dur, **kw))
  return t + dur


def _consonant(segs: list, t: float, c: str, r: np.random.Generator, rate: float) -> float:
  u = lambda lo, hi: r.uniform(lo, hi) / rate  # noqa: E731
  if c in ("p", "b"):
    t = _add(segs, t, u(0.045, 0.08), "closure", open=0.0, round=0.0,
             amp=0.05 if c == "b" else 0.0)
    t = _add(segs, t, u(0.012, 0.02), "burst", amp=0.45, open=0.12, band=(400, 6000))
    if c == "p":
      t = _add(segs, t, u(0.02, 0.04), "noise", amp=0.12, open=0.3, band=(800, 5000))
  elif c in ("t", "d", "k"):
    t = _add(segs, t, u(0.04, 0.07), "closure", open=0.1, amp=0.05 if c == "d" else 0.0)
    band = (3000, 7000) if c != "k" else (1200, 4000)
    t = _add(segs, t, u(0.012, 0.025), "burst", amp=0.4, open=0.18, band=band)
  elif c == "s":
    t = _add(segs, t, u(0.08, 0.13), "noise", amp=0.22, open=0.1, round=-0.3, band=(4000, 7500))
  elif c == "sh":
    t = _add(segs, t, u(0.08, 0.12), "noise", amp=0.25, open=0.14, round=0.7, band=(1800, 4500))
  elif c == "f":
    t = _add(segs, t, u(0.07, 0.11), "noise", amp=0.09, open=0.06, band=(1000, 7000))
  elif c == "h":
    t = _add(segs, t, u(0.04, 0.07), "noise", amp=0.1, open=None, band=(500, 4000))
  elif c in ("m", "n"):
    t = _add(segs, t, u(0.06, 0.1), "nasal", amp=0.16, open=0.0 if c == "m" else 0.12,
             round=0.0 if c == "m" else None)
  elif c == "l":
    t = _add(segs, t, u(0.05, 0.08), "liquid", amp=0.3, open=0.25, formants=(360, 1100, 2700))
  return t


def plan_speech(rng: np.random.Generator, t0: float, t1: float, rate: float = 1.0
                ) -> list[Segment]:
  """Random syllables, words and pauses covering ``[t0, t1)`` seconds without gaps."""
  segs: list[Segment] = []
  t = _add(segs, t0, rng.uniform(0.0, 0.3), "pause")
  while t < t1:
    for _ in range(int(rng.integers(1, 4))):
      stress = rng.uniform(0.5, 1.0)
      t = _consonant(segs, t, _ONSETS[rng.choice(len(_ONSETS), p=_ONSET_P)], rng, rate)
      v = _VOWEL_NAMES[rng.choice(len(_VOWEL_NAMES), p=_VOWEL_P)]
      formants, opening, rounding = VOWELS[v]
      # Each token varies a little around its vowel (a more open one has a higher F1), so
      # neighbouring syllables rarely look or sound exactly alike.
      oj, fj = rng.uniform(0.85, 1.15), rng.uniform(0.94, 1.06)
      opening = min(1.0, opening * oj)
      formants = (formants[0] * fj * oj ** 0.5, formants[1] * fj, formants[2] * fj)
      t = _add(segs, t, rng.uniform(0.07, 0.16) / rate, "vowel", formants=formants,
               open=opening * stress, round=rounding,
               amp=stress * (0.55 + 0.45 * opening))
      t = _consonant(segs, t, _CODAS[rng.choice(len(_CODAS), p=_CODA_P)], rng, rate)
    # Mostly short gaps between words: a 5-frame window inside a long silence carries no
    # sync information at all, so long pauses are kept rare and short.
    if rng.uniform() < 0.75:
      t = _add(segs, t, rng.uniform(0.0, 0.06), "pause")
    else:
      t = _add(segs, t, rng.uniform(0.12, 0.35), "pause")
  # Consonants take the mouth shape of the vowel they lead into (anticipatory coarticulation).
  next_round, next_open = 0.0, 0.3
  for s in reversed(segs):
    if s.kind == "vowel":
      next_round, next_open = s.round, s.open
    elif s.kind == "pause":
      next_round, next_open = 0.0, 0.3
    if s.round is None:
      s.round = next_round
    if s.open is None:
      s.open = 0.6 * next_open
  return segs
