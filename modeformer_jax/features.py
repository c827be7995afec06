"""Audio-visual features shared by data preparation and inference.

One implementation turns a video file into what the model reads: 48x96 lip crops at
25 fps and an 80-bin log-mel spectrogram at 80 mel frames per second. ``data_prep`` calls
``extract_clip`` to build the training shards, and eval / offset detection call the same
function on a user's file, with the crop of the model's recorded ``InputSpec``
(``modeformer_jax.input_spec``), so training and inference cannot disagree about features.

Decoding (``decode``)
  PyAV reads mp4/mov/avi/mkv/mpg. Video is resampled to 25 fps by timestamp: output frame
  ``t`` is the source frame on screen at time ``t / 25`` s after the first video frame
  (so 29.97 fps, 30 fps and variable-frame-rate sources all work; frames are repeated or
  dropped, never blended). The output has ``floor(duration * 25)`` frames, where the
  duration runs from the first frame's timestamp to the end of the last frame. Audio is
  down-mixed to mono (the mean of the channels; FFmpeg's stereo down-mix first for more
  than two), resampled to 16 kHz with soxr, and placed on the same clock:
  ``audio[n]`` plays at ``n / 16000`` s after the first video frame
  (audio before it is dropped, a late audio start is padded with silence).

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
  ``modeformer_jax.windows``: the audio window of video frame ``t`` starts at mel frame
  ``round(3.2 t)``; 5 frames pair with 16 mel frames; a clip of ``T`` frames stores exactly
  ``ceil(3.2 T)`` mel frames (``log_mel(audio, num_frames=T)``).

Lip crops
  ``modeformer_jax.crops.lip_crop`` with the crop of the model's ``InputSpec`` (a fixed box,
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
import math

import av
import numpy as np
import soxr

from modeformer_jax import crops, windows
from modeformer_jax.input_spec import MEL_CONFIG, SAMPLE_RATE, CropSpec
from modeformer_jax.windows import FPS

MIN_FRAMES = 35              # 5-frame window + 2 x 15 frames of offset search
MEL_SILENCE = -4.0           # value of a silent (or padded) mel frame

# audio_short threshold: up to 5 video frames of missing audio are padded with silence.
MAX_MISSING_AUDIO_S = 0.2

# Timestamps in containers are rounded (often to 1 ms); a frame stamped this little after
# the instant we sample still counts as showing. Far below half a frame at 30-60 fps.
_TS_TOLERANCE_S = 1e-3

# A decoded video this much shorter than its declared stream duration is truncated.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_FRAC = 0.1

ERROR_KINDS = ("corrupt", "no_video", "no_audio", "audio_short", "too_short", "no_face")


class FeatureError(ValueError):
  """A file that cannot yield a clip: ``path``, ``kind`` (see ``ERROR_KINDS``), ``reason``."""

  def __init__(self, path: str, kind: str, reason: str):
    if kind not in ERROR_KINDS:
      raise ValueError(f"unknown FeatureError kind {kind!r}; expected one of {ERROR_KINDS}")
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.kind = kind
    self.reason = reason

  def __reduce__(self):
    # Keeps the exception intact when it crosses a multiprocessing boundary.
    return (FeatureError, (self.path, self.kind, self.reason))


@dataclasses.dataclass
class Decoded:
  """A decoded file on a common clock that starts at the first video frame."""
  path: str
  frames: np.ndarray      # uint8 [T, H, W, 3] RGB at ``fps``
  audio: np.ndarray       # float32 [N] mono at ``sample_rate``
  source_fps: float       # source frames per second of video (average, for VFR)
  duration: float         # video duration in seconds
  # Seconds of the video's duration without real audio (late start or early end), which
  # ``audio`` fills with silence at the start or simply lacks at the end.
  audio_missing: float = 0.0


@dataclasses.dataclass
class Clip:
  """Model-ready features of one file."""
  lips: np.ndarray        # uint8 [T, 48, 96, 3]
  mel: np.ndarray         # float32 [80, ceil(3.2 T)]
  num_frames: int
  fps: float              # always FPS
  source_fps: float
  duration: float


# ----------------------------------------------------------------------------------------
# Time bookkeeping.
# ----------------------------------------------------------------------------------------

def num_output_frames(duration: float, fps: float = FPS) -> int:
  """Frames at ``fps`` whose whole display interval lies within ``duration`` seconds."""
  if duration <= 0:
    return 0
  return int(math.floor((duration + _TS_TOLERANCE_S) * fps))


def frame_indices_for_timestamps(timestamps: np.ndarray, fps: float,
                                 duration: float) -> np.ndarray:
  """Source frame index for every output frame of a constant-rate resampling.

  Args:
    timestamps: presentation time of each source frame in seconds, relative to the
      output clock's origin (usually the first frame, so the smallest is 0). Need not be
      sorted; indices refer to this array's order.
    fps: output frame rate.
    duration: seconds of video; the output has ``num_output_frames(duration, fps)`` frames.

  Returns:
    int64 ``[T]``: output frame ``t`` shows the source frame on screen at ``t / fps``,
    i.e. the latest one whose timestamp is ``<= t / fps`` (1 ms tolerance for rounded
    timestamps); instants before the first timestamp get the first frame.
  """
  ts = np.asarray(timestamps, dtype=np.float64)
  if ts.ndim != 1:
    raise ValueError(f"timestamps must be 1-D, got shape {ts.shape}")
  n_out = num_output_frames(duration, fps)
  if ts.size == 0 or n_out == 0:
    return np.zeros((0,), np.int64)
  order = np.argsort(ts, kind="stable")
  sorted_ts = ts[order]
  instants = np.arange(n_out, dtype=np.float64) / fps + _TS_TOLERANCE_S
  pos = np.searchsorted(sorted_ts, instants, side="right") - 1
  return order[np.clip(pos, 0, ts.size - 1)].astype(np.int64)


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
# Decoding.
# ----------------------------------------------------------------------------------------

def _stream_seconds(stream) -> float | None:
  if stream.duration is None or stream.time_base is None:
    return None
  return float(stream.duration * stream.time_base)


def _declares_exact_duration(container) -> bool:
  # mp4/mov/mkv headers state durations; mpg/avi durations may be bitrate estimates.
  name = container.format.name or ""
  return any(key in name for key in ("mp4", "mov", "matroska", "webm"))


def decode(path: str, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> Decoded:
  """Decodes a video file to RGB frames at ``fps`` and mono float32 audio at ``sample_rate``.

  Raises:
    FeatureError: kind ``corrupt`` (cannot be opened or decoded, or truncated),
      ``no_video`` or ``no_audio`` (missing stream or nothing decodable in it).
  """
  path = str(path)
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError) as e:
    raise FeatureError(path, "corrupt", f"cannot open: {e}") from e
  try:
    if not container.streams.video:
      raise FeatureError(path, "no_video", "no video stream")
    if not container.streams.audio:
      raise FeatureError(path, "no_audio", "no audio stream")
    vstream = container.streams.video[0]
    astream = container.streams.audio[0]
    vstream.thread_type = "AUTO"
    declared = _stream_seconds(vstream) if _declares_exact_duration(container) else None
    src_rate = int(astream.rate or astream.codec_context.sample_rate or 0)
    if src_rate <= 0:
      raise FeatureError(path, "no_audio", "audio stream has no sample rate")
    # Mono and stereo are averaged (FFmpeg's own down-mix adds each channel at -3 dB, which
    # would make stereo datasets 3 dB louder than mono ones); wider layouts go through
    # FFmpeg's stereo down-mix first, which knows which channel carries the dialogue.
    wide = (astream.codec_context.channels or 1) > 2
    resampler = av.AudioResampler(format="fltp", layout="stereo" if wide else None)

    frames: list[np.ndarray] = []
    times: list[float] = []
    chunks: list[np.ndarray] = []
    audio_start: float | None = None
    nominal = float(vstream.average_rate or vstream.guessed_rate or fps)
    try:
      for packet in container.demux(vstream, astream):
        for frame in packet.decode():
          if packet.stream.type == "video":
            t = frame.time if frame.pts is not None else None
            if t is None:
              t = (times[-1] + 1.0 / nominal) if times else 0.0
            times.append(float(t))
            frames.append(frame.to_ndarray(format="rgb24"))
          else:
            if audio_start is None and frame.pts is not None:
              audio_start = float(frame.time)
            for out in resampler.resample(frame):
              chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
    except av.FFmpegError as e:
      at = f" at {times[-1]:.2f} s" if times else ""
      raise FeatureError(path, "corrupt", f"decoding failed{at}: {e}") from e
  finally:
    container.close()

  if not frames:
    raise FeatureError(path, "corrupt", "no video frame could be decoded")
  audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  if audio.size == 0:
    raise FeatureError(path, "no_audio", "audio stream has no decodable samples")

  ts = np.asarray(times)
  order = np.argsort(ts, kind="stable")
  origin = float(ts[order[0]])
  rel = ts - origin
  steps = np.diff(np.sort(rel))
  steps = steps[steps > 0]
  last_step = float(np.median(steps)) if steps.size else 1.0 / nominal
  duration = float(rel.max()) + last_step
  if declared is not None and duration + max(_TRUNCATION_SLACK_S,
                                             _TRUNCATION_SLACK_FRAC * declared) < declared:
    raise FeatureError(path, "corrupt", f"truncated: decoded {duration:.2f} s of video, "
                       f"the stream declares {declared:.2f} s")

  idx = frame_indices_for_timestamps(rel, fps, duration)
  if idx.size:
    out_frames = np.stack([frames[i] for i in idx])
  else:
    h, w = frames[0].shape[:2]
    out_frames = np.zeros((0, h, w, 3), np.uint8)

  if src_rate != sample_rate:
    audio = soxr.resample(audio, src_rate, sample_rate, quality="HQ").astype(np.float32)
  # Put audio on the video clock: drop audio that plays before the first frame, pad a
  # late start with silence.
  lead = int(round(((audio_start or 0.0) - origin) * sample_rate))
  if lead > 0:
    audio = np.concatenate([np.zeros(lead, np.float32), audio])
  elif lead < 0:
    audio = audio[-lead:]
  tail = max(0.0, duration - audio.size / sample_rate)
  missing = min(duration, max(0, lead) / sample_rate + tail)
  return Decoded(path=path, frames=out_frames, audio=np.ascontiguousarray(audio),
                 source_fps=len(times) / duration, duration=duration,
                 audio_missing=missing)


# ----------------------------------------------------------------------------------------
# Mel spectrogram.
# ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _mel_basis() -> np.ndarray:
  # librosa.filters is plain numpy (no numba compilation), unlike librosa.feature.
  import librosa.filters
  c = MEL_CONFIG
  return librosa.filters.mel(sr=c["sample_rate"], n_fft=c["n_fft"], n_mels=c["n_mels"],
                             fmin=c["fmin"], fmax=c["fmax"], htk=c["mel_htk"],
                             norm="slaney" if c["mel_norm"] == "slaney" else None
                             ).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _window() -> np.ndarray:
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
  basis, win = _mel_basis(), _window()
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
  except crops.NoFaceError as e:
    raise FeatureError(dec.path, "no_face", str(e)) from e
  mel = log_mel(audio, n)
  return Clip(lips=lips, mel=mel, num_frames=n, fps=float(FPS),
              source_fps=dec.source_fps, duration=dec.duration)
