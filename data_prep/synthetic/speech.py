"""Speech-like audio for a speech plan: a formant synthesiser with room and background noise.

A sawtooth glottal source with a wandering, declining pitch contour goes through a cascade of
formant resonators (F1-F4 of the vowel, scaled per speaker); filtered noise gives fricatives,
bursts and aspiration, a low hum the nasals. A little room reverb and background noise at the
scene's SNR come on top.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal

from data_prep.synthetic.constants import SAMPLE_RATE
from data_prep.synthetic.plan import ATTACK, RELEASE, Segment, envelope
from data_prep.synthetic.seeds import smooth_noise
from data_prep.synthetic.speakers import SceneParams, SpeakerParams


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


def synthesize_audio(segs: list[Segment], sp: SpeakerParams, scene: SceneParams,
                     rng: np.random.Generator, t0: float, n: int) -> np.ndarray:
  """Speech for the plan over ``n`` samples starting at ``t0`` s, with room and noise."""
  sr = SAMPLE_RATE
  # Pitch: slow wander within the speaker's range, plus a fall of 2 semitones across each
  # phrase (phrases end at pauses of 0.1 s or more).
  semis = sp.f0_range * smooth_noise(rng, n, 3.0, sr)
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
    env = envelope(b - a, sr, ATTACK[s.kind], RELEASE[s.kind])[lo - a:b0 - a]
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
