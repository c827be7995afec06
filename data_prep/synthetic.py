"""Synthetic talking-mouth dataset in the LRS2 layout (the embedded default for demos and tests).

  python -m data_prep.synthetic --out demo_out/synthetic
  python -m data_prep.synthetic --out /tmp/syn --num_speakers 4 --num_test_speakers 2 \\
      --clips_per_speaker 2 --audio_offset_frames 3

Layout (what ``data_prep.prepare --layout lrs2`` reads)::

  OUT/mvlrs_v1/main/spk007v001/00003.mp4     h264 yuv420p 160x160 @ 25 fps + AAC 16 kHz mono
  OUT/mvlrs_v1/pretrain/                     empty (LRS2 has it; nothing synthetic goes there)
  OUT/{pretrain,train,val,test}.txt          one ``<id>/<nnnnn>`` per line, sorted
  OUT/speakers.json                          seed, audio offset, speaker parameters and splits
  OUT/synthetic_config.json                  the generation arguments (checked on resume)

``<id>`` is ``spk{speaker:03d}v{video:03d}``: a speaker's clips are grouped into videos of up to
``clips_per_video`` clips that share a scene (background, framing, lighting, noise, room).
Speakers ``0 .. num_speakers-1`` are train speakers, the next ``num_test_speakers`` are test
speakers and the next ``num_val_speakers`` validation speakers, so test and val speakers never
appear in training. With ``num_val_speakers=0`` the last clip of every train speaker is held
out as validation instead. ``speakers.json`` is written last: its presence marks a finished set. A rerun keeps the clips
already written (an interrupted run resumes); a rerun with other arguments is refused.

What a clip contains
  A speech plan (random syllables: optional consonant onset, a vowel, optional coda; words of
  1-3 syllables; short gaps and longer pauses; about 3-5 syllables per second) drives both
  modalities. Audio: a sawtooth glottal source with a wandering, declining pitch contour
  through a cascade of formant resonators (F1-F4 of the vowel, scaled per speaker), filtered
  noise for fricatives, bursts and aspiration, a low hum for nasals, a little room reverb and
  background noise at a per-video SNR. Video: a face filling the frame (LRS2-like: eyes at
  ~1/3 of the height, mouth at ~0.57), whose lips open with the loudness of each vowel (open
  vowels open more and are louder), close for p/b/m and pauses, narrow and protrude for
  rounded vowels (o, u, sh), spread for i/s; the jaw drops with the opening; eyes blink; the
  head moves a little and the light drifts slowly.

Alignment
  Sample ``n`` of a clip's audio plays at ``n / 16000`` s; video frame ``t`` covers
  ``[t / 25, (t + 1) / 25)`` s, i.e. samples ``640 t .. 640 t + 639``. The mouth in frame
  ``t`` is the articulator track (smoothed with a centred 31 ms window, so it neither leads
  nor lags) averaged over that interval. ``audio_offset_frames = k`` delays the audio by
  exactly ``640 k`` samples for every clip (positive: audio late, the sound of frame ``t``
  plays with frame ``t + k``); the speech plan extends ``max(32, |k|)`` frames beyond the clip
  on both sides, so the shifted audio is continuous speech rather than zero padding.

Determinism
  Speaker parameters come from ``SeedSequence([seed, speaker, 0])``, a video's scene from
  ``[seed, speaker, 1, video]`` and a clip from ``[seed, speaker, 2, clip]``: the same seed
  gives the same arrays and the same mp4 bytes whatever the number of worker processes. For
  ``|k| > 32`` the margin, hence the random stream, depends on ``k``. Byte-identical files
  need two precautions in ``write_mp4`` (both measured on this project's machine): our own
  RGB->YUV conversion instead of swscale's, and x264 without its AVX-512 code, which gave
  run-to-run differences for identical frames.
"""
from __future__ import annotations

import argparse
import dataclasses
import fractions
import functools
import json
import math
import multiprocessing
import os
import pathlib
import platform
import sys
import time

import av
import cv2
import numpy as np
import scipy.signal
import tqdm

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS    # 640
FRAME_SIZE = 160                          # LRS2 face crops are 160x160
FORMAT = "modeformer-synthetic-v1"
MIN_MARGIN_FRAMES = 32                    # speech-plan margin beyond each clip end

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


@dataclasses.dataclass
class SpeakerParams:
  """Everything fixed about one synthetic speaker (JSON-serialisable via ``asdict``)."""
  speaker: int
  # Face (pixels in the 160x160 frame, colours RGB 0-255).
  skin: tuple[float, float, float]
  hair: tuple[float, float, float]
  iris: tuple[float, float, float]
  lip: tuple[float, float, float]
  teeth: tuple[float, float, float]
  face_half_width: float
  face_half_height: float
  face_cy: float
  eye_y: float
  eye_dx: float
  brow_gap: float
  nose_y: float
  mouth_y: float
  mouth_half_width: float
  max_open: float            # lip gap at full opening
  upper_lip: float           # lip thickness
  lower_lip: float
  hair_style: int
  # Voice.
  f0: float                  # mean pitch, Hz
  f0_range: float            # pitch excursion, semitones
  formant_scale: float
  breathiness: float
  rate: float                # speaking-rate factor (1 = about 4 syllables/s)

  def asdict(self) -> dict:
    d = dataclasses.asdict(self)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

  @classmethod
  def from_dict(cls, d: dict) -> "SpeakerParams":
    names = {f.name for f in dataclasses.fields(cls)}
    missing = names - set(d)
    if missing:
      raise ValueError(f"speaker parameters lack {sorted(missing)}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                  if k in names})


@dataclasses.dataclass
class SceneParams:
  """What the clips of one video share: background, framing, lighting, room and noise."""
  bg_top: tuple[float, float, float]
  bg_bottom: tuple[float, float, float]
  clothes: tuple[float, float, float]
  dx: float
  dy: float
  scale: float
  gain: float
  light_x: float             # horizontal light gradient across the frame
  light_y: float
  snr_db: float
  noise_tilt: float          # 0 white hiss .. 1 low rumble
  reverb: float
  reverb_tau: float
  level: float               # peak level of the clip's audio

  def asdict(self) -> dict:
    d = dataclasses.asdict(self)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _rng(*key: int) -> np.random.Generator:
  return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _colour(rgb) -> tuple[float, float, float]:
  return tuple(float(np.clip(c, 0, 255)) for c in rgb)


def make_speaker(seed: int, speaker: int) -> SpeakerParams:
  """The parameters of speaker ``speaker`` of the dataset with ``seed``."""
  r = _rng(seed, speaker, 0)
  tone = r.uniform(0, 1)          # light to dark skin
  skin = np.array([236, 196, 166]) * (1 - tone) + np.array([104, 70, 50]) * tone
  skin = skin * r.uniform(0.94, 1.06, 3)
  # Lips redder and clearly darker than the skin, whatever the skin tone, so they stand out
  # in luma (the chroma planes are subsampled by yuv420p).
  lip = skin * np.array([0.78, 0.45, 0.5]) * r.uniform(0.75, 0.95)
  hair = r.choice([[30, 22, 18], [70, 45, 25], [120, 85, 50], [190, 160, 110], [90, 90, 90],
                   [15, 15, 18]]) * r.uniform(0.85, 1.15)
  iris = r.choice([[60, 40, 25], [50, 90, 130], [70, 110, 70], [40, 30, 25]])
  high = r.uniform() < 0.5        # voice register, correlated with size and formants
  f0 = r.uniform(165, 250) if high else r.uniform(90, 150)
  fs = r.uniform(1.08, 1.2) if high else r.uniform(0.9, 1.04)
  return SpeakerParams(
      speaker=int(speaker), skin=_colour(skin), hair=_colour(hair), iris=_colour(iris),
      lip=_colour(lip), teeth=_colour(np.array([238, 232, 215]) * r.uniform(0.9, 1.0)),
      face_half_width=float(r.uniform(54, 64)), face_half_height=float(r.uniform(74, 84)),
      face_cy=float(r.uniform(74, 80)), eye_y=float(r.uniform(50, 57)),
      eye_dx=float(r.uniform(24, 30)), brow_gap=float(r.uniform(9, 13)),
      nose_y=float(r.uniform(74, 79)), mouth_y=float(r.uniform(90, 93)),
      mouth_half_width=float(r.uniform(24, 31)), max_open=float(r.uniform(17, 23)),
      upper_lip=float(r.uniform(3.5, 5.5)), lower_lip=float(r.uniform(4.5, 7.0)),
      hair_style=int(r.integers(0, 3)),
      f0=float(f0), f0_range=float(r.uniform(2, 5)), formant_scale=float(fs),
      breathiness=float(r.uniform(0.02, 0.12)), rate=float(r.uniform(0.85, 1.2)))


def make_scene(seed: int, speaker: int, video: int) -> SceneParams:
  """The scene shared by the clips of one video."""
  return _scene_from_rng(_rng(seed, speaker, 1, video))


def _scene_from_rng(r: np.random.Generator) -> SceneParams:
  base = r.uniform(40, 210, 3)
  return SceneParams(
      bg_top=_colour(base), bg_bottom=_colour(base * r.uniform(0.5, 0.9)),
      clothes=_colour(r.uniform(20, 220, 3)),
      dx=float(r.uniform(-2, 2)), dy=float(r.uniform(-1.5, 1.5)),
      scale=float(r.uniform(0.97, 1.03)),
      gain=float(r.uniform(0.85, 1.12)), light_x=float(r.uniform(-0.2, 0.2)),
      light_y=float(r.uniform(-0.1, 0.1)), snr_db=float(r.uniform(15, 35)),
      noise_tilt=float(r.uniform(0, 1)), reverb=float(r.uniform(0.0, 0.15)),
      reverb_tau=float(r.uniform(0.02, 0.07)), level=float(r.uniform(0.35, 0.8)))


# ----------------------------------------------------------------------------------------
# Speech plan: one list of segments drives the audio and the mouth.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Seg:
  kind: str
  start: float               # seconds on the clip clock (may be negative: the margin)
  end: float
  amp: float = 0.0           # audio level
  open: float = 0.0          # mouth opening target (fraction of max_open)
  round: float | None = None  # lip rounding; None: take the next vowel's (anticipation)
  formants: tuple = ()       # vowel / liquid formants, Hz
  band: tuple = ()           # noise band, Hz


def _add(segs: list, t: float, dur: float, kind: str, **kw) -> float:
  segs.append(_Seg(kind, t, t + dur, **kw))
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
                ) -> list[_Seg]:
  """Random syllables, words and pauses covering ``[t0, t1)`` seconds without gaps."""
  segs: list[_Seg] = []
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


def _envelope(n: int, sr: float, attack: float, release: float) -> np.ndarray:
  """Raised-cosine attack and release over ``n`` samples at rate ``sr``."""
  env = np.ones(n, np.float32)
  na, nr = min(n, max(1, int(attack * sr))), min(n, max(1, int(release * sr)))
  env[:na] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(na) + 0.5) / na)
  env[n - nr:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(nr) + 0.5) / nr)
  return env


_ATTACK = {"vowel": 0.025, "liquid": 0.02, "nasal": 0.015, "noise": 0.012, "burst": 0.002,
           "closure": 0.01}
_RELEASE = {"vowel": 0.04, "liquid": 0.02, "nasal": 0.02, "noise": 0.02, "burst": 0.01,
            "closure": 0.01}


def articulator_tracks(segs: list[_Seg], t0: float, num_ms: int
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
      shape = 0.35 + 0.65 * _envelope(n, 1000, _ATTACK["vowel"], _RELEASE["vowel"])
    lo = max(a, 0)
    opening[lo:b] = (s.open * shape)[lo - a:]
    rounding[lo:b] = s.round
  kernel = np.hanning(33)[1:-1]
  kernel /= kernel.sum()
  opening = np.convolve(opening, kernel, mode="same").astype(np.float32)
  rounding = np.convolve(rounding, np.hanning(63)[1:-1] / np.hanning(63)[1:-1].sum(),
                         mode="same").astype(np.float32)
  return opening, rounding


# ----------------------------------------------------------------------------------------
# Audio.
# ----------------------------------------------------------------------------------------

def _resonator_sos(freqs, bandwidths, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Cascade of two-pole resonators with unit gain at DC (a formant synthesiser's filter)."""
  rows = []
  for f, bw in zip(freqs, bandwidths):
    f = min(float(f), 0.45 * sr)
    rr = math.exp(-math.pi * bw / sr)
    a1, a2 = -2 * rr * math.cos(2 * math.pi * f / sr), rr * rr
    rows.append([1 + a1 + a2, 0, 0, 1, a1, a2])
  return np.asarray(rows, np.float64)


@functools.lru_cache(maxsize=64)
def _band_sos(lo: float, hi: float) -> np.ndarray:
  return scipy.signal.butter(4, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")


@functools.lru_cache(maxsize=4)
def _lowpass_sos(fc: float) -> np.ndarray:
  return scipy.signal.butter(2, fc, btype="lowpass", fs=SAMPLE_RATE, output="sos")


def _smooth_noise(rng: np.random.Generator, n: int, knots_per_s: float, sr: float
                  ) -> np.ndarray:
  """Smooth random curve in about [-1, 1]: cosine-interpolated random knots."""
  k = int(n / sr * knots_per_s) + 3
  vals = rng.uniform(-1, 1, k)
  pos = np.arange(n) / sr * knots_per_s
  i = np.floor(pos).astype(np.int64)
  w = 0.5 - 0.5 * np.cos(np.pi * (pos - i))
  return (vals[i] * (1 - w) + vals[i + 1] * w).astype(np.float32)


def synthesize_audio(segs: list[_Seg], sp: SpeakerParams, scene: SceneParams,
                     rng: np.random.Generator, t0: float, n: int) -> np.ndarray:
  """Speech for the plan over ``n`` samples starting at ``t0`` s, with room and noise."""
  sr = SAMPLE_RATE
  # Pitch: slow wander within the speaker's range, plus a fall of 2 semitones across each
  # phrase (phrases end at pauses of 0.1 s or more).
  semis = sp.f0_range * _smooth_noise(rng, n, 3.0, sr)
  bounds = [0] + [int(round((s.start - t0) * sr)) for s in segs
                  if s.kind == "pause" and s.end - s.start >= 0.1] + [n]
  for a, b in zip(bounds[:-1], bounds[1:]):
    a, b = max(a, 0), min(b, n)
    if b > a:
      semis[a:b] += np.linspace(1.0, -1.0, b - a, dtype=np.float32)
  f0 = sp.f0 * 2.0 ** (semis / 12) * (1 + 0.01 * rng.standard_normal(n).astype(np.float32))
  phase = np.cumsum(f0 / sr)
  glottal = (2 * (phase % 1.0) - 1).astype(np.float32)
  glottal += sp.breathiness * rng.standard_normal(n).astype(np.float32)
  white = rng.standard_normal(n).astype(np.float32)
  speech = np.zeros(n, np.float32)
  active = np.zeros(n, bool)
  pad = int(0.03 * sr)   # filters start this early so their transient is over at the onset
  for s in segs:
    if s.kind == "pause" or s.amp <= 0:
      continue
    a, b = int(round((s.start - t0) * sr)), int(round((s.end - t0) * sr))
    if b <= 0 or a >= n:
      continue
    a0, b0 = max(a - pad, 0), min(b, n)
    if s.kind in ("vowel", "liquid"):
      fs = [f * sp.formant_scale for f in s.formants] + [3500 * sp.formant_scale]
      sos = _resonator_sos(fs, (70, 100, 150, 250))
      src = glottal
    elif s.kind == "nasal":
      sos = _resonator_sos((250 * sp.formant_scale, 2200 * sp.formant_scale), (80, 300))
      src = glottal
    elif s.kind == "closure":        # voice bar of a voiced stop
      sos, src = _lowpass_sos(300.0), glottal
    else:                            # burst, frication, aspiration
      sos, src = _band_sos(*s.band), white
    lo = max(a, 0)
    y = scipy.signal.sosfilt(sos, src[a0:b0]).astype(np.float32)[lo - a0:]   # [lo, b0)
    ref = y[len(y) // 4:] if len(y) > 8 else y
    y *= s.amp / (np.sqrt(np.mean(ref ** 2)) + 1e-8)
    env = _envelope(b - a, sr, _ATTACK[s.kind], _RELEASE[s.kind])[lo - a:b0 - a]
    speech[lo:b0] += y * env
    if s.amp >= 0.1:
      active[lo:b0] = True
  if scene.reverb > 0:
    ir_n = int(0.25 * sr)
    ir = rng.standard_normal(ir_n).astype(np.float32) * np.exp(
        -np.arange(ir_n) / (scene.reverb_tau * sr)).astype(np.float32)
    ir /= np.sqrt(np.sum(ir ** 2))
    speech = speech + scene.reverb * scipy.signal.oaconvolve(speech, ir)[:n].astype(np.float32)
  # Background: a mix of hiss and low rumble at the scene's SNR (relative to active speech).
  rumble = scipy.signal.sosfilt(_lowpass_sos(400.0), rng.standard_normal(n)).astype(np.float32)
  rumble /= np.std(rumble) + 1e-8
  hiss = rng.standard_normal(n).astype(np.float32)
  noise = np.sqrt(scene.noise_tilt) * rumble + np.sqrt(1 - scene.noise_tilt) * hiss
  speech_rms = float(np.sqrt(np.mean(speech[active] ** 2))) if active.any() else 0.1
  audio = speech + noise * (speech_rms / 10 ** (scene.snr_db / 20))
  audio *= scene.level / (np.max(np.abs(audio)) + 1e-8)
  return audio.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Video.
# ----------------------------------------------------------------------------------------

_SUB = 16           # cv2 drawing with 4 fractional bits: smooth sub-pixel lip motion
_AA = cv2.LINE_AA


def _pts(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  return np.round(np.stack([xs, ys], -1) * _SUB).astype(np.int32)


def _face_base(sp: SpeakerParams, scene: SceneParams, rng: np.random.Generator,
               blink: float) -> np.ndarray:
  """The still face (no mouth) as float32 RGB; ``blink`` in [0, 1] closes the eyelids."""
  s = FRAME_SIZE
  yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
  img = np.asarray(scene.bg_top, np.float32) * (1 - yy) + np.asarray(scene.bg_bottom) * yy
  img = np.ascontiguousarray(np.broadcast_to(img, (s, s, 3)), np.float32)
  # Soft blotches so the background is not flat.
  blot = cv2.resize(rng.uniform(-18, 18, (5, 5, 3)).astype(np.float32), (s, s),
                    interpolation=cv2.INTER_CUBIC)
  img += blot
  cx, cy = 80.0, sp.face_cy
  fw, fh = sp.face_half_width, sp.face_half_height
  skin = sp.skin
  dark_skin = tuple(c * 0.8 for c in skin)
  # Shoulders and neck, then hair behind the head.
  cv2.ellipse(img, (80, 186), (95, 50), 0, 0, 360, scene.clothes, -1, _AA)
  cv2.rectangle(img, (int(cx - fw * 0.55), int(cy + fh * 0.5)), (int(cx + fw * 0.55), s),
                dark_skin, -1)
  hair = sp.hair
  if sp.hair_style > 0:     # longer hair falls beside the face
    cv2.ellipse(img, (int(cx), int(cy - 5)), (int(fw + 9), int(fh * (0.8 + 0.15 * sp.hair_style))),
                0, 0, 360, hair, -1, _AA)
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.35)), (int(fw + 6), int(fh * 0.75)), 0, 180, 360,
              hair, -1, _AA)
  # Ears, face, with a darker rim so the face looks round.
  for side in (-1, 1):
    cv2.ellipse(img, (int(cx + side * fw), int(sp.eye_y + 8)), (6, 11), 0, 0, 360, dark_skin,
                -1, _AA)
  mask = np.zeros((s, s), np.float32)
  cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (int(round(fw)), int(round(fh))), 0, 0,
              360, 1.0, -1, _AA)
  xs = (np.arange(s, dtype=np.float32) - cx) / fw
  ys = (np.arange(s, dtype=np.float32) - cy) / fh
  shade = 1.0 - 0.22 * np.clip(xs[None, :] ** 2 + 0.6 * ys[:, None] ** 2, 0, 1.5) ** 2
  face = np.asarray(skin, np.float32) * shade[..., None]
  face += cv2.GaussianBlur(rng.normal(0, 4, (s, s, 1)).astype(np.float32), (0, 0), 1.2)[..., None]
  img = img * (1 - mask[..., None]) + face * mask[..., None]
  # Fringe over the forehead.
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.62)), (int(fw * 0.95), int(fh * 0.32)), 0, 180,
              360, hair, -1, _AA)
  cv2.ellipse(img, (int(cx), int(cy - fh * 0.62)), (int(fw * 0.95), int(fh * 0.12)), 0, 0,
              180, hair, -1, _AA)
  # Eyes and brows.
  for side in (-1, 1):
    ex, ey = cx + side * sp.eye_dx, sp.eye_y
    cv2.ellipse(img, (int(ex * _SUB), int(ey * _SUB)), (9 * _SUB, 4 * _SUB), 0, 0, 360,
                (235, 235, 230), -1, _AA, 4)
    cv2.circle(img, (int(ex * _SUB), int(ey * _SUB)), int(3.6 * _SUB), sp.iris, -1, _AA, 4)
    cv2.circle(img, (int(ex * _SUB), int(ey * _SUB)), int(1.7 * _SUB), (10, 10, 10), -1, _AA, 4)
    if blink > 0:
      cv2.ellipse(img, (int(ex * _SUB), int((ey - 4 + 4 * blink) * _SUB)),
                  (10 * _SUB, int((0.5 + 4.5 * blink) * _SUB)), 0, 0, 360, skin, -1, _AA, 4)
    cv2.ellipse(img, (int(ex * _SUB), int((ey + 4 * blink) * _SUB)), (9 * _SUB, 4 * _SUB), 0,
                190, 350, (40, 30, 30), 1, _AA, 4)
    cv2.ellipse(img, (int(ex * _SUB), int((ey - sp.brow_gap + 5) * _SUB)), (12 * _SUB, 5 * _SUB),
                0, 200, 340, tuple(c * 0.7 for c in hair), 3, _AA, 4)
  # Nose: shading down the side, nostrils, a highlight on the tip.
  ny = sp.nose_y
  cv2.line(img, (int((cx - 5) * _SUB), int((sp.eye_y + 6) * _SUB)),
           (int((cx - 7) * _SUB), int((ny - 3) * _SUB)), dark_skin, 2, _AA, 4)
  for side in (-1, 1):
    cv2.ellipse(img, (int((cx + side * 5) * _SUB), int(ny * _SUB)), (3 * _SUB, int(1.6 * _SUB)),
                0, 0, 360, tuple(c * 0.45 for c in skin), -1, _AA, 4)
  cv2.circle(img, (int(cx * _SUB), int((ny - 4) * _SUB)), 3 * _SUB,
             tuple(min(255.0, c * 1.1) for c in skin), -1, _AA, 4)
  # Folds from the nose towards the mouth corners, and the chin crease.
  for side in (-1, 1):
    cv2.ellipse(img, (int((cx + side * 10) * _SUB), int((ny + 14) * _SUB)),
                (int(10 * _SUB), int(14 * _SUB)), 0, 180 + side * 60 if side < 0 else 300,
                240 if side < 0 else 360, tuple(c * 0.86 for c in skin), 1, _AA, 4)
  return img


def _draw_mouth(img: np.ndarray, sp: SpeakerParams, cx: float, cy: float, opening: float,
                rounding: float) -> None:
  """Lips, mouth interior, teeth and tongue, drawn in place (float32 RGB)."""
  rnd, spread = max(rounding, 0.0), max(-rounding, 0.0)
  a = sp.mouth_half_width * (1 - 0.32 * rnd + 0.1 * spread) * (1 + 0.04 * opening)
  h = sp.max_open * max(opening, 0.0)
  ai = a * (0.88 - 0.3 * rnd)
  tu = sp.upper_lip * (1 + 0.45 * rnd)
  tl = sp.lower_lip * (1 + 0.45 * rnd) * (1 - 0.15 * min(opening, 1.0))
  k = 21
  x = np.linspace(-1, 1, k, dtype=np.float32)
  xo = x * a
  inner = np.clip(1 - (xo / ai) ** 2, 0, 1) ** 0.7
  thick = 0.15 + 0.85 * np.sqrt(np.clip(1 - x ** 2, 0, 1))
  bow = 1.2 * np.exp(-(x / 0.14) ** 2) * tu / 4.5
  up_in, lo_in = cy - 0.45 * h * inner, cy + 0.55 * h * inner
  up_out = up_in - tu * thick + bow
  lo_out = lo_in + tl * thick
  lip = sp.lip
  outline = np.concatenate([_pts(cx + xo, up_out), _pts(cx + xo[::-1], lo_out[::-1])])
  cv2.fillPoly(img, [outline], lip, _AA, 4)
  # Highlight on the lower lip.
  cv2.ellipse(img, (int(cx * _SUB), int((lo_in[k // 2] + 0.55 * tl) * _SUB)),
              (int(a * 0.4 * _SUB), int(max(tl * 0.22, 0.5) * _SUB)), 0, 0, 360,
              tuple(min(255.0, c * 1.3 + 15) for c in lip), -1, _AA, 4)
  if h > 0.6:
    sel = np.abs(xo) <= ai
    xi, ui, li = xo[sel], up_in[sel], lo_in[sel]
    hole = np.concatenate([_pts(cx + xi, ui), _pts(cx + xi[::-1], li[::-1])])
    cv2.fillPoly(img, [hole], (28, 8, 12), _AA, 4)
    if h > 7:   # tongue at the bottom of a wide-open mouth
      cv2.ellipse(img, (int(cx * _SUB), int((cy + 0.55 * h) * _SUB)),
                  (int(ai * 0.6 * _SUB), int(0.25 * h * _SUB)), 0, 180, 360, (120, 40, 50),
                  -1, _AA, 4)
    # Upper teeth hang from the upper lip; lower teeth show only when wide open.
    tsel = np.abs(xi) <= 0.72 * ai
    tx, tu_in = xi[tsel], ui[tsel]
    th = min(0.22 * h, 3.0)
    teeth = np.concatenate([_pts(cx + tx, tu_in), _pts(cx + tx[::-1], (tu_in + th)[::-1])])
    cv2.fillPoly(img, [teeth], sp.teeth, _AA, 4)
    if h > 11:
      tl_in = li[tsel]
      lth = min(0.12 * h, 2.0)
      teeth = np.concatenate([_pts(cx + tx, tl_in - lth), _pts(cx + tx[::-1], tl_in[::-1])])
      cv2.fillPoly(img, [teeth], tuple(c * 0.85 for c in sp.teeth), _AA, 4)
  # The line where the lips meet (dark at the corners, across the mouth when closed).
  seam = tuple(c * 0.4 for c in lip)
  cv2.polylines(img, [_pts(cx + xo, up_in + (0.45 * h * inner if h <= 0.6 else 0))], False,
                seam, 1, _AA, 4)


def render_video(sp: SpeakerParams, scene: SceneParams, opening: np.ndarray,
                 rounding: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Frames ``uint8 [T, 160, 160, 3]`` (RGB) for per-frame mouth opening and rounding."""
  n = len(opening)
  s = FRAME_SIZE
  base_seed = int(rng.integers(2 ** 31))
  # Three eyelid states share one texture (same seed), so a blink changes only the eyes.
  bases = [_face_base(sp, scene, np.random.default_rng(base_seed), b) for b in (0.0, 0.55, 1.0)]
  blink = np.zeros(n, np.int64)
  t = int(rng.integers(5, 60))
  while t < n:
    for j, state in enumerate((1, 2, 2, 1)):
      if t + j < n:
        blink[t + j] = state
    t += int(rng.integers(50, 130))
  # Head motion (pixels, degrees, scale) and light drift: smooth and small.
  tx = 1.5 * _smooth_noise(rng, n, 0.8, FPS) + scene.dx
  ty = 1.0 * _smooth_noise(rng, n, 0.8, FPS) + scene.dy
  rot = 2.0 * _smooth_noise(rng, n, 0.6, FPS)
  scl = scene.scale * (1 + 0.015 * _smooth_noise(rng, n, 0.5, FPS))
  gain = scene.gain * (1 + 0.06 * _smooth_noise(rng, n, 0.5, FPS))
  gx = scene.light_x + 0.05 * _smooth_noise(rng, n, 0.4, FPS)
  lin = np.linspace(-1, 1, s, dtype=np.float32)
  grid_y, grid_x = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32),
                               indexing="ij")
  # Rows below the mouth follow the jaw: weight 0 above the mouth, 1 from 18 px below it.
  jaw_w = np.clip((grid_y - sp.mouth_y) / 18.0, 0, 1)
  out = np.empty((n, s, s, 3), np.uint8)
  cx = 80.0
  for i in range(n):
    h = sp.max_open * max(float(opening[i]), 0.0)
    drop = 0.45 * h
    img = bases[blink[i]]
    if drop > 0.05:
      img = cv2.remap(img, grid_x, grid_y - drop * jaw_w, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
    else:
      img = img.copy()
    _draw_mouth(img, sp, cx, sp.mouth_y, float(opening[i]), float(rounding[i]))
    m = cv2.getRotationMatrix2D((80.0, sp.mouth_y - 10), float(rot[i]), float(scl[i]))
    m[0, 2] += tx[i]
    m[1, 2] += ty[i]
    img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light = gain[i] * (1 + gx[i] * lin[None, :] + scene.light_y * lin[:, None])
    np.multiply(img, light[..., None], out=img)
    np.clip(img, 0, 255, out=img)
    out[i] = img
  return out


# ----------------------------------------------------------------------------------------
# Clips.
# ----------------------------------------------------------------------------------------

def _seed_key(seed) -> list[int]:
  if isinstance(seed, (int, np.integer)):
    return [int(seed)]
  return [int(s) for s in seed]


def render_clip(speaker: SpeakerParams | dict, seconds: float, seed, audio_offset_frames: int = 0,
                scene: SceneParams | dict | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Renders one clip.

  Args:
    speaker: ``SpeakerParams`` (or its dict from ``speakers.json``).
    seconds: length; the clip has ``T = round(25 seconds)`` frames and ``640 T`` samples.
    seed: int or sequence of ints; the clip's random content.
    audio_offset_frames: delay of the audio against the video, in frames (positive: late).
    scene: the video's scene; by default one is drawn from ``seed``.

  Returns:
    ``frames`` uint8 ``[T, 160, 160, 3]`` RGB at 25 fps and ``audio`` float32 ``[640 T]``
    mono at 16 kHz, in [-1, 1].
  """
  sp = speaker if isinstance(speaker, SpeakerParams) else SpeakerParams.from_dict(speaker)
  key = _seed_key(seed)
  if scene is None:
    scene = _scene_from_rng(_rng(*key, 1))
  elif isinstance(scene, dict):
    scene = SceneParams(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in scene.items()})
  num_frames = int(round(seconds * FPS))
  if num_frames < 1:
    raise ValueError(f"a clip needs at least one frame, got {seconds} s")
  k = int(audio_offset_frames)
  margin = max(MIN_MARGIN_FRAMES, abs(k))
  rng = np.random.default_rng(np.random.SeedSequence(key + [margin]))
  t0 = -margin / FPS
  total = num_frames + 2 * margin
  segs = plan_speech(rng, t0, (num_frames + margin) / FPS, sp.rate)
  opening, rounding = articulator_tracks(segs, t0, total * 40)
  # Frame t's mouth: the track averaged over the frame's own interval.
  lo, hi = margin * 40, (margin + num_frames) * 40
  open_f = opening[lo:hi].reshape(num_frames, 40).mean(1)
  round_f = rounding[lo:hi].reshape(num_frames, 40).mean(1)
  audio_rng = np.random.default_rng(rng.integers(2 ** 63))
  video_rng = np.random.default_rng(rng.integers(2 ** 63))
  ext = synthesize_audio(segs, sp, scene, audio_rng, t0, total * SAMPLES_PER_FRAME)
  start = (margin - k) * SAMPLES_PER_FRAME
  audio = ext[start:start + num_frames * SAMPLES_PER_FRAME].copy()
  frames = render_video(sp, scene, open_f, round_f, video_rng)
  return frames, audio


# BT.601 limited range: rows give Y, U, V from R, G, B in 0-255 (offsets added after).
_RGB_TO_YUV = np.array([[65.481, 128.553, 24.966],
                        [-37.797, -74.203, 112.0],
                        [112.0, -93.786, -18.214]], np.float32) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def rgb_to_i420(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BT.601 limited-range Y, U, V planes (chroma averaged over 2x2) of RGB ``[T, H, W, 3]``.

  This is the conversion FFmpeg's decoders invert by default for untagged SD video.
  """
  t, h, w, _ = frames.shape
  if h % 2 or w % 2:
    raise ValueError(f"yuv420p needs even frame sizes, got {h}x{w}")
  # cv2.transform: a per-pixel affine map with rounding and saturation to uint8; unlike a
  # BLAS matmul it spawns no threads.
  affine = np.concatenate([_RGB_TO_YUV, _YUV_OFFSET[:, None]], 1)
  yuv = cv2.transform(np.ascontiguousarray(frames).reshape(t * h, w, 3), affine)
  yuv = yuv.reshape(t, h, w, 3)
  uv = yuv[..., 1:].astype(np.uint16)
  uv = (uv[:, 0::2, 0::2] + uv[:, 1::2, 0::2] + uv[:, 0::2, 1::2] + uv[:, 1::2, 1::2] + 2) // 4
  uv = uv.astype(np.uint8)
  return (np.ascontiguousarray(yuv[..., 0]), np.ascontiguousarray(uv[..., 0]),
          np.ascontiguousarray(uv[..., 1]))


def _yuv_frame(planes: tuple[np.ndarray, ...]) -> av.VideoFrame:
  # Filling a frame that FFmpeg allocated (padding included) keeps the encoder input fully
  # defined and the colour conversion ours rather than swscale's.
  h, w = planes[0].shape
  frame = av.VideoFrame(w, h, "yuv420p")
  for plane, src in zip(frame.planes, planes):
    rows = plane.buffer_size // plane.line_size
    if plane.line_size == src.shape[1] and rows == src.shape[0]:
      plane.update(np.ascontiguousarray(src))
    else:
      buf = np.zeros((rows, plane.line_size), np.uint8)
      buf[:src.shape[0], :src.shape[1]] = src
      plane.update(buf)
  return frame


# x264's instruction sets by /proc/cpuinfo flag name. AVX-512 is left out on purpose: with it,
# encoding the same frames twice gave different h264 bytes in up to a third of the runs on
# a loaded AMD EPYC machine (without it: 0 of 300), so files would not be reproducible.
_X264_ASM = (("MMX2", "sse"), ("SSE", "sse"), ("SSE2", "sse2"), ("SSE3", "pni"),
             ("SSSE3", "ssse3"), ("SSE4.1", "sse4_1"), ("SSE4.2", "sse4_2"), ("LZCNT", "abm"),
             ("AVX", "avx"), ("AVX2", "avx2"), ("FMA3", "fma"), ("BMI1", "bmi1"),
             ("BMI2", "bmi2"))


@functools.lru_cache(maxsize=1)
def _x264_params() -> str:
  """``x264-params`` limiting x264 to this CPU's pre-AVX-512 instruction sets (x86 Linux)."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return ""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line.split(":", 1)[1].split() for line in f
                    if line.startswith("flags")), [])
  except OSError:
    return ""
  names = [name for name, flag in _X264_ASM if flag in flags]
  return "asm=" + ",".join(names) if names else ""


def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, crf: int = 20
              ) -> None:
  """Writes h264 (yuv420p, ``crf``) + AAC (16 kHz mono) mp4, atomically (temp file, rename).

  Args:
    path: the ``.mp4`` to write; a ``.part`` file beside it is renamed on success.
    frames: uint8 ``[T, H, W, 3]`` RGB at 25 fps (H and W even).
    audio: float32 ``[N]`` mono at 16 kHz, clipped to [-1, 1].
    crf: x264 constant rate factor (18-23 keeps the lips crisp at 160x160).
  """
  path = pathlib.Path(path)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                     f"{frames.shape}")
  ys, us, vs_ = rgb_to_i420(frames)
  tmp = path.with_name(path.name + ".part")
  container = av.open(str(tmp), "w", format="mp4")
  try:
    vs = container.add_stream("libx264", rate=FPS)
    vs.width, vs.height = frames.shape[2], frames.shape[1]
    vs.pix_fmt = "yuv420p"
    vs.options = {"crf": str(int(crf)), "preset": "veryfast"}
    if _x264_params():
      vs.options = dict(vs.options, **{"x264-params": _x264_params()})
    vs.codec_context.thread_count = 1   # one process per clip already; also keeps bytes stable
    ast = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
    ast.bit_rate = 64000
    for i in range(len(frames)):
      vf = _yuv_frame((ys[i], us[i], vs_[i]))
      vf.pts = i
      container.mux(vs.encode(vf))
    container.mux(vs.encode())
    tb = fractions.Fraction(1, SAMPLE_RATE)
    clipped = np.clip(audio, -1, 1).astype(np.float32)
    for s in range(0, clipped.size, 1024):
      af = av.AudioFrame.from_ndarray(np.ascontiguousarray(clipped[None, s:s + 1024]),
                                      format="flt", layout="mono")
      af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, s, tb
      container.mux(ast.encode(af))
    container.mux(ast.encode())
  finally:
    container.close()
  os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# Dataset.
# ----------------------------------------------------------------------------------------

def clip_name(speaker: int, video: int, index: int) -> str:
  """LRS2-style ``<id>/<nnnnn>`` with ``<id> = spk{speaker:03d}v{video:03d}``."""
  return f"spk{speaker:03d}v{video:03d}/{index + 1:05d}"


def _clip_job(job: dict) -> dict:
  path = pathlib.Path(job["path"])
  if not path.exists():
    frames, audio = render_clip(job["speaker"], job["seconds"], job["seed"],
                                job["audio_offset_frames"], job["scene"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames, audio, job["crf"])
  return {"name": job["name"], "bytes": path.stat().st_size}


def _init_worker() -> None:
  cv2.setNumThreads(1)   # the pool provides the parallelism


def generate_dataset(out_dir: str | os.PathLike, num_speakers: int = 24,
                     num_test_speakers: int = 6, num_val_speakers: int = 4,
                     clips_per_speaker: int = 10, min_seconds: float = 3.0,
                     max_seconds: float = 5.0, seed: int = 0, audio_offset_frames: int = 0,
                     workers: int = 2, clips_per_video: int = 5, crf: int = 20,
                     progress: bool = True) -> dict:
  """Writes the dataset to ``out_dir`` (see the module docstring); returns a summary dict.

  ``num_speakers`` counts train speakers; test and val speakers come on top. Clips already
  on disk are kept (they are deterministic), so an interrupted run resumes.
  """
  for name, v in (("num_speakers", num_speakers), ("clips_per_speaker", clips_per_speaker),
                  ("clips_per_video", clips_per_video)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}")
  if num_test_speakers < 0 or num_val_speakers < 0:
    raise ValueError("num_test_speakers and num_val_speakers must be >= 0")
  if not 0 < min_seconds <= max_seconds:
    raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
  if num_val_speakers == 0 and clips_per_speaker < 2:
    raise ValueError("num_val_speakers=0 holds out one clip per train speaker: "
                     "clips_per_speaker must be >= 2")
  t_start = time.perf_counter()
  out = pathlib.Path(out_dir)
  # Resuming reuses clips already on disk, which is only right for the same arguments.
  config = {"format": FORMAT, "num_speakers": num_speakers,
            "num_test_speakers": num_test_speakers, "num_val_speakers": num_val_speakers,
            "clips_per_speaker": clips_per_speaker, "clips_per_video": clips_per_video,
            "min_seconds": float(min_seconds), "max_seconds": float(max_seconds),
            "seed": int(seed), "audio_offset_frames": int(audio_offset_frames),
            "crf": int(crf)}
  config_path = out / "synthetic_config.json"
  if config_path.exists():
    old = json.loads(config_path.read_text())
    changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if changed:
      raise ValueError(f"{config_path}: {out} holds a synthetic set made with other "
                       f"arguments ({', '.join(changed)}); use a new --out folder")
  out.mkdir(parents=True, exist_ok=True)
  config_path.write_text(json.dumps(config, indent=1))
  main_dir = out / "mvlrs_v1" / "main"
  main_dir.mkdir(parents=True, exist_ok=True)
  (out / "mvlrs_v1" / "pretrain").mkdir(parents=True, exist_ok=True)

  splits = (["train"] * num_speakers + ["test"] * num_test_speakers + ["val"] * num_val_speakers)
  lists: dict[str, list[str]] = {"pretrain": [], "train": [], "val": [], "test": []}
  speakers, jobs = [], []
  for spk, split in enumerate(splits):
    sp = make_speaker(seed, spk)
    scenes = {}
    clips = []
    for c in range(clips_per_speaker):
      video, index = divmod(c, clips_per_video)
      if video not in scenes:
        scenes[video] = make_scene(seed, spk, video)
      clip_seed = [seed, spk, 2, c]
      num_frames = int(round(_rng(*clip_seed, 99).uniform(min_seconds, max_seconds) * FPS))
      name = clip_name(spk, video, index)
      clip_split = split
      if split == "train" and num_val_speakers == 0 and c == clips_per_speaker - 1:
        clip_split = "val"
      lists[clip_split].append(name)
      clips.append({"name": name, "split": clip_split, "frames": num_frames,
                    "seconds": num_frames / FPS})
      jobs.append({"path": str(main_dir / f"{name}.mp4"), "name": name,
                   "speaker": sp.asdict(), "scene": scenes[video].asdict(),
                   "seconds": num_frames / FPS, "seed": clip_seed,
                   "audio_offset_frames": int(audio_offset_frames), "crf": int(crf)})
    speakers.append({"speaker": spk, "split": split, "params": sp.asdict(),
                     "scenes": {str(v): s.asdict() for v, s in scenes.items()}, "clips": clips})

  total_bytes = 0
  bar = tqdm.tqdm(total=len(jobs), desc="synthetic clips", unit="clip", disable=not progress)
  if workers <= 1:
    _init_worker()
    results = map(_clip_job, jobs)
    for r in results:
      total_bytes += r["bytes"]
      bar.update()
  else:
    # spawn, not fork: the caller (the demo) may already have started JAX's threads.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
      for r in pool.imap_unordered(_clip_job, jobs, chunksize=1):
        total_bytes += r["bytes"]
        bar.update()
  bar.close()

  for split, names in lists.items():
    (out / f"{split}.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
  seconds = sum(c["seconds"] for s in speakers for c in s["clips"])
  meta = {
      "format": FORMAT, "seed": int(seed), "audio_offset_frames": int(audio_offset_frames),
      "fps": FPS, "sample_rate": SAMPLE_RATE, "frame_size": FRAME_SIZE,
      "video_codec": "h264 yuv420p", "crf": int(crf), "audio_codec": "aac mono",
      "num_speakers": num_speakers, "num_test_speakers": num_test_speakers,
      "num_val_speakers": num_val_speakers, "clips_per_speaker": clips_per_speaker,
      "clips_per_video": clips_per_video, "min_seconds": min_seconds,
      "max_seconds": max_seconds,
      "val": "separate speakers" if num_val_speakers else "last clip of each train speaker",
      "counts": {k: len(v) for k, v in lists.items()},
      "speakers": speakers,
  }
  tmp = out / "speakers.json.part"
  tmp.write_text(json.dumps(meta, indent=1))
  os.replace(tmp, out / "speakers.json")
  return {"out": str(out), "clips": len(jobs), "counts": meta["counts"],
          "seconds_of_video": round(seconds, 2), "bytes": total_bytes,
          "wall_seconds": round(time.perf_counter() - t_start, 2)}


def main(argv: list[str] | None = None) -> dict:
  """CLI entry point (see the module docstring)."""
  p = argparse.ArgumentParser(description="Write the synthetic talking-mouth dataset "
                              "(LRS2 layout, h264/aac mp4).")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--num_speakers", type=int, default=24, help="train speakers")
  p.add_argument("--num_test_speakers", type=int, default=6)
  p.add_argument("--num_val_speakers", type=int, default=4,
                 help="0: hold out the last clip of each train speaker as val instead")
  p.add_argument("--clips_per_speaker", type=int, default=10)
  p.add_argument("--clips_per_video", type=int, default=5)
  p.add_argument("--min_seconds", type=float, default=3.0)
  p.add_argument("--max_seconds", type=float, default=5.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--audio_offset_frames", type=int, default=0,
                 help="delay of the audio against the video for every clip (+: audio late)")
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--crf", type=int, default=20, help="h264 quality (lower: better)")
  a = p.parse_args(argv)
  summary = generate_dataset(
      a.out, num_speakers=a.num_speakers, num_test_speakers=a.num_test_speakers,
      num_val_speakers=a.num_val_speakers, clips_per_speaker=a.clips_per_speaker,
      min_seconds=a.min_seconds, max_seconds=a.max_seconds, seed=a.seed,
      audio_offset_frames=a.audio_offset_frames, workers=a.workers,
      clips_per_video=a.clips_per_video, crf=a.crf)
  print(json.dumps(summary), file=sys.stdout)
  return summary


if __name__ == "__main__":
  main()
