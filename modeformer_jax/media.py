"""Reading audio-video files: the one decoding path of data preparation, ``detect`` and sync QC.

``Reader(path).chunks()`` yields a file piece by piece (memory bounded by one chunk, for an
hour of broadcast video) and ``decode(path)`` collects the same pieces for a short clip, so
the whole-clip and the streaming paths cannot disagree. What a file's container says is
honoured the way a player honours it:

Picture
  Display rotation (the display matrix of phone videos, ``VideoFrame.rotation``) and the
  sample aspect ratio (anamorphic 1440x1080 HDV, DV, DVD) are applied, so faces are upright
  and round: a frame is first stretched to square pixels (widened when SAR > 1, made taller
  when SAR < 1), then turned. Interlaced frames are used as decoded (both fields).

Time
  Video is resampled to 25 fps by timestamp: output frame ``t`` is the source frame whose
  timestamp is nearest to ``t / 25`` s after the first video frame (ties: the earlier one),
  so 29.97/30 fps and variable-frame-rate sources (dropped frames, timestamps kept) carry no
  systematic lag; frames are repeated or dropped, never blended. The output has
  ``floor(duration * 25)`` frames; the duration runs from the first frame's timestamp to the
  end of the last frame (its length: the median of the last 100 frame steps). Audio is placed
  on the same clock, each stream by its own start time: audio before the first frame is
  dropped, a late start is padded with silence.

Sound (``choose_audio``)
  Every channel of every audio stream is a candidate (LFE channels never are). The first
  ``SCAN_S`` seconds of each are measured: level (95th percentile of 20-ms RMS, dBFS) and
  speech dynamics (10th-to-90th percentile spread of the 300-3400 Hz band energy in 20-ms
  frames, dB: speech with its pauses spreads 20-40 dB, tone, room tone and steady effects
  beds a few dB). The channels that sound like speech are mixed with equal weights (a mono
  file, both sides of a stereo file, the centre of a 5.1 mix, the dialogue tracks of a
  multi-track MOV/MXF); with no speech-like channel, all audible ones are. The choice and its
  reason travel with the audio (``AudioChoice.describe``). Audio is resampled to 16 kHz
  with soxr.

Errors are ``FeatureError`` (file, kind, reason): ``corrupt`` (cannot be opened or decoded,
or truncated), ``no_video``, ``no_audio``; callers add ``too_short``, ``audio_short``,
``no_face``.
"""
from __future__ import annotations

import dataclasses
import fractions
import math
from typing import Iterator

import av
import cv2
import numpy as np
import soxr

from modeformer_jax.input_spec import SAMPLE_RATE
from modeformer_jax.windows import FPS

# Timestamps in containers are rounded (often to 1 ms); compared with the instants we sample,
# a frame this much late still counts as on time (far below half a frame at 30-60 fps).
TS_TOLERANCE_S = 1e-3

# A decoded video this much shorter than its declared stream duration is truncated.
TRUNCATION_SLACK_S = 0.5
TRUNCATION_SLACK_FRAC = 0.1

SCAN_S = 30.0                 # seconds of each audio channel measured to choose the speech
SILENT_DBFS = -60.0           # a channel whose loud 5% stays below this is silent
SPEECH_SPREAD_DB = 12.0       # band-energy spread from which a channel sounds like speech
SPEECH_SPREAD_MARGIN_DB = 10.0  # channels this far below the most speech-like are left out

ONLY_CHANNEL = "the only channel"   # the choice's reason for a file with one mono track

ERROR_KINDS = ("corrupt", "no_video", "no_audio", "audio_short", "too_short", "no_face",
               "no_speech")


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


# ----------------------------------------------------------------------------------------
# Time bookkeeping.
# ----------------------------------------------------------------------------------------

def num_output_frames(duration: float, fps: float = FPS) -> int:
  """Frames at ``fps`` whose whole display interval lies within ``duration`` seconds."""
  if duration <= 0:
    return 0
  return int(math.floor((duration + TS_TOLERANCE_S) * fps))


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
    int64 ``[T]``: output frame ``t`` is the source frame whose timestamp is nearest to
    ``t / fps`` (ties and timestamps within 1 ms of a tie: the earlier frame).
  """
  ts = np.asarray(timestamps, dtype=np.float64)
  if ts.ndim != 1:
    raise ValueError(f"timestamps must be 1-D, got shape {ts.shape}")
  n_out = num_output_frames(duration, fps)
  if ts.size == 0 or n_out == 0:
    return np.zeros((0,), np.int64)
  order = np.argsort(ts, kind="stable")
  sorted_ts = ts[order]
  instants = np.arange(n_out, dtype=np.float64) / fps
  # The later neighbour wins only when it is nearer by more than the timestamp rounding.
  after = np.clip(np.searchsorted(sorted_ts, instants, side="left"), 0, ts.size - 1)
  before = np.clip(after - 1, 0, ts.size - 1)
  use_after = (sorted_ts[after] - instants) < (instants - sorted_ts[before]) - TS_TOLERANCE_S
  use_after |= sorted_ts[before] > instants     # nothing before this instant
  pos = np.where(use_after, after, before)
  return order[pos].astype(np.int64)


class _NearestFrames:
  """``frame_indices_for_timestamps`` as a stream: frames in, output frames out.

  Each output frame comes with ``held``: True when it shows the same source frame as the
  output frame before it (the source had no frame of its own near that instant: a dropped
  frame of a variable-rate file, or a source slower than 25 fps). ``held_frames`` counts
  them and ``unused_frames`` counts source frames no output instant showed (sources faster
  than 25 fps, or several frames inside one 40 ms slot).
  """

  def __init__(self):
    self.next_t = 0                 # next output frame to emit
    self.prev: np.ndarray | None = None
    self.prev_t = 0.0
    self.prev_shown = False         # ``prev`` was emitted at least once
    self.held_frames = 0
    self.unused_frames = 0

  def _emit(self) -> tuple[np.ndarray, bool]:
    held = self.prev_shown
    self.prev_shown = True
    self.held_frames += held
    self.next_t += 1
    return self.prev, held

  def push(self, img: np.ndarray, rel: float) -> list[tuple[np.ndarray, bool]]:
    """A source frame at ``rel`` s (presentation order); returns the output frames decided
    as ``(picture, held)``."""
    out = []
    if self.prev is not None:
      # Instants up to this frame's time that are nearer the previous frame show that one.
      while True:
        inst = self.next_t / FPS
        if inst > rel or (rel - inst) < (inst - self.prev_t) - TS_TOLERANCE_S:
          break
        out.append(self._emit())
      self.unused_frames += not self.prev_shown
    self.prev, self.prev_t, self.prev_shown = img, rel, False
    return out

  def finish(self, total: int) -> list[tuple[np.ndarray, bool]]:
    out = []
    while self.next_t < total:
      out.append(self._emit())
    return out


# ----------------------------------------------------------------------------------------
# Streams.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class StreamInfo:
  """What is known about a file before decoding it."""
  path: str
  width: int                  # as displayed: after the sample aspect ratio and rotation
  height: int
  source_fps: float
  duration: float | None      # declared by the container (None when it does not say)
  stored_width: int = 0       # as coded
  stored_height: int = 0
  sample_aspect: fractions.Fraction = fractions.Fraction(1)
  declared_video_s: float | None = None   # the video stream's exact duration (mp4/mov/mkv)


def _display_size(w: int, h: int, sar: fractions.Fraction) -> tuple[int, int]:
  """Square-pixel size of a ``w`` x ``h`` picture with sample aspect ratio ``sar``."""
  if sar > 1:
    w = int(round(w * sar / 2)) * 2
  elif sar < 1:
    h = int(round(h / sar / 2)) * 2
  return w, h


def _sar(vstream) -> fractions.Fraction:
  sar = vstream.sample_aspect_ratio or vstream.codec_context.sample_aspect_ratio
  if not sar or sar <= 0:
    return fractions.Fraction(1)
  sar = fractions.Fraction(sar)
  # Encoders write 1:1 as 0:1 or round tiny differences; those are square pixels.
  return fractions.Fraction(1) if abs(sar - 1) < 0.01 else sar


def _declares_exact_duration(container) -> bool:
  # mp4/mov/mkv headers state durations; mpg/avi durations may be bitrate estimates.
  name = container.format.name or ""
  return any(key in name for key in ("mp4", "mov", "matroska", "webm"))


def probe(path: str) -> StreamInfo:
  """Opens ``path`` and reads its stream parameters (raises ``FeatureError``)."""
  path = str(path)
  try:
    with av.open(path) as c:
      if not c.streams.video:
        raise FeatureError(path, "no_video", "no video stream")
      if not c.streams.audio:
        raise FeatureError(path, "no_audio", "no audio stream")
      v, a = c.streams.video[0], c.streams.audio[0]
      dur = None
      if c.duration:
        dur = float(c.duration) / av.time_base
      elif v.duration and v.time_base:
        dur = float(v.duration * v.time_base)
      declared = None
      if _declares_exact_duration(c) and v.duration and v.time_base:
        declared = float(v.duration * v.time_base)
      rate = int(a.rate or a.codec_context.sample_rate or 0)
      if rate <= 0:
        raise FeatureError(path, "no_audio", "audio stream has no sample rate")
      sw, sh = int(v.codec_context.width), int(v.codec_context.height)
      if sw <= 0 or sh <= 0:
        raise FeatureError(path, "corrupt", "video stream has no picture size")
      sar = _sar(v)
      w, h = _display_size(sw, sh, sar)
      # The display matrix reaches us on the frames (``VideoFrame.rotation``): the first one
      # tells the displayed size up front.
      rot = 0
      try:
        rot = next(iter(c.decode(v))).rotation or 0
      except StopIteration:
        pass                # no frame at all: decoding reports it
      if int(round(rot / 90.0)) % 2:
        w, h = h, w
      return StreamInfo(path, w, h, float(v.average_rate or v.guessed_rate or FPS), dur,
                        sw, sh, sar, declared)
  except (av.FFmpegError, OSError) as e:
    raise FeatureError(path, "corrupt", f"cannot open: {e}") from e


def _orient(img: np.ndarray, sar: fractions.Fraction, rotation: int) -> np.ndarray:
  """A decoded picture as displayed: square pixels, then turned by ``rotation`` (CCW)."""
  if sar != 1:
    h, w = img.shape[:2]
    dw, dh = _display_size(w, h, sar)
    img = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR if sar > 1 else
                     cv2.INTER_AREA)
  k = int(round(rotation / 90.0)) % 4
  if k:
    img = np.ascontiguousarray(np.rot90(img, k=k))
  return img


# ----------------------------------------------------------------------------------------
# Choosing the audio.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class AudioChannel:
  """One channel of one audio stream and what its first ``SCAN_S`` seconds sound like."""
  stream: int                 # index among the file's audio streams
  channel: int                # index within the stream
  name: str                   # FFmpeg's channel name: FL, FR, FC, LFE, ... or "mono"
  layout: str                 # the stream's layout name: mono, stereo, 5.1, ...
  level_db: float = -120.0    # loud 5% of 20-ms RMS, dBFS
  spread_db: float = 0.0      # 10-90 percentile spread of 300-3400 Hz band energy, dB
  speech: bool = False
  measured: bool = False      # level and spread were read (not for a lone mono track)

  @property
  def label(self) -> str:
    return f"#{self.stream + 1}:{self.name}"


@dataclasses.dataclass
class AudioChoice:
  """The channels mixed into the mono analysis track, with the reason."""
  channels: list[AudioChannel]          # chosen
  candidates: list[AudioChannel]        # every channel measured
  reason: str
  num_streams: int = 1

  @property
  def trivial(self) -> bool:
    """True when nothing was left out (a mono file, or both sides of a stereo file)."""
    return self.num_streams == 1 and len(self.channels) == len(self.candidates)

  def weights(self, stream: int, num_channels: int) -> np.ndarray:
    """Mixing weights of stream ``stream``'s channels (all chosen channels sum to 1)."""
    w = np.zeros(num_channels, np.float32)
    for ch in self.channels:
      if ch.stream == stream and ch.channel < num_channels:
        w[ch.channel] = 1.0 / len(self.channels)
    return w

  @property
  def note(self) -> str:
    """``describe()`` when a choice was made (something left out, or no speech found)."""
    return "" if self.trivial and self.reason in ("speech", ONLY_CHANNEL) else self.describe()

  @property
  def streams(self) -> list[int]:
    return sorted({ch.stream for ch in self.channels})

  def describe(self) -> str:
    """E.g. ``'FC of 5.1 (speech; left out FL FR LFE BL BR)'`` or ``'track 3 of 4 (...)'``."""
    if self.num_streams == 1:
      layout = self.candidates[0].layout if self.candidates else "?"
      what = "+".join(ch.name for ch in self.channels) + f" of {layout}"
    else:
      what = ("track" if len(self.streams) == 1 else "tracks") + " " + "+".join(
          str(s + 1) for s in self.streams) + f" of {self.num_streams}"
      if any(ch.layout != "mono" for ch in self.channels):
        what += " (" + " ".join(ch.label for ch in self.channels) + ")"
    out = [ch.label if self.num_streams > 1 else ch.name for ch in self.candidates
           if ch not in self.channels]
    return f"{what} ({self.reason}" + (f"; left out {' '.join(out)})" if out else ")")

  def to_dict(self) -> dict:
    return {"source": self.describe(), "channels": [ch.label for ch in self.channels],
            "measured": [{"channel": ch.label, "level_db": round(ch.level_db, 1),
                          "speech_spread_db": round(ch.spread_db, 1), "speech": ch.speech}
                         for ch in self.candidates if ch.measured]}


def _layout_names(layout) -> list[str]:
  names = [ch.name for ch in layout.channels]
  return names if len(names) > 1 else ["mono"]


def channel_stats(x: np.ndarray, rate: int) -> tuple[float, float]:
  """(level dBFS, speech band spread dB) of a mono signal (see the module docstring)."""
  n = int(round(0.02 * rate))
  frames = x[:x.size // n * n].reshape(-1, n).astype(np.float64)
  if frames.shape[0] < 10:
    return -120.0, 0.0
  rms = np.sqrt(np.mean(frames ** 2, axis=1))
  level = float(np.percentile(20 * np.log10(rms + 1e-9), 95))
  spec = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
  f = np.fft.rfftfreq(n, 1.0 / rate)
  band = spec[:, (f >= 300) & (f <= 3400)].sum(axis=1)
  # Frames of digital silence would stretch the spread without meaning: floor at -100 dB
  # below the loudest frame.
  db = 10 * np.log10(band + band.max() * 1e-10 + 1e-20)
  return level, float(np.percentile(db, 90) - np.percentile(db, 10))


def choose_audio(path: str, scan_s: float = SCAN_S) -> AudioChoice:
  """Measures every channel of every audio stream and chooses what to mix (module doc)."""
  path = str(path)
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError) as e:
    raise FeatureError(path, "corrupt", f"cannot open: {e}") from e
  try:
    astreams = list(container.streams.audio)
    if not astreams:
      raise FeatureError(path, "no_audio", "no audio stream")
    if len(astreams) == 1 and astreams[0].codec_context.layout.nb_channels <= 1:
      # Nothing to choose: skip reading the file's first SCAN_S seconds a second time.
      only = AudioChannel(0, 0, "mono", "mono")
      return AudioChoice([only], [only], ONLY_CHANNEL, 1)
    cands: list[AudioChannel] = []
    parts: dict[int, list[np.ndarray]] = {i: [] for i in range(len(astreams))}
    got = dict.fromkeys(range(len(astreams)), 0.0)
    index = {s.index: i for i, s in enumerate(astreams)}
    try:
      for packet in container.demux(*astreams):
        i = index[packet.stream.index]
        if got[i] >= scan_s:
          if all(v >= scan_s for v in got.values()):
            break
          continue
        for frame in packet.decode():
          arr = frame.to_ndarray()
          if not frame.format.is_planar:
            arr = arr.reshape(-1, frame.layout.nb_channels).T
          parts[i].append(arr.astype(np.float32, copy=False))
          got[i] += frame.samples / float(frame.sample_rate or 1)
    except av.FFmpegError:
      pass   # a damaged stream: decode() reports it; choose from what was read
    for i, s in enumerate(astreams):
      names = _layout_names(s.codec_context.layout)
      x = np.concatenate(parts[i], axis=1) if parts[i] else np.zeros((len(names), 0))
      if np.issubdtype(x.dtype, np.integer):
        x = x / float(np.iinfo(x.dtype).max)
      rate = int(s.rate or s.codec_context.sample_rate or SAMPLE_RATE)
      for c, name in enumerate(names[:x.shape[0]] if x.shape[0] else names):
        ch = AudioChannel(i, c, name, s.codec_context.layout.name
                          if len(names) > 1 else "mono")
        if c < x.shape[0] and not name.startswith("LFE"):
          ch.level_db, ch.spread_db = channel_stats(x[c], rate)
          ch.measured = True
        cands.append(ch)
  finally:
    container.close()
  usable = [ch for ch in cands if not ch.name.startswith("LFE") and ch.level_db > SILENT_DBFS]
  best = max((ch.spread_db for ch in usable), default=0.0)
  for ch in usable:
    ch.speech = (ch.spread_db >= SPEECH_SPREAD_DB
                 and ch.spread_db >= best - SPEECH_SPREAD_MARGIN_DB)
  chosen = [ch for ch in usable if ch.speech]
  reason = "speech"
  if not chosen:
    chosen, reason = usable, "no speech-like channel: every audible one"
  if not chosen:
    chosen = [ch for ch in cands if not ch.name.startswith("LFE")] or cands
    reason = "every channel is silent"
  return AudioChoice(chosen, cands, reason, len(astreams))


# ----------------------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Chunk:
  """Consecutive output frames ``start .. start + len(frames) - 1`` and new audio samples."""
  start: int
  frames: np.ndarray          # uint8 [n, H, W, 3] RGB at 25 fps, as displayed
  audio: np.ndarray           # float32 mono 16 kHz samples that follow the previous chunk's
  # True where an output frame repeats the picture of the frame before it (``_NearestFrames``).
  held: np.ndarray | None = None
  # Samples of silence the reader put in front of a late-starting audio stream (known once
  # any audio has been emitted; the audio clock's real sound starts there).
  audio_lead: int = 0


class _Track:
  """One audio stream's chosen channels, mixed to mono, at 16 kHz, on the video clock."""

  def __init__(self, stream, weights: np.ndarray):
    self.stream = stream
    self.weights = weights
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    self.resampler = av.AudioResampler(format="fltp")      # planar float, layout kept
    self.sox = (soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                if rate != SAMPLE_RATE else None)
    self.start: float | None = None     # time of its first sample
    self.pending: list[np.ndarray] = []  # before the video clock is known
    self.aligned = False
    self.lead = 0                       # samples of silence put in front (late start)
    self.skip = 0                       # samples still to drop (started before the video)
    self.ready: list[np.ndarray] = []
    self.size = 0                       # samples in ``ready``

  def _mix(self, frame) -> np.ndarray:
    parts = []
    w = self.weights
    # All channels at one weight (a mono file, both sides of stereo): the mean times the
    # stream's share, which is the plain mean bit for bit when this stream is all the audio.
    uniform = bool(np.all(w == w[0])) and w[0] > 0
    for out in self.resampler.resample(frame):
      arr = out.to_ndarray()
      if uniform and arr.shape[0] == w.size:
        x = arr.mean(axis=0, dtype=np.float32)
        parts.append(x if w[0] * w.size == 1 else x * np.float32(w[0] * w.size))
      else:
        parts.append((w[:arr.shape[0]] @ arr).astype(np.float32))
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if self.sox is not None:
      x = self.sox.resample_chunk(x, last=frame is None).astype(np.float32)
    return x

  def push(self, frame, origin: float | None) -> None:
    if self.start is None and frame is not None and frame.pts is not None:
      self.start = float(frame.time)
    self.place(self._mix(frame), origin)

  def place(self, x: np.ndarray, origin: float | None) -> None:
    if not self.aligned:
      self.pending.append(x)
      if origin is None:
        return
      start = self.start if self.start is not None else origin
      lead = int(round((start - origin) * SAMPLE_RATE))
      x = np.concatenate(self.pending)
      self.pending.clear()
      self.aligned = True
      self.lead = max(0, lead)
      self.skip = max(0, -lead)
      if lead > 0:
        self._add(np.zeros(lead, np.float32))
    if self.skip:
      drop = min(self.skip, x.size)
      x, self.skip = x[drop:], self.skip - drop
    self._add(x)

  def _add(self, x: np.ndarray) -> None:
    if x.size:
      self.ready.append(x)
      self.size += x.size

  def take(self, n: int) -> np.ndarray:
    x = np.concatenate(self.ready) if len(self.ready) != 1 else self.ready[0]
    out, rest = x[:n], x[n:]
    self.ready = [rest] if rest.size else []
    self.size = rest.size
    return out


class Reader:
  """Decodes one file in chunks (``chunks()``); see the module docstring for the rules.

  After ``chunks()`` is exhausted: ``source_frames``,
  ``duration`` (s of video), ``audio_lead_s`` (silence put in front of a late audio start),
  ``audio_samples`` (samples emitted, the lead included), ``held_frames`` and
  ``unused_frames`` (``_NearestFrames``).
  """

  def __init__(self, path: str, chunk_frames: int = 25, audio: AudioChoice | None = None):
    self.path = str(path)
    self.info = probe(self.path)
    self.audio = audio if audio is not None else choose_audio(self.path)
    self.chunk_frames = int(chunk_frames)
    self.source_frames = 0
    self.duration = 0.0
    self.audio_lead_s = 0.0
    self.audio_samples = 0
    self.held_frames = 0
    self.unused_frames = 0

  def chunks(self) -> Iterator[Chunk]:
    """Yields ``Chunk``s of ``chunk_frames`` output frames (the last may be shorter).

    A file that breaks part-way raises ``FeatureError`` after the chunks decoded so far.
    """
    path, info = self.path, self.info
    container = av.open(path)
    try:
      vstream = container.streams.video[0]
      vstream.thread_type = "AUTO"
      astreams = list(container.streams.audio)
      tracks = {astreams[i].index: _Track(astreams[i], self.audio.weights(
          i, astreams[i].codec_context.layout.nb_channels)) for i in self.audio.streams}
      nominal = info.source_fps or FPS
      origin: float | None = None
      resample = _NearestFrames()
      frames: list[np.ndarray] = []
      held: list[bool] = []
      start = 0
      steps: list[float] = []
      last_rel = 0.0

      def mixed(final: bool) -> np.ndarray:
        ts = list(tracks.values())
        n = max(t.size for t in ts) if final else min(t.size for t in ts)
        if n == 0:
          return np.zeros(0, np.float32)
        out = np.zeros(n, np.float32)
        for t in ts:
          x = t.take(n)
          if len(ts) == 1:
            return x
          out[:x.size] += x
        return out

      def take_chunk(final: bool = False) -> Chunk | None:
        nonlocal frames, held, start
        audio = mixed(final)
        if not frames and not (final and audio.size):
          return None
        self.audio_samples += audio.size
        # Several tracks: sound exists from the earliest real start.
        lead = min((t.lead for t in tracks.values() if t.aligned), default=0)
        ch = Chunk(start, np.stack(frames) if frames else
                   np.zeros((0, info.height, info.width, 3), np.uint8), audio,
                   np.array(held, bool), lead)
        start += len(frames)
        frames, held = [], []
        return ch

      try:
        for packet in container.demux(vstream, *[t.stream for t in tracks.values()]):
          for frame in packet.decode():
            if packet.stream.type == "audio":
              tracks[packet.stream.index].push(frame, origin)
              continue
            t = float(frame.time) if frame.pts is not None else last_rel + 1.0 / nominal
            img = _orient(frame.to_ndarray(format="rgb24"), info.sample_aspect,
                          frame.rotation or 0)
            if origin is None:
              origin = t
              for tr in tracks.values():
                if tr.pending:          # audio that came first waits for the video clock
                  tr.place(np.zeros(0, np.float32), origin)
            rel = t - origin
            if self.source_frames and rel > last_rel:
              steps.append(rel - last_rel)
              del steps[:-100]
            self.source_frames += 1
            last_rel = max(last_rel, rel)
            for out, h in resample.push(img, rel):
              frames.append(out)
              held.append(h)
              if len(frames) == self.chunk_frames:
                yield take_chunk()
        for tr in tracks.values():
          tr.push(None, origin)
      except av.FFmpegError as e:
        raise FeatureError(path, "corrupt", f"decoding failed at "
                           f"{resample.next_t / FPS:.2f} s: {e}") from e
      if resample.prev is None:
        raise FeatureError(path, "corrupt", "no video frame could be decoded")
      last_step = float(np.median(steps)) if steps else 1.0 / nominal
      self.duration = last_rel + last_step
      total = num_output_frames(self.duration, FPS)
      for out, h in resample.finish(total):
        frames.append(out)
        held.append(h)
        if len(frames) == self.chunk_frames:
          yield take_chunk()
      self.audio_lead_s = max((t.lead for t in tracks.values()), default=0) / SAMPLE_RATE
      self.held_frames, self.unused_frames = resample.held_frames, resample.unused_frames
      last = take_chunk(final=True)
      if last is not None:
        yield last
    finally:
      container.close()


@dataclasses.dataclass
class Decoded:
  """A decoded file on a common clock that starts at the first video frame."""
  path: str
  frames: np.ndarray      # uint8 [T, H, W, 3] RGB at 25 fps, as displayed
  audio: np.ndarray       # float32 [N] mono at 16 kHz
  source_fps: float       # source frames per second of video (average, for VFR)
  duration: float         # video duration in seconds
  # Seconds of the video's duration without real audio (late start or early end), which
  # ``audio`` fills with silence at the start or simply lacks at the end.
  audio_missing: float = 0.0
  audio_source: AudioChoice | None = None


def decode(path: str) -> Decoded:
  """Decodes a whole file: RGB frames at 25 fps and mono float32 audio at 16 kHz.

  Raises:
    FeatureError: kind ``corrupt`` (cannot be opened or decoded, or truncated),
      ``no_video`` or ``no_audio`` (missing stream or nothing decodable in it).
  """
  reader = Reader(path, chunk_frames=250)
  frames, audio = [], []
  for ch in reader.chunks():
    frames.append(ch.frames)
    audio.append(ch.audio)
  info = reader.info
  out_frames = (np.concatenate(frames) if frames else
                np.zeros((0, info.height, info.width, 3), np.uint8))
  audio_arr = np.concatenate(audio) if audio else np.zeros(0, np.float32)
  if audio_arr.size <= int(round(reader.audio_lead_s * SAMPLE_RATE)):
    raise FeatureError(reader.path, "no_audio", "audio stream has no decodable samples")
  duration = reader.duration
  declared = info.declared_video_s
  if declared is not None and duration + max(TRUNCATION_SLACK_S,
                                             TRUNCATION_SLACK_FRAC * declared) < declared:
    raise FeatureError(reader.path, "corrupt", f"truncated: decoded {duration:.2f} s of "
                       f"video, the stream declares {declared:.2f} s")
  tail = max(0.0, duration - audio_arr.size / SAMPLE_RATE)
  missing = min(duration, reader.audio_lead_s + tail)
  return Decoded(path=reader.path, frames=out_frames, audio=np.ascontiguousarray(audio_arr),
                 source_fps=reader.source_frames / duration, duration=duration,
                 audio_missing=missing, audio_source=reader.audio)
