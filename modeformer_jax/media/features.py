"""Audio-visual features shared by data preparation and inference.

One implementation turns a video file into what the model reads: 48x96 lip crops at
25 fps and an 80-bin log-mel spectrogram at 80 mel frames per second. ``data_prep`` calls
``extract_clip`` to build the training shards, and eval / offset detection call the same
function on a user's file, with the crop of the model's recorded ``InputSpec``
(``modeformer_jax.model.input_spec``), so training and inference cannot disagree about features.

Decoding (``decode``, from ``modeformer_jax.media``: the one decoding path)
  PyAV reads mp4/mov/avi/mkv/mxf/mpg. Rotation and sample aspect ratio are honoured; video
  is resampled to 25 fps by timestamp (output frame ``t`` is the source frame nearest to
  ``t / 25`` s after the first video frame); the speech channels of every audio stream are
  mixed to mono, resampled to 16 kHz with soxr and placed on the same clock:
  ``audio[n]`` plays at ``n / 16000`` s after the first video frame. ``media``'s docstring
  has the rules.

Mel (``log_mel``, parameters in ``MEL_CONFIG``)
  Pre-emphasis 0.97, centred STFT (periodic Hann window of 800 samples, hop 200, zero
  padding of 400 samples at both ends), magnitude, Slaney-normalised mel filterbank
  (80 bins, 55-7600 Hz). Mel frame ``m`` is centred on sample ``200 m``, i.e. time
  ``m / 80`` s. Scaling, with ``M`` the mel magnitude::

      db   = 20 * log10(max(M, 1e-5)) - 20                   # ref_level_db = 20
      norm = clip((db + 100) / 100, 0, 1)                     # min_level_db = -100
      mel  = 8 * norm - 4                                     # values in [-4, 4]

  Silence (and padding) is exactly ``MEL_SILENCE = -4``.

Alignment contract
  ``modeformer_jax.model.windows``: the audio window of video frame ``t`` starts at mel frame
  ``round(3.2 t)``; 5 frames pair with 16 mel frames; a clip of ``T`` frames stores exactly
  ``ceil(3.2 T)`` mel frames (``log_mel(audio, num_frames=T)``).

Lip crops
  ``modeformer_jax.media.crops.lip_crop`` with the crop of the model's ``InputSpec`` (a fixed box,
  Haar face detection or lip landmarks).

Errors
  Every rejection is a ``FeatureError`` naming the file, a machine-readable ``kind`` and a
  human-readable reason: ``corrupt``, ``no_video``, ``no_audio``, ``audio_short`` (the
  audio misses more than ``MAX_MISSING_AUDIO_S`` = 0.2 s, i.e. 5 video frames, of the
  video's duration), ``too_short`` (fewer than ``min_frames`` frames at 25 fps) and
  ``no_face``.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from modeformer_jax.errors import FeatureError, NoFaceError
from modeformer_jax.media import crops
from modeformer_jax.media.decode import Decoded, decode
from modeformer_jax.model import windows
from modeformer_jax.model.input_spec import CropSpec, MEL_CONFIG, SAMPLE_RATE

from modeformer_jax.model.windows import FPS

MIN_FRAMES = 35              # 5-frame window + 2 x 15 frames of offset search
MEL_SILENCE = -4.0           # value of a silent (or padded) mel frame

# audio_short threshold: up to 5 video frames of missing audio are padded with silence.
MAX_MISSING_AUDIO_S = 0.2


@dataclasses.dataclass
class Clip:
  """Model-ready features of one file."""
  lips: np.ndarray        # uint8 [T, 48, 96, 3]
  mel: np.ndarray         # float32 [80, ceil(3.2 T)]
  num_frames: int
  fps: float              # always FPS
  source_fps: float
  duration: float
  audio_source: str = ""  # which channels/tracks were mixed (``media.AudioChoice.describe``)
  audio_note: str = ""    # the same when a choice was made, else empty


# ----------------------------------------------------------------------------------------
# Audio shifts.
# ----------------------------------------------------------------------------------------

def shift_audio(audio: np.ndarray, k_frames: int,
                sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Delays ``audio`` by ``k_frames`` video frames (negative: advances), keeping its length.

  A positive shift pads the start with silence and drops the end, so the sound of video
  frame ``t`` now plays with frame ``t + k``.
  """
  audio = np.asarray(audio, dtype=np.float32)
  n = int(round(int(k_frames) * sample_rate / FPS))
  if n == 0:
    return audio.copy()
  out = np.zeros_like(audio)
  if abs(n) >= audio.size:
    return out
  if n > 0:
    out[n:] = audio[:-n]
  else:
    out[:n] = audio[-n:]
  return out


# ----------------------------------------------------------------------------------------
# Mel spectrogram.
# ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def mel_basis() -> np.ndarray:
  """The Slaney mel filterbank ``[n_mels, n_fft // 2 + 1]`` of ``MEL_CONFIG``."""
  # librosa.filters is plain numpy (no numba compilation), unlike librosa.feature.
  import librosa.filters
  c = MEL_CONFIG
  return librosa.filters.mel(sr=c["sample_rate"], n_fft=c["n_fft"], n_mels=c["n_mels"],
                             fmin=c["fmin"], fmax=c["fmax"], htk=c["mel_htk"],
                             norm="slaney" if c["mel_norm"] == "slaney" else None
                             ).astype(np.float32)


@functools.lru_cache(maxsize=None)
def stft_window() -> np.ndarray:
  """The periodic Hann window of ``MEL_CONFIG``'s STFT."""
  n = MEL_CONFIG["win_length"]
  win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)   # periodic Hann
  pad = MEL_CONFIG["n_fft"] - n
  return np.pad(win, (pad // 2, pad - pad // 2)).astype(np.float32)


_STFT_CHUNK = 4096   # frames per FFT batch: bounds memory on hour-long files


def log_mel(audio: np.ndarray, num_frames: int | None = None) -> np.ndarray:
  """Log-mel spectrogram ``float32 [80, Tm]`` in ``[-4, 4]`` (see the module docstring).

  Args:
    audio: mono float32 samples at 16 kHz, nominally in [-1, 1].
    num_frames: video frames the mel must cover; when given, ``Tm = ceil(3.2 num_frames)``
      exactly (silence-padded or trimmed). Otherwise ``Tm = 1 + len(audio) // 200``.
  """
  c = MEL_CONFIG
  n_fft, hop = c["n_fft"], c["hop_length"]
  x = np.asarray(audio, dtype=np.float32)
  if x.ndim != 1:
    raise ValueError(f"audio must be mono 1-D, got shape {x.shape}")
  if num_frames is not None:
    if num_frames < 0:
      raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    n_out = windows.num_mel_frames(num_frames)
    # Samples past the last needed window do not change any kept frame.
    x = x[:max(0, n_out - 1) * hop + n_fft // 2]
  else:
    n_out = 1 + x.size // hop
  if n_out == 0:
    return np.zeros((c["n_mels"], 0), np.float32)

  y = np.empty_like(x)
  if x.size:
    y[0] = x[0]
    y[1:] = x[1:] - c["preemphasis"] * x[:-1]
  y = np.pad(y, (n_fft // 2, n_fft // 2))
  n_frames = min(n_out, 1 + (y.size - n_fft) // hop)
  stft_frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
  basis, win = mel_basis(), stft_window()
  mel = np.full((c["n_mels"], n_out), MEL_SILENCE, np.float32)
  amin, ref, min_db, top = c["amin"], c["ref_level_db"], c["min_level_db"], c["max_abs_value"]
  for s in range(0, n_frames, _STFT_CHUNK):
    spec = np.abs(np.fft.rfft(stft_frames[s:s + _STFT_CHUNK] * win, axis=1))
    m = basis @ spec.T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(m, amin)) - ref
    mel[:, s:s + m.shape[1]] = np.clip(2 * top * (db - min_db) / -min_db - top, -top, top)
  return mel


# ----------------------------------------------------------------------------------------
# Everything together.
# ----------------------------------------------------------------------------------------

def extract_clip(path: str, crop: CropSpec, min_frames: int = MIN_FRAMES,
                 audio_shift_frames: int = 0, decoded: Decoded | None = None) -> Clip:
  """Decodes ``path`` and returns its lip crops and mel, or raises ``FeatureError``.

  Args:
    path: a video file with an audio track.
    crop: how lips are cut (``input_spec.CropSpec``: the model's or the dataset's).
    min_frames: shortest accepted clip in frames at 25 fps.
    audio_shift_frames: delay the audio by this many video frames before the mel
      (positive: audio late), for tests and offset-detection demos.
    decoded: ``decode(path)`` when the caller already has it (it is not decoded again).
  """
  dec = decoded if decoded is not None else decode(path)
  n = dec.frames.shape[0]
  if n < min_frames:
    raise FeatureError(dec.path, "too_short", f"{dec.duration:.2f} s = {n} frames at "
                       f"{FPS} fps, need at least {min_frames}")
  if dec.audio_missing > MAX_MISSING_AUDIO_S:
    raise FeatureError(dec.path, "audio_short", f"audio misses {dec.audio_missing:.2f} s "
                       f"of {dec.duration:.2f} s of video (more than {MAX_MISSING_AUDIO_S} s)")
  audio = shift_audio(dec.audio, audio_shift_frames) if audio_shift_frames else dec.audio
  try:
    lips = crops.lip_crop(dec.frames, crop)
  except NoFaceError as e:
    raise FeatureError(dec.path, "no_face", str(e)) from e
  mel = log_mel(audio, n)
  return Clip(lips=lips, mel=mel, num_frames=n, fps=float(FPS),
              source_fps=dec.source_fps, duration=dec.duration,
              audio_source=dec.audio_source.describe() if dec.audio_source else "",
              audio_note=dec.audio_source.note if dec.audio_source else "")
