"""Reading audio-video files: the one decoding path of data preparation, ``detect`` and sync QC.

``Reader(path).chunks()`` yields a file piece by piece (memory bounded by one chunk, for an
hour of broadcast video) and ``decode(path)`` collects the same pieces for a short clip, so
the whole-clip and the streaming paths cannot disagree. ``LiveReader`` reads a live source
(network, stdin, a growing file) through the same per-frame decoding (``FrameDecoder``), with
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

One module, 600-odd lines, because the clock, the picture and the audio placement are one
contract that ``Reader``, ``decode`` and ``live.LiveReader`` (through ``FrameDecoder``)
must share exactly; the channel choice (``channels``) and live transport (``live``) are
apart.

Errors are ``FeatureError`` (file, kind, reason): ``corrupt`` (cannot be opened or decoded,
or truncated), ``no_video``, ``no_audio``; callers add ``too_short``, ``audio_short``,
``no_face``.
"""
from __future__ import annotations

import dataclasses
import fractions
import math
import time
from typing import Iterator

import av
import cv2
import numpy as np
import soxr

from modeformer_jax.errors import FeatureError
from modeformer_jax.media.channels import AudioChoice, choose_audio
from modeformer_jax.model.input_spec import SAMPLE_RATE
from modeformer_jax.model.windows import FPS


# Timestamps in containers are rounded (often to 1 ms); compared with the instants we sample,
# a frame this much late still counts as on time (far below half a frame at 30-60 fps).
TS_TOLERANCE_S = 1e-3

# A decoded video this much shorter than its declared stream duration is truncated.
TRUNCATION_SLACK_S = 0.5
TRUNCATION_SLACK_FRAC = 0.1

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


def display_size(w: int, h: int, sar: fractions.Fraction) -> tuple[int, int]:
  """Square-pixel size of a ``w`` x ``h`` picture with sample aspect ratio ``sar``."""
  if sar > 1:
    w = int(round(w * sar / 2)) * 2
  elif sar < 1:
    h = int(round(h / sar / 2)) * 2
  return w, h


def sample_aspect(vstream) -> fractions.Fraction:
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
      sar = sample_aspect(v)
      w, h = display_size(sw, sh, sar)
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
    dw, dh = display_size(w, h, sar)
    img = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR if sar > 1 else
                     cv2.INTER_AREA)
  k = int(round(rotation / 90.0)) % 4
  if k:
    img = np.ascontiguousarray(np.rot90(img, k=k))
  return img


# ----------------------------------------------------------------------------------------
# Decoding.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Chunk:
  """Consecutive output frames ``start .. start + len(frames) - 1`` and new audio samples."""
  start: int
  # uint8 [n, H, W, 3] RGB at 25 fps, as displayed; from ``Reader(stack=False)`` a list of
  # the n pictures (a held frame is the same array again).
  frames: np.ndarray | list[np.ndarray]
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
  # Live sources: the source timestamp (s) of the run's frame 0, the run's place on the
  # source's own clock (None until a picture has come).
  origin: float | None = None


class _Track:
  """One audio stream's chosen channels, mixed to mono, at 16 kHz, on the video clock.

  ``follow`` (live sources): after the first sample, frames are placed by their timestamps
  too: a hole of more than ``AUDIO_SLIP_S`` (lost packets) is filled with silence, an
  overlap of more than that (a loop or splice that starts before the last sound ended) is
  cut from the new frame, and a jump beyond ``JUMP_S`` forward or ``JUMP_BACK_S`` back
  raises ``Discontinuity``. Files are placed sample after sample from the first
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
          raise Discontinuity(frame, f"audio timestamps jumped by {hole:+.2f} s")
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


class Discontinuity(Exception):
  """Timestamps of a live source jumped (``JUMP_S``); ``frame`` starts the next run."""

  def __init__(self, frame, reason: str):
    super().__init__(reason)
    self.frame = frame


class FrameDecoder:
  """The decoding loop's per-frame work, shared by ``Reader`` (a file) and ``LiveReader``
  (one run of a live source): pictures oriented and put on the 25 fps clock by nearest
  timestamp, each audio track placed on that clock and mixed, chunks of ``chunk_frames``.

  ``decode(packet)`` yields the chunks a packet completes, ``end()`` the rest when the run
  ends. ``live`` follows timestamp holes and raises ``Discontinuity`` (``JUMP_S``).
  """

  def __init__(self, info: StreamInfo, vstream, astreams: list, audio: AudioChoice,
               chunk_frames: int, live: bool = False, run: int = 0, near: float | None = None,
               stack: bool = True):
    self.info, self.chunk_frames, self.live, self.run = info, int(chunk_frames), live, run
    self.stack = stack
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
    if not self.frames:
      frames = np.zeros((0, info.height, info.width, 3), np.uint8)
    else:
      frames = np.stack(self.frames) if self.stack else self.frames
    ch = Chunk(self.start, frames, audio,
               np.array(self.held, bool), lead, self.run,
               np.array(self.arrival) if self.live else None,
               self.origin if self.live else None)
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
        raise Discontinuity(frame, f"video timestamps jumped by {step:+.2f} s")
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

  def __init__(self, path: str, chunk_frames: int = 25, audio: AudioChoice | None = None,
               stack: bool = True):
    """``stack=False``: each chunk's ``frames`` is the list of its pictures, not one array (a
    consumer that reads them one by one is spared a copy of every picture)."""
    self.path = str(path)
    self.stack = stack
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
      dec = FrameDecoder(self.info, vstream, list(container.streams.audio), self.audio,
                         self.chunk_frames, stack=self.stack)
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
