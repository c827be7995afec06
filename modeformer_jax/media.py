"""Reading audio-video files: the one decoding path of data preparation, ``detect`` and sync QC.

``Reader(path).chunks()`` yields a file piece by piece (memory bounded by one chunk, for an
hour of broadcast video) and ``decode(path)`` collects the same pieces for a short clip, so
the whole-clip and the streaming paths cannot disagree. ``LiveReader`` reads a live source
(network, stdin, a growing file) through the same per-frame decoding (``_Decoder``), with
the live clock rules in its docstring. What a file's container says is
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
import os
import sys
import threading
import time
from typing import Iterator

import av
import cv2
import numpy as np
import soxr

from modeformer_jax.errors import FeatureError
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
  # Live sources (``LiveReader``): the run the chunk belongs to (a new run, with its own
  # clock from frame 0, starts at each (re)connection and timestamp discontinuity) and the
  # ``time.monotonic()`` at which each output frame was decided (its arrival).
  run: int = 0
  arrival: np.ndarray | None = None


class _Track:
  """One audio stream's chosen channels, mixed to mono, at 16 kHz, on the video clock.

  ``follow`` (live sources): after the first sample, frames are placed by their timestamps
  too: a hole of more than ``AUDIO_SLIP_S`` (lost packets) is filled with silence, an
  overlap of more than that (a loop or splice that starts before the last sound ended) is
  cut from the new frame, and a jump beyond ``JUMP_S`` forward or ``JUMP_BACK_S`` back
  raises ``_Discontinuity``. Files are placed sample after sample from the first
  timestamp, as decoded.
  """

  def __init__(self, stream, weights: np.ndarray, follow: bool = False):
    self.stream = stream
    self.weights = weights
    self.rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    self.resampler = av.AudioResampler(format="fltp")      # planar float, layout kept
    self.sox = (soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                if self.rate != SAMPLE_RATE else None)
    self.follow = follow
    self.start: float | None = None     # time of its first sample
    self.received = 0                   # source samples decoded (at ``rate``)
    self.gaps = 0                       # holes filled and overlaps cut (``follow``)
    self.gap_s = 0.0                    # their sum, s (holes positive)
    self.pending: list[np.ndarray] = []  # before the video clock is known
    self.aligned = False
    self.lead = 0                       # samples of silence put in front (late start)
    self.skip = 0                       # samples still to drop (started before the video)
    self.ready: list[np.ndarray] = []
    self.size = 0                       # samples in ``ready``

  def _resample(self, x: np.ndarray, last: bool = False) -> np.ndarray:
    if self.sox is not None:
      x = self.sox.resample_chunk(x, last=last).astype(np.float32)
    return x

  def _mix(self, frame, drop: int = 0) -> np.ndarray:
    """The frame's chosen channels mixed and resampled, less its first ``drop`` samples."""
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
    return self._resample(x[drop:], last=frame is None)

  def push(self, frame, origin: float | None) -> None:
    drop = 0
    if frame is not None and frame.pts is not None:
      t = float(frame.time)
      if self.start is None:
        self.start = t
      elif self.follow and self.rate:
        hole = t - (self.start + self.received / self.rate)
        if hole > JUMP_S or hole < -JUMP_BACK_S:
          raise _Discontinuity(frame, f"audio timestamps jumped by {hole:+.2f} s")
        if abs(hole) > AUDIO_SLIP_S:    # placed by timestamp, not after the last sample
          self.gaps += 1
          self.gap_s += hole
          n = int(round(abs(hole) * self.rate))
          if hole > 0:                  # lost packets: silence keeps the clock
            self.received += n
            self.place(self._resample(np.zeros(n, np.float32)), origin)
          else:                         # sound already placed: cut it from this frame
            drop = min(n, frame.samples)
    if frame is not None:
      self.received += frame.samples - drop
    self.place(self._mix(frame, drop), origin)

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


# Live sources: timestamps that move more than this forward (s) or back (s) from where their
# stream was are a discontinuity (a restarted encoder, MPEG-TS's 33-bit wrap, a splice), and
# the clock starts a new run; smaller forward holes are a frozen picture (held frames) or
# silence, and audio holes or overlaps over AUDIO_SLIP_S are corrected (not let accumulate:
# 24 ms at every loop of a looping playout would move the sound a frame in two minutes).
JUMP_S = 2.0
JUMP_BACK_S = 0.5
AUDIO_SLIP_S = 0.005


class _Discontinuity(Exception):
  """Timestamps of a live source jumped (``JUMP_S``); ``frame`` starts the next run."""

  def __init__(self, frame, reason: str):
    super().__init__(reason)
    self.frame = frame


class _Decoder:
  """The decoding loop's per-frame work, shared by ``Reader`` (a file) and ``LiveReader``
  (one run of a live source): pictures oriented and put on the 25 fps clock by nearest
  timestamp, each audio track placed on that clock and mixed, chunks of ``chunk_frames``.

  ``decode(packet)`` yields the chunks a packet completes, ``end()`` the rest when the run
  ends. ``live`` follows timestamp holes and raises ``_Discontinuity`` (``JUMP_S``).
  """

  def __init__(self, info: StreamInfo, vstream, astreams: list, audio: AudioChoice,
               chunk_frames: int, live: bool = False, run: int = 0, near: float | None = None):
    self.info, self.chunk_frames, self.live, self.run = info, int(chunk_frames), live, run
    # After a discontinuity at timestamp ``near``: frames of each stream are dropped until
    # one lands within JUMP_S of it (the other stream's frames from before the jump, still
    # coming out of its decoder).
    self.near, self.joined = near, set()
    self.dropped_frames = 0
    self.vstream = vstream
    self.tracks = {astreams[i].index: _Track(astreams[i], audio.weights(
        i, astreams[i].codec_context.layout.nb_channels), follow=live) for i in audio.streams}
    self.nominal = info.source_fps or FPS
    self.origin: float | None = None
    self.resample = _NearestFrames()
    self.frames: list[np.ndarray] = []
    self.held: list[bool] = []
    self.arrival: list[float] = []
    self.start = 0
    self.steps: list[float] = []
    self.last_rel = 0.0
    self.source_frames = 0
    self.audio_samples = 0
    self.duration = 0.0

  @property
  def streams(self) -> list:
    """The streams to demux: the picture and the chosen audio."""
    return [self.vstream, *[t.stream for t in self.tracks.values()]]

  def _mixed(self, final: bool) -> np.ndarray:
    ts = list(self.tracks.values())
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

  def _take(self, final: bool = False) -> Chunk | None:
    audio = self._mixed(final)
    if not self.frames and not (final and audio.size):
      return None
    self.audio_samples += audio.size
    # Several tracks: sound exists from the earliest real start.
    lead = min((t.lead for t in self.tracks.values() if t.aligned), default=0)
    info = self.info
    ch = Chunk(self.start, np.stack(self.frames) if self.frames else
               np.zeros((0, info.height, info.width, 3), np.uint8), audio,
               np.array(self.held, bool), lead, self.run,
               np.array(self.arrival) if self.live else None)
    self.start += len(self.frames)
    self.frames, self.held, self.arrival = [], [], []
    return ch

  def _emit(self, out: list[tuple[np.ndarray, bool]]) -> Iterator[Chunk]:
    now = time.monotonic() if self.live else 0.0     # arrival times matter live only
    for img, h in out:
      self.frames.append(img)
      self.held.append(h)
      if self.live:
        self.arrival.append(now)
      if len(self.frames) == self.chunk_frames:
        yield self._take()

  def frame(self, stream, frame) -> Iterator[Chunk]:
    """One decoded frame of ``stream``; yields the chunks it completes."""
    if self.near is not None and stream.index not in self.joined:
      if frame.pts is not None and abs(float(frame.time) - self.near) > JUMP_S:
        self.dropped_frames += 1
        return
      self.joined.add(stream.index)
    if stream.type == "audio":
      self.tracks[stream.index].push(frame, self.origin)
      return
    t = float(frame.time) if frame.pts is not None else self.last_rel + 1.0 / self.nominal
    if self.live and self.origin is not None:
      step = t - self.origin - self.last_rel
      if step > JUMP_S or step < -JUMP_BACK_S:
        raise _Discontinuity(frame, f"video timestamps jumped by {step:+.2f} s")
    img = _orient(frame.to_ndarray(format="rgb24"), self.info.sample_aspect,
                  frame.rotation or 0)
    if self.origin is None:
      self.origin = t
      for tr in self.tracks.values():
        if tr.pending:          # audio that came first waits for the video clock
          tr.place(np.zeros(0, np.float32), self.origin)
    rel = t - self.origin
    if self.source_frames and rel > self.last_rel:
      self.steps.append(rel - self.last_rel)
      del self.steps[:-100]
    self.source_frames += 1
    self.last_rel = max(self.last_rel, rel)
    yield from self._emit(self.resample.push(img, rel))

  def decode(self, packet) -> Iterator[Chunk]:
    """Decodes one demuxed packet; yields the chunks it completes."""
    for frame in packet.decode():
      yield from self.frame(packet.stream, frame)

  def end(self) -> Iterator[Chunk]:
    """The run ended: flushes the audio, ends the video one median frame step after the
    last frame's timestamp and yields the remaining chunks (the last with all the audio)."""
    for tr in self.tracks.values():
      tr.push(None, self.origin)
    if self.resample.prev is None:
      return
    last_step = float(np.median(self.steps)) if self.steps else 1.0 / self.nominal
    self.duration = self.last_rel + last_step
    yield from self._emit(self.resample.finish(num_output_frames(self.duration, FPS)))
    last = self._take(final=True)
    if last is not None:
      yield last

  @property
  def audio_lead_s(self) -> float:
    return max((t.lead for t in self.tracks.values()), default=0) / SAMPLE_RATE


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

    A file that breaks part-way raises ``FeatureError`` after the chunks decoded so far; so
    does one whose audio stream gave no sample (``no_audio``) or whose video ends well
    before its declared duration (``corrupt``, truncated), before the last chunk.
    """
    container = av.open(self.path)
    try:
      vstream = container.streams.video[0]
      vstream.thread_type = "AUTO"
      dec = _Decoder(self.info, vstream, list(container.streams.audio), self.audio,
                     self.chunk_frames)
      try:
        for packet in container.demux(*dec.streams):
          for ch in dec.decode(packet):
            self.source_frames = dec.source_frames
            yield ch
        tail = list(dec.end())
      except av.FFmpegError as e:
        raise FeatureError(self.path, "corrupt", f"decoding failed at "
                           f"{dec.resample.next_t / FPS:.2f} s: {e}") from e
      self.source_frames = dec.source_frames
      if dec.resample.prev is None:
        raise FeatureError(self.path, "corrupt", "no video frame could be decoded")
      self.duration = dec.duration
      self.audio_lead_s = dec.audio_lead_s
      self.held_frames = dec.resample.held_frames
      self.unused_frames = dec.resample.unused_frames
      self.audio_samples = dec.audio_samples
      self._check_complete()
      yield from tail
    finally:
      container.close()

  def _check_complete(self) -> None:
    """The file's integrity once decoded: some real audio, and no truncation."""
    if self.audio_samples <= int(round(self.audio_lead_s * SAMPLE_RATE)):
      raise FeatureError(self.path, "no_audio", "audio stream has no decodable samples")
    declared = self.info.declared_video_s
    if declared is not None and self.duration + max(TRUNCATION_SLACK_S,
                                                    TRUNCATION_SLACK_FRAC * declared) < declared:
      raise FeatureError(self.path, "corrupt", f"truncated: decoded {self.duration:.2f} s of "
                         f"video, the stream declares {declared:.2f} s")


# ----------------------------------------------------------------------------------------
# Live sources.
# ----------------------------------------------------------------------------------------

LIVE_REASON = "live source: chosen by channel layout, not measured"


def choose_by_layout(channels: list[AudioChannel]) -> AudioChoice:
  """``choose_audio``'s rules where nothing can be measured first (a live source): every
  channel but LFE, or the centre alone in a layout that has one beside other speakers (the
  centre of a 5.1 mix carries the dialogue)."""
  usable = [ch for ch in channels if not ch.name.startswith("LFE")] or channels
  centre = [ch for ch in usable if ch.name == "FC"]
  chosen = centre if centre and len(usable) > 2 else usable
  return AudioChoice(chosen, channels, LIVE_REASON, 1)


def live_audio(stream) -> AudioChoice:
  """The audio of a live source: its first audio stream by layout (``choose_by_layout``)."""
  names = _layout_names(stream.codec_context.layout)
  layout = stream.codec_context.layout.name if len(names) > 1 else "mono"
  return choose_by_layout([AudioChannel(0, c, n, layout) for c, n in enumerate(names)])


@dataclasses.dataclass
class LiveEvent:
  """Something a live source did between chunks: ``opened``, ``lost`` (``reason``),
  ``reconnected`` (after ``gap_s``), ``discontinuity`` (a new run), ``ended``."""
  kind: str
  reason: str = ""
  gap_s: float | None = None
  run: int = 0


class _Growing:
  """A file that is still being written, read like a pipe: at its end, ``read`` waits for
  more (up to ``stall_s``) before it reports the end."""

  def __init__(self, path: str, stall_s: float, stop: threading.Event):
    self.f = open(path, "rb")
    self.stall_s, self.stop = stall_s, stop
    self.ended = False            # waited ``stall_s`` once: later reads do not wait again

  def read(self, n: int = -1) -> bytes:
    deadline = time.monotonic() + (0 if self.ended else self.stall_s)
    while True:
      data = self.f.read(n)
      if data or self.stop.is_set() or time.monotonic() >= deadline:
        self.ended = not data
        return data
      time.sleep(0.05)

  def close(self) -> None:
    self.f.close()


def _is_network(source: str) -> bool:
  """Sources worth reopening: URLs and SDP descriptions of RTP streams."""
  return ("://" in source and not source.startswith("file:")) or source.endswith(".sdp")


class LiveReader:
  """Decodes a live source as it comes: ``udp://``, ``rtp://`` / an SDP file, ``rtsp://``,
  ``rtmp://``, ``tcp://``, HLS over http(s), a capture device (``format="v4l2"``, ...), a
  file still being written, or ``-`` (MPEG-TS on stdin).

  Unlike ``Reader`` it opens the source once per connection and scans nothing: the picture
  size comes from the stream, the audio from the first audio stream's channel layout
  (``live_audio``). ``chunks()`` yields ``Chunk``s of ``chunk_frames`` (with ``run`` and
  ``arrival``) and ``LiveEvent``s. The clock (see ``JUMP_S``): each run starts at its first
  video frame, as a file does; within a run pictures are placed by timestamp (holes become
  held frames) and audio by timestamp too (holes and overlaps over ``AUDIO_SLIP_S`` are
  filled with silence or cut), so
  lost packets cannot move sound against picture; a timestamp jump beyond ``JUMP_S`` (or
  back by ``JUMP_BACK_S``) or a reconnection ends the run and the next starts at frame 0.

  Network sources that fail, end or stall for ``stall_s`` are reopened with backoff
  (``backoff_s`` doubling up to ``max_backoff_s``); ``give_up_s`` (None: never) ends the
  attempts with ``FeatureError``. Stdin and files end at their end (a file after ``stall_s``
  without growing). Packets that fail to decode are skipped and counted
  (``corrupt_packets``).
  """

  def __init__(self, source: str, chunk_frames: int = 5, *, format: str | None = None,
               open_timeout_s: float = 10.0, stall_s: float = 5.0, backoff_s: float = 1.0,
               max_backoff_s: float = 30.0, give_up_s: float | None = None,
               options: dict[str, str] | None = None):
    self.source, self.chunk_frames, self.format = str(source), int(chunk_frames), format
    self.open_timeout_s, self.stall_s = open_timeout_s, stall_s
    self.backoff_s, self.max_backoff_s, self.give_up_s = backoff_s, max_backoff_s, give_up_s
    self.options = dict(options or {})
    self.reconnects_allowed = _is_network(self.source)
    self.info: StreamInfo | None = None
    self.audio: AudioChoice | None = None
    self.run = 0
    self.reconnects = 0
    self.corrupt_packets = 0
    self.discontinuities = 0
    self._done = {"source_frames": 0, "held_frames": 0, "unused_frames": 0, "audio_gaps": 0}
    self._dec: _Decoder | None = None
    self._stop = threading.Event()

  def stop(self) -> None:
    """Asks ``chunks()`` to end (from another thread); a blocked read ends within
    ``stall_s``."""
    self._stop.set()

  @staticmethod
  def _run_counts(dec: _Decoder) -> dict[str, int]:
    return {"source_frames": dec.source_frames, "held_frames": dec.resample.held_frames,
            "unused_frames": dec.resample.unused_frames,
            "audio_gaps": sum(t.gaps for t in dec.tracks.values())}

  def counts(self) -> dict[str, int]:
    """Source frames, held and unused output frames, audio holes filled, over all runs."""
    out = dict(self._done)
    if self._dec is not None:
      for k, v in self._run_counts(self._dec).items():
        out[k] += v
    return out

  def _open(self):
    # Probing reads about a second (the packets it reads are kept: no ``nobuffer``).
    opts = {"analyzeduration": "1000000"}
    if self.source.startswith("udp:"):
      # A slow reader must not kill the stream: FFmpeg's receive thread buffers ~10 MB.
      opts |= {"overrun_nonfatal": "1", "fifo_size": "50000"}
    if self.source.startswith("rtsp:"):
      opts["rtsp_transport"] = "tcp"
    if self.source.endswith(".sdp") or self.format == "sdp":
      opts["protocol_whitelist"] = "file,udp,rtp,crypto,data"    # what an SDP file may open
    opts |= self.options
    if self.source == "-":
      return av.open(sys.stdin.buffer, format=self.format or "mpegts", options=opts)
    if os.path.isfile(self.source) and not self.reconnects_allowed:
      return av.open(_Growing(self.source, self.stall_s, self._stop), format=self.format,
                     options=opts)
    return av.open(self.source, format=self.format, options=opts,
                   timeout=(self.open_timeout_s, self.stall_s))

  def _decoder(self, container) -> _Decoder:
    if not container.streams.video:
      raise FeatureError(self.source, "no_video", "no video stream")
    if not container.streams.audio:
      raise FeatureError(self.source, "no_audio", "no audio stream")
    v, a = container.streams.video[0], container.streams.audio[0]
    v.thread_type = "AUTO"
    sw, sh = int(v.codec_context.width), int(v.codec_context.height)
    sar = _sar(v)
    w, h = _display_size(sw, sh, sar)
    self.info = StreamInfo(self.source, w, h, float(v.average_rate or v.guessed_rate or FPS),
                           None, sw, sh, sar)
    self.audio = live_audio(a)
    return _Decoder(self.info, v, [a], self.audio, self.chunk_frames, live=True, run=self.run)

  def _end_run(self) -> Iterator[Chunk]:
    dec, self._dec = self._dec, None
    if dec is None:
      return
    try:
      yield from dec.end()
    except av.FFmpegError:
      pass
    for k, v in self._run_counts(dec).items():
      self._done[k] += v
    self.run += 1

  def _runs(self, container) -> Iterator[Chunk | LiveEvent]:
    """Chunks of one connection; the reason it ended is the return value."""
    self._dec = self._decoder(container)
    packets = container.demux(*self._dec.streams)
    while not self._stop.is_set():
      try:
        packet = next(packets)
      except StopIteration:
        return "the source ended"
      except (av.FFmpegError, OSError) as e:
        return f"read failed: {e}"
      if packet.is_corrupt:
        self.corrupt_packets += 1
      try:
        yield from self._dec.decode(packet)
      except _Discontinuity as d:
        yield from self._end_run()
        self.discontinuities += 1
        yield LiveEvent("discontinuity", str(d), run=self.run)
        near = float(d.frame.time) if d.frame.pts is not None else None
        self._dec = _Decoder(self.info, container.streams.video[0],
                             [container.streams.audio[0]], self.audio, self.chunk_frames,
                             live=True, run=self.run, near=near)
        try:
          yield from self._dec.frame(packet.stream, d.frame)
        except (_Discontinuity, av.FFmpegError):
          pass
      except av.FFmpegError:
        self.corrupt_packets += 1       # undecodable: skipped, counted
    return "stopped"

  def chunks(self) -> Iterator[Chunk | LiveEvent]:
    """Chunks and events until the source ends for good, ``stop()`` or ``give_up_s``."""
    lost_at: float | None = None
    backoff = self.backoff_s
    opened_once = False
    while not self._stop.is_set():
      try:
        container = self._open()
      except (av.FFmpegError, OSError) as e:
        if not self.reconnects_allowed:
          raise FeatureError(self.source, "corrupt", f"cannot open: {e}") from e
        lost_at = lost_at if lost_at is not None else time.monotonic()
        if self.give_up_s is not None and time.monotonic() - lost_at > self.give_up_s:
          raise FeatureError(self.source, "corrupt", f"cannot open for "
                             f"{self.give_up_s:g} s: {e}") from e
        yield LiveEvent("reconnecting", f"cannot open: {e}; retrying in {backoff:g} s")
        self._stop.wait(backoff)
        backoff = min(2 * backoff, self.max_backoff_s)
        continue
      try:
        if lost_at is not None and opened_once:
          self.reconnects += 1
        gap = None if lost_at is None or not opened_once else time.monotonic() - lost_at
        try:
          runs = self._runs(container)
          first = True
          while True:
            try:
              item = next(runs)
            except StopIteration as s:
              reason = s.value
              break
            if first:
              yield LiveEvent("reconnected" if gap is not None else "opened",
                              gap_s=None if gap is None else round(gap, 3), run=self.run)
              first, backoff = False, self.backoff_s
              opened_once = True
            yield item
        except FeatureError as e:
          if not self.reconnects_allowed:
            raise
          reason = e.reason
        yield from self._end_run()
      finally:
        container.close()
      if self._stop.is_set():
        break
      if not self.reconnects_allowed:
        yield LiveEvent("ended", reason, run=self.run)
        return
      lost_at = time.monotonic()
      yield LiveEvent("lost", reason, run=self.run)


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
  duration = reader.duration
  tail = max(0.0, duration - audio_arr.size / SAMPLE_RATE)
  missing = min(duration, reader.audio_lead_s + tail)
  return Decoded(path=reader.path, frames=out_frames, audio=np.ascontiguousarray(audio_arr),
                 source_fps=reader.source_frames / duration, duration=duration,
                 audio_missing=missing, audio_source=reader.audio)
