"""Audio-visual features shared by data preparation and inference.

One implementation turns a video file into what the model reads: 48x96 lip crops at
25 fps and an 80-bin log-mel spectrogram at 80 mel frames per second. ``data_prep`` calls
``extract_clip`` to build the training shards, and eval / offset detection call the same
function on a user's file, so training and inference can never disagree about features.

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
  There are 3.2 mel frames per video frame. The audio window that belongs to video frame
  ``t`` starts at mel frame ``mel_start(t) = round(3.2 t)`` (computed in integers, so it
  is exact), and a window of 5 video frames ``t..t+4`` pairs with the 16 mel frames
  ``mel_start(t) .. mel_start(t) + 15``. For a clip of ``T`` video frames the stored mel
  has exactly ``ceil(3.2 T)`` frames, enough for every 5-frame window
  (``mel_start(T - 5) + 16 <= ceil(3.2 T)``).

Lip crops (``lip_crop``)
  ``'crop'`` layouts (LRS2 160x160, LRS3 / VoxCeleb2 224x224 face crops): the lower half
  of the frame resized to 48x96. ``'detect'`` (uncropped video): OpenCV's bundled Haar
  frontal-face cascade on a downscaled grey image every few frames, outliers removed with
  a running median, gaps interpolated, boxes smoothed over time; the crop is the lower
  half of a slightly enlarged, lowered square around the face, resized to 48x96.

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
import cv2
import numpy as np
import soxr

FPS = 25
SAMPLE_RATE = 16000
MEL_PER_FRAME = 3.2
LIP_SIZE = (48, 96)          # (height, width)
MIN_FRAMES = 35              # 5-frame window + 2 x 15 frames of offset search
MEL_SILENCE = -4.0           # value of a silent (or padded) mel frame

# Everything that determines the mel values. prepare.py writes this dict into each
# dataset's metadata, so it must stay JSON-serialisable; log_mel reads it, so it is the
# single source of truth.
MEL_CONFIG: dict = {
    "sample_rate": SAMPLE_RATE,
    "n_mels": 80,
    "n_fft": 800,
    "hop_length": 200,
    "win_length": 800,
    "window": "hann_periodic",
    "center": True,             # frame m is centred on sample m * hop_length
    "pad_mode": "zeros",
    "fmin": 55.0,
    "fmax": 7600.0,
    "mel_norm": "slaney",
    "mel_htk": False,
    "preemphasis": 0.97,
    "magnitude_power": 1.0,     # magnitude, not power, spectrogram
    "amin": 1e-5,               # floor before log10
    "ref_level_db": 20.0,       # db = 20 log10(max(M, amin)) - ref_level_db
    "min_level_db": -100.0,     # db at or below this maps to -max_abs_value
    "max_abs_value": 4.0,       # output = clip(2 a (db - min) / -min - a, -a, a)
    "fps": FPS,
    "mel_per_frame": MEL_PER_FRAME,
}

# audio_short threshold: up to 5 video frames of missing audio are padded with silence.
MAX_MISSING_AUDIO_S = 0.2

# Timestamps in containers are rounded (often to 1 ms); a frame stamped this little after
# the instant we sample still counts as showing. Far below half a frame at 30-60 fps.
_TS_TOLERANCE_S = 1e-3

# A decoded video this much shorter than its declared stream duration is truncated.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_SLACK_FRAC = 0.1

# 'crop' mode windows as fractions of the frame (top, bottom, left, right), per layout.
# Measured on the LRS2- and VoxCeleb2-style crops in ../shared/data/real_clips: the Haar
# face box has its centre at ~0.34 H and size ~0.6 H, so the mouth sits at 0.35-0.57 H.
# The plain lower half would show chin and collar; (0.37, 0.72, 0.15, 0.85) centres the
# mouth (and keeps the 1:2 aspect of the 48x96 crop for square frames). 'crop' is the
# plain lower half, for face crops framed more tightly; any window can be passed as
# ``crop_box`` (``--crop_box`` in data_prep.prepare).
FACE_CROP_BOX = (0.37, 0.72, 0.15, 0.85)
CROP_BOXES = {"lrs2": FACE_CROP_BOX, "lrs3": FACE_CROP_BOX, "vox2": FACE_CROP_BOX,
              "crop": (0.5, 1.0, 0.0, 1.0)}
CROP_BOX = CROP_BOXES["crop"]

LAYOUT_MODES = {"lrs2": "crop", "lrs3": "crop", "vox2": "crop", "crop": "crop",
                "raw": "detect"}

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

def mel_start(t: int) -> int:
  """First mel frame of the audio window of video frame ``t``: ``round(3.2 t)``, exactly."""
  # 16 t / 5 has a fractional part in {0, .2, .4, .6, .8}, so there is never a tie.
  return (16 * int(t) + 2) // 5


def num_mel_frames(num_frames: int) -> int:
  """Mel frames stored for ``num_frames`` video frames: ``ceil(3.2 num_frames)``."""
  return (16 * int(num_frames) + 4) // 5


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
    n_out = num_mel_frames(num_frames)
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
  windows = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
  basis, win = _mel_basis(), _window()
  mel = np.full((c["n_mels"], n_out), MEL_SILENCE, np.float32)
  amin, ref, min_db, top = c["amin"], c["ref_level_db"], c["min_level_db"], c["max_abs_value"]
  for s in range(0, n_frames, _STFT_CHUNK):
    spec = np.abs(np.fft.rfft(windows[s:s + _STFT_CHUNK] * win, axis=1))
    m = basis @ spec.T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(m, amin)) - ref
    mel[:, s:s + m.shape[1]] = np.clip(2 * top * (db - min_db) / -min_db - top, -top, top)
  return mel


# ----------------------------------------------------------------------------------------
# Lip crops.
# ----------------------------------------------------------------------------------------

_DETECT_EVERY = 3           # run the detector on every k-th frame, interpolate the rest
_DETECT_MAX_SIDE = 320      # detector input: longest side downscaled to this many pixels
_DETECT_MIN_FACE = 0.2      # smallest face searched, as a fraction of the shorter side
_MIN_FACE_FRACTION = 0.2    # faces kept in fewer than this fraction of tried frames: no_face
_MEDIAN_WINDOW = 5          # tried frames; running median that exposes stray detections
_SMOOTH_WINDOW = 7          # frames; moving average of the interpolated boxes
_SIZE_TOLERANCE = 1.5       # a box this much larger/smaller than the face is someone else
_MAX_JUMP = 0.5             # centre deviation from the running median, in face sizes
# The Haar box spans brow to lower lip; enlarge and lower it so that its lower half runs
# from the nose to below the chin, with the mouth a little above the middle.
_BOX_SCALE = 1.1
_BOX_SHIFT = 0.05           # fraction of the box size, downwards


@functools.lru_cache(maxsize=None)
def _cascade() -> cv2.CascadeClassifier:
  path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f"cannot load OpenCV's Haar cascade {path}")
  return cascade


def _resize(img: np.ndarray) -> np.ndarray:
  h, w = LIP_SIZE
  interp = cv2.INTER_AREA if img.shape[0] >= h else cv2.INTER_LINEAR
  return cv2.resize(img, (w, h), interpolation=interp)


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
  if x.shape[0] < 3:
    return x
  half = min(window // 2, (x.shape[0] - 1) // 2)
  padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
  views = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)
  return np.median(views, axis=-1)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
  half = min(window // 2, x.shape[0] // 2)
  if half == 0:
    return x
  padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
  kernel = np.ones(2 * half + 1) / (2 * half + 1)
  return np.stack([np.convolve(padded[:, j], kernel, mode="valid")
                   for j in range(x.shape[1])], axis=1)


def detect_faces(frames: np.ndarray, every: int = _DETECT_EVERY
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
  """Runs the Haar cascade on every ``every``-th frame (and the last).

  Returns:
    ``(indices, candidates)``: the frames tried and, for each, ``float [n, 3]`` boxes
    ``(cx, cy, size)`` in full-resolution pixels (``n`` may be 0).
  """
  t, h, w = frames.shape[:3]
  scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
  small = (max(1, round(w * scale)), max(1, round(h * scale)))
  min_side = max(20, int(_DETECT_MIN_FACE * min(small)))
  cascade = _cascade()
  indices = np.arange(0, t, max(1, every))
  if t and indices[-1] != t - 1:
    indices = np.append(indices, t - 1)
  candidates = []
  for i in indices:
    grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
      grey = cv2.resize(grey, small, interpolation=cv2.INTER_AREA)
    # Few neighbours: better recall on turned heads; _select_track drops the extra boxes.
    found = cascade.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=1.1,
                                     minNeighbors=3, minSize=(min_side, min_side))
    found = np.asarray(found, np.float64).reshape(-1, 4)
    candidates.append(np.stack([found[:, 0] + found[:, 2] / 2, found[:, 1] + found[:, 3] / 2,
                                np.maximum(found[:, 2], found[:, 3])], axis=1) / scale)
  return indices, candidates


def _select_track(candidates: list[np.ndarray]) -> np.ndarray:
  """One box per tried frame (NaN where none) following the clip's main face."""
  boxes = np.full((len(candidates), 3), np.nan)
  pool = np.concatenate([c for c in candidates if len(c)] or [np.zeros((0, 3))])
  if pool.shape[0] == 0:
    return boxes
  # The main face is the box that agrees (similar size and place) with the most others;
  # false positives are scattered and rarely agree with each other.
  others = pool[np.linspace(0, pool.shape[0] - 1, min(pool.shape[0], 2000)).astype(int)]
  big = np.maximum(pool[:, None, 2], others[None, :, 2])
  agree = ((np.abs(pool[:, None, 2] - others[None, :, 2]) <= 0.3 * big)
           & (np.hypot(pool[:, None, 0] - others[None, :, 0],
                       pool[:, None, 1] - others[None, :, 1]) <= _MAX_JUMP * big))
  ref = pool[np.argmax(agree.sum(axis=1))]
  for j, cand in enumerate(candidates):
    ok = cand[(cand[:, 2] <= ref[2] * _SIZE_TOLERANCE) & (cand[:, 2] >= ref[2] / _SIZE_TOLERANCE)]
    if len(ok):
      boxes[j] = ok[np.argmin(np.hypot(ok[:, 0] - ref[0], ok[:, 1] - ref[1]))]
  found = np.flatnonzero(~np.isnan(boxes[:, 0]))
  if found.size >= 3:
    med = _running_median(boxes[found], _MEDIAN_WINDOW)
    jump = np.hypot(*(boxes[found, :2] - med[:, :2]).T) > _MAX_JUMP * med[:, 2]
    resized = np.abs(boxes[found, 2] - med[:, 2]) > 0.3 * med[:, 2]
    boxes[found[jump | resized]] = np.nan
  return boxes


def _crop_lower_half(frame: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
  size = size * _BOX_SCALE
  cy = cy + _BOX_SHIFT * size / _BOX_SCALE
  x0, x1 = int(round(cx - size / 2)), int(round(cx + size / 2))
  y0, y1 = int(round(cy)), int(round(cy + size / 2))
  h, w = frame.shape[:2]
  if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
    # Replicate the border for faces at the frame edge rather than shrinking the crop.
    pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
    frame = np.pad(frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)], pad, mode="edge")
    return _resize(frame)
  return _resize(frame[y0:y1, x0:x1])


def lip_crop(frames: np.ndarray, mode: str, path: str = "",
             box: tuple[float, float, float, float] | None = None) -> np.ndarray:
  """Lip crops ``uint8 [T, 48, 96, 3]`` from RGB frames ``uint8 [T, H, W, 3]``.

  Args:
    frames: the clip's frames.
    mode: ``'crop'`` for face-cropped datasets (lower half of the frame), ``'detect'`` for
      uncropped video (face detection and tracking, see the module docstring).
    path: file name used in error messages.
    box: the 'crop' window (top, bottom, left, right) as fractions; default the lower half.

  Raises:
    FeatureError: kind ``no_face`` when ``'detect'`` finds a face in under 20% of the
      frames it tried.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got "
                     f"{frames.dtype} {frames.shape}")
  t, h = frames.shape[:2]
  out = np.empty((t, *LIP_SIZE, 3), np.uint8)
  if t == 0:
    return out
  if mode == "crop":
    w = frames.shape[2]
    top, bottom, left, right = box or CROP_BOX
    y0, y1 = int(round(top * h)), int(round(bottom * h))
    x0, x1 = int(round(left * w)), int(round(right * w))
    for i in range(t):
      out[i] = _resize(frames[i, y0:y1, x0:x1])
    return out
  if mode != "detect":
    raise ValueError(f"unknown lip_crop mode {mode!r}; expected 'crop' or 'detect'")

  indices, candidates = detect_faces(frames)
  boxes = _select_track(candidates)
  found = ~np.isnan(boxes[:, 0])
  if found.sum() < max(1, _MIN_FACE_FRACTION * indices.size):
    raise FeatureError(path, "no_face", f"face found in {int(found.sum())} of "
                       f"{indices.size} frames tried")
  every = np.arange(t)
  track = np.stack([np.interp(every, indices[found], boxes[found, j]) for j in range(3)],
                   axis=1)
  track = _moving_average(track, _SMOOTH_WINDOW)
  for i in range(t):
    out[i] = _crop_lower_half(frames[i], *track[i])
  return out


# ----------------------------------------------------------------------------------------
# Everything together.
# ----------------------------------------------------------------------------------------

def extract_clip(path: str, layout: str = "lrs2", min_frames: int = MIN_FRAMES,
                 audio_shift_frames: int = 0,
                 crop_box: tuple[float, float, float, float] | None = None,
                 decoded: Decoded | None = None) -> Clip:
  """Decodes ``path`` and returns its lip crops and mel, or raises ``FeatureError``.

  Args:
    path: a video file with an audio track.
    layout: a key of ``LAYOUT_MODES`` (face-cropped datasets, or ``'raw'`` to detect faces).
    min_frames: shortest accepted clip in frames at 25 fps.
    audio_shift_frames: delay the audio by this many video frames before the mel
      (positive: audio late), for tests and offset-detection demos.
    crop_box: override of the layout's crop window (see ``CROP_BOXES``).
    decoded: ``decode(path)`` when the caller already has it (it is not decoded again).
  """
  if layout not in LAYOUT_MODES:
    raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUT_MODES)}")
  dec = decoded if decoded is not None else decode(path)
  n = dec.frames.shape[0]
  if n < min_frames:
    raise FeatureError(dec.path, "too_short", f"{dec.duration:.2f} s = {n} frames at "
                       f"{FPS} fps, need at least {min_frames}")
  if dec.audio_missing > MAX_MISSING_AUDIO_S:
    raise FeatureError(dec.path, "audio_short", f"audio misses {dec.audio_missing:.2f} s "
                       f"of {dec.duration:.2f} s of video (more than {MAX_MISSING_AUDIO_S} s)")
  audio = shift_audio(dec.audio, audio_shift_frames) if audio_shift_frames else dec.audio
  lips = lip_crop(dec.frames, LAYOUT_MODES[layout], dec.path,
                  box=crop_box or CROP_BOXES.get(layout))
  mel = log_mel(audio, n)
  return Clip(lips=lips, mel=mel, num_frames=n, fps=float(FPS),
              source_fps=dec.source_fps, duration=dec.duration)
