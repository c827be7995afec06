"""What the sound is, decided once for files and live streams: speech (the voice-activity
decision on level and, where the sound is loud throughout, on its shape: ``speech_shape``),
silence, or music and steady sound (``character``)."""
from __future__ import annotations

import numpy as np

from modeformer_jax import media
from modeformer_jax.model import windows
from modeformer_jax.model.input_spec import MEL_CONFIG

MEL_MS = windows.MEL_MS
FRAME_SAMPLES = 320                  # the 20-ms frames of ``media.frame_levels`` at 16 kHz

SILENCE = "silence"
MUSIC = "music or steady sound"
SPEECH_LIKE = "speech-like"


def speech_shape(mel: np.ndarray) -> np.ndarray:
  """What tells speech from other sound in a stretch of log-mel frames ``[80, n]`` (about a
  second; ``features.log_mel`` scaling), when its level cannot (sound loud throughout):
  ``[modulation share, depth dB, centroid spread]``.

  * modulation share: of the level's modulation power above 0.5 Hz, the share at syllable
    rates, 2-8 Hz (steady noise and held chords have little);
  * depth: the level's 90th minus 10th percentile, dB (the dips between syllables);
  * centroid spread: the standard deviation, in mel bins, of the spectral centroid over
    the frames within 20 dB of the loudest (vowels, fricatives and nasals sit at different
    heights; a tone, a tremolo, a plucked note or a drum hit keeps its spectrum's shape).
  """
  c = MEL_CONFIG
  if mel.shape[1] < 8:
    return np.zeros(3)
  top, min_db = c["max_abs_value"], c["min_level_db"]
  amp_db = (np.asarray(mel, np.float64) + top) * -min_db / (2 * top) + min_db
  power = 10.0 ** (amp_db / 10)                # the mel is of magnitudes: 20 log10
  level = 10 * np.log10(power.mean(axis=0))
  env = level - level.mean()
  spec = np.abs(np.fft.rfft(env * np.hanning(env.size))) ** 2
  hz = np.fft.rfftfreq(env.size, MEL_MS / 1000)
  mod = spec[hz > 0.5].sum()
  share = spec[(hz >= 2) & (hz <= 8)].sum() / mod if mod > 0 else 0.0
  depth = np.percentile(level, 90) - np.percentile(level, 10)
  loud = level >= level.max() - 20
  centroid = (power * np.arange(mel.shape[0])[:, None]).sum(axis=0) / power.sum(axis=0)
  return np.array([share, depth, centroid[loud].std()])


def character(level_db: float, spread_db: float, shaped_share: float, silent_db: float) -> str:
  """What a stretch of sound is, from its level and speech-band spread
  (``media.sound_stats``, the measures that choose a file's speech channels) and the share
  of its blocks with speech's shape (``speech_shape`` within the options' limits):
  ``SILENCE`` below ``silent_db`` (the level speech must reach, ``AnalysisOptions.vad_db``:
  room tone and hiss are silence to a listener); ``MUSIC`` when neither the spread
  (``media.SPEECH_SPREAD_DB``) nor the shape looks like speech (the shape rescues speech
  that is loud throughout, whose spread is small); else ``SPEECH_LIKE``."""
  if level_db < silent_db:
    return SILENCE
  if spread_db < media.SPEECH_SPREAD_DB and shaped_share < 0.5:
    return MUSIC
  return SPEECH_LIKE


def reason_with_character(reason: str | None, char: str) -> str | None:
  """A segment's reason with the sound's character applied, the same for files and live
  streams: "no speech" says which (silence, music or steady sound); a segment that was
  measured on music or steady sound is not a measurement of speech."""
  if reason == "no speech" and char in (SILENCE, MUSIC):
    return char
  if reason in (None, "uncertain") and char == MUSIC:
    return MUSIC
  return reason
