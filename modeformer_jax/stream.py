"""Decoding a file of any length in chunks, with memory that does not grow with its length.

``features.decode`` holds a whole clip in memory, which is right for training clips and
wrong for an hour of broadcast video. ``stream_chunks`` yields the same signals piece by
piece, on the same clock and by the same rules as ``features.decode``:

* video frames resampled to 25 fps by timestamp (output frame ``t`` is the source frame on
  screen at ``t / 25`` s after the first video frame);
* audio down-mixed to mono, resampled to 16 kHz (soxr, streaming) and placed on the video
  clock (audio before the first frame dropped, a late start padded with silence).

``MelStream`` turns the audio pieces into the log-mel frames of ``features.log_mel``
exactly (the same pre-emphasis, window, filterbank and scaling), frame by frame, holding
only the last few hundred samples.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import av
import numpy as np
import soxr

from modeformer_jax import features, windows
from modeformer_jax.features import FeatureError
from modeformer_jax.input_spec import MEL_CONFIG, SAMPLE_RATE

FPS = windows.FPS
_TS_TOLERANCE_S = 1e-3        # as features: rounded container timestamps still count


@dataclasses.dataclass
class StreamInfo:
  """What is known about a file before decoding it."""
  path: str
  width: int
  height: int
  source_fps: float
  duration: float | None      # declared by the container (None when it does not say)
  audio_rate: int


@dataclasses.dataclass
class Chunk:
  """Consecutive output frames ``start .. start + len(frames) - 1`` and new audio samples."""
  start: int
  frames: np.ndarray          # uint8 [n, H, W, 3] RGB at 25 fps
  audio: np.ndarray           # float32 mono 16 kHz samples that follow the previous chunk's


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
      rate = int(a.rate or a.codec_context.sample_rate or 0)
      if rate <= 0:
        raise FeatureError(path, "no_audio", "audio stream has no sample rate")
      return StreamInfo(path, int(v.codec_context.width), int(v.codec_context.height),
                        float(v.average_rate or v.guessed_rate or FPS), dur, rate)
  except (av.FFmpegError, OSError) as e:
    raise FeatureError(path, "corrupt", f"cannot open: {e}") from e


def stream_chunks(path: str, chunk_frames: int = 25) -> Iterator[Chunk]:
  """Yields ``Chunk``s of ``chunk_frames`` output frames (the last may be shorter).

  Memory is bounded by one chunk of frames plus the decoder's own buffers. Raises
  ``FeatureError`` (``corrupt``, ``no_video``, ``no_audio``) as ``features.decode`` does; a
  file that breaks part-way raises after the chunks decoded so far were yielded.
  """
  path = str(path)
  info = probe(path)
  container = av.open(path)
  try:
    vstream, astream = container.streams.video[0], container.streams.audio[0]
    vstream.thread_type = "AUTO"
    wide = (astream.codec_context.channels or 1) > 2
    resampler = av.AudioResampler(format="fltp", layout="stereo" if wide else None)
    sox = (soxr.ResampleStream(info.audio_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
           if info.audio_rate != SAMPLE_RATE else None)
    nominal = info.source_fps or FPS
    origin: float | None = None     # timestamp of the first video frame
    audio_start: float | None = None
    pending_audio: list[np.ndarray] = []   # 16 kHz audio decoded before the origin is known
    aligned = False                 # audio placed on the video clock yet?
    skip = 0                        # samples still to drop (audio started before video)
    out_audio: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    start = 0                       # first output frame of the chunk being filled
    next_t = 0                      # next output frame to emit
    prev: np.ndarray | None = None  # last decoded source frame and its time
    prev_t = 0.0
    steps: list[float] = []

    def resampled(frame) -> np.ndarray:
      parts = [o.to_ndarray().mean(axis=0, dtype=np.float32) for o in resampler.resample(frame)]
      x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
      if sox is not None:
        x = sox.resample_chunk(x, last=frame is None).astype(np.float32)
      return x

    def push_audio(x: np.ndarray) -> None:
      nonlocal aligned, skip
      if not aligned:
        pending_audio.append(x)
        if origin is None:
          return
        lead = int(round(((audio_start if audio_start is not None else origin) - origin)
                         * SAMPLE_RATE))
        x = np.concatenate(pending_audio)
        pending_audio.clear()
        aligned = True
        if lead > 0:
          out_audio.append(np.zeros(lead, np.float32))
        skip = max(0, -lead)
      if skip:
        drop = min(skip, x.size)
        x, skip = x[drop:], skip - drop
      if x.size:
        out_audio.append(x)

    def take_chunk(final: bool = False) -> Chunk | None:
      nonlocal frames, start, out_audio
      if not frames and not (final and out_audio):
        return None
      audio = np.concatenate(out_audio) if out_audio else np.zeros(0, np.float32)
      ch = Chunk(start, np.stack(frames) if frames else np.zeros((0, info.height, info.width, 3),
                                                               np.uint8), audio)
      start += len(frames)
      frames, out_audio = [], []
      return ch

    try:
      for packet in container.demux(vstream, astream):
        for frame in packet.decode():
          if packet.stream.type == "audio":
            if audio_start is None and frame.pts is not None:
              audio_start = float(frame.time)
            push_audio(resampled(frame))
            continue
          t = float(frame.time) if frame.pts is not None else prev_t + 1.0 / nominal
          img = frame.to_ndarray(format="rgb24")
          if origin is None:
            origin = t
            if pending_audio or audio_start is not None:
              push_audio(np.zeros(0, np.float32))
          rel = t - origin
          if prev is not None:
            if rel > prev_t:
              steps.append(rel - prev_t)
            # Output instants before this frame's time show the previous frame.
            while next_t / FPS + _TS_TOLERANCE_S < rel:
              frames.append(prev)
              next_t += 1
              if len(frames) == chunk_frames:
                yield take_chunk()
          prev, prev_t = img, rel
      push_audio(resampled(None))
    except av.FFmpegError as e:
      raise FeatureError(path, "corrupt", f"decoding failed at {next_t / FPS:.2f} s: {e}") from e
    if prev is None:
      raise FeatureError(path, "corrupt", "no video frame could be decoded")
    if not aligned:
      push_audio(np.zeros(0, np.float32))
    # The last frame shows for one median frame step (as features.decode).
    last_step = float(np.median(steps[-100:])) if steps else 1.0 / nominal
    total = features.num_output_frames(prev_t + last_step, FPS)
    while next_t < total:
      frames.append(prev)
      next_t += 1
      if len(frames) == chunk_frames:
        yield take_chunk()
    last = take_chunk(final=True)
    if last is not None:
      yield last
  finally:
    container.close()


class MelStream:
  """Log-mel frames of ``features.log_mel`` computed as audio arrives.

  Mel frame ``m`` is centred on sample ``200 m`` and reads pre-emphasised samples
  ``200 m - 400 .. 200 m + 399`` (zeros outside the file), so it can be computed once the
  audio has reached sample ``200 m + 400``; ``finish`` computes the rest with the file's end
  as zero padding, as the centred STFT of ``log_mel`` does.
  """

  def __init__(self):
    c = MEL_CONFIG
    self.hop, self.n_fft = c["hop_length"], c["n_fft"]
    self._y = np.zeros(self.n_fft // 2, np.float32)   # pre-emphasised, left zero padding
    self._y0 = -(self.n_fft // 2)     # absolute sample index of self._y[0]
    self._last_x = 0.0                # previous raw sample (pre-emphasis)
    self.num_samples = 0
    self.next_frame = 0

  def _frames(self, upto: int) -> np.ndarray:
    """Mel frames ``next_frame .. upto - 1`` from the buffered samples."""
    c = MEL_CONFIG
    m0 = self.next_frame
    if upto <= m0:
      return np.zeros((c["n_mels"], 0), np.float32)
    first = m0 * self.hop - self.n_fft // 2 - self._y0
    need = (upto - 1) * self.hop + self.n_fft // 2 - self._y0
    y = self._y
    if y.size < need:
      y = np.pad(y, (0, need - y.size))
    view = np.lib.stride_tricks.sliding_window_view(y[first:need], self.n_fft)[::self.hop]
    spec = np.abs(np.fft.rfft(view * features._window(), axis=1))
    m = features._mel_basis() @ spec.T.astype(np.float32)
    db = 20.0 * np.log10(np.maximum(m, c["amin"])) - c["ref_level_db"]
    top, min_db = c["max_abs_value"], c["min_level_db"]
    out = np.clip(2 * top * (db - min_db) / -min_db - top, -top, top).astype(np.float32)
    self.next_frame = upto
    # Keep only what the next frame needs.
    keep_from = upto * self.hop - self.n_fft // 2 - self._y0
    if keep_from > 0:
      self._y = self._y[keep_from:]
      self._y0 += keep_from
    return out

  def push(self, x: np.ndarray) -> np.ndarray:
    """Adds samples; returns the mel frames ``[80, n]`` that became computable."""
    x = np.asarray(x, np.float32)
    if x.size:
      y = np.empty_like(x)
      y[0] = x[0] - MEL_CONFIG["preemphasis"] * self._last_x if self.num_samples else x[0]
      y[1:] = x[1:] - MEL_CONFIG["preemphasis"] * x[:-1]
      self._last_x = float(x[-1])
      self._y = np.concatenate([self._y, y])
      self.num_samples += x.size
    # Frame m is complete once samples up to 200 m + 400 exist.
    upto = (self.num_samples - self.n_fft // 2) // self.hop + 1
    return self._frames(max(self.next_frame, upto))

  def finish(self, num_frames: int | None = None) -> np.ndarray:
    """The remaining frames: up to ``1 + N // 200`` computed, then silence up to the
    ``ceil(3.2 num_frames)`` frames of a ``num_frames`` video (when given)."""
    computed = self._frames(max(self.next_frame, 1 + self.num_samples // self.hop))
    if num_frames is None:
      return computed
    total = windows.num_mel_frames(num_frames)
    done = self.next_frame - computed.shape[1]
    out = computed[:, :max(0, total - done)]
    if done + out.shape[1] < total:
      pad = total - done - out.shape[1]
      out = np.concatenate([out, np.full((out.shape[0], pad), features.MEL_SILENCE,
                                         np.float32)], axis=1)
    self.next_frame = max(self.next_frame, total)
    return out
