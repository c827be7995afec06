"""Live sources: ``LiveReader`` decodes a network stream, stdin or a growing file as it comes,
through the same per-frame decoding as files (``decode.FrameDecoder``), and reconnects with
backoff where the source can come back (``LiveEvent``s say what happened).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from typing import Iterator

import av

from modeformer_jax.errors import FeatureError
from modeformer_jax.media.channels import AudioChoice, live_audio
from modeformer_jax.media.decode import (
    TS_TOLERANCE_S,
    Chunk,
    Discontinuity,
    FrameDecoder,
    StreamInfo,
    display_size,
    sample_aspect,
)
from modeformer_jax.model.windows import FPS

@dataclasses.dataclass
class LiveEvent:
  """Something a live source did between chunks: ``listening`` (for a publisher),
  ``opened``, ``lost`` (``reason``), ``reconnecting``, ``reconnected`` (after ``gap_s``),
  ``discontinuity`` (a new run), ``ended``."""
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


def _is_hls(source: str) -> bool:
  """An HLS playlist over http(s)."""
  return source.startswith(("http://", "https://")) and \
      source.split("?", 1)[0].lower().endswith((".m3u8", ".m3u"))


def _playlist_ended(source: str, timeout_s: float = 5.0) -> bool:
  """Whether the HLS playlist at ``source`` now carries ``#EXT-X-ENDLIST`` (the stream is
  over: FFmpeg read it to the end, and reopening it would replay its last segments).

  This reads the monitored source itself, the playlist FFmpeg was reading, once when a
  connection ends cleanly: FFmpeg's demuxer ends the same way at ``ENDLIST`` and when a
  live playlist stops growing, and does not say which. Nothing else is fetched."""
  import urllib.request
  try:
    with urllib.request.urlopen(source, timeout=timeout_s) as r:
      return b"#EXT-X-ENDLIST" in r.read(1 << 20)
  except (OSError, ValueError):
    return False        # gone or unreadable: it may come back


LISTEN_SCHEMES = ("rtmp://", "rtsp://", "tcp://")


def _final_end(source: str, reason: str, listen: bool = False) -> str | None:
  """Why a connection that ended cleanly is the end of the stream (None: it may come back):
  an HLS playlist with ``#EXT-X-ENDLIST``, or an RTMP / RTSP server that closed the
  session. A publisher that leaves a listening monitor may come back."""
  if reason != "the source ended" or listen:
    return None
  if _is_hls(source):
    return "the playlist ended (#EXT-X-ENDLIST)" if _playlist_ended(source) else None
  if source.startswith(("rtmp://", "rtmps://", "rtsp://", "rtsps://")):
    return "the server closed the session"
  return None


# REPLAY: after a reconnection, a video packet whose timestamp falls within what earlier
# connections delivered, from ``seen_first + floor`` to ``seen_last``, is a replay: an HLS
# playlist lists segments already read (its first listed segment may be the first one read:
# floor -1 s), an RTMP or RTSP server may resend its cached pictures. Anywhere else a source
# clock is new: one that starts again near where the first connection started (floor +1 s
# for non-HLS: a restarted encoder's MPEG-TS clock starts at the same 1.4 s each time) or
# before it, or one past everything seen. A restarted sender whose clock lands inside the
# seen span, away from its start, cannot be told from a replay: its packets up to the last
# one seen are skipped (and counted).
REPLAY_HLS_FLOOR_S = -1.0
REPLAY_FLOOR_S = 1.0


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

  ``listen``: the monitor is the server for ``rtmp://``, ``rtsp://`` or ``tcp://`` at the
  given address (FFmpeg's listen modes) and an encoder publishes to it (RTMP publish, RTSP
  ANNOUNCE / RECORD, MPEG-TS over TCP); when the publisher leaves it listens again
  (a ``listening`` event each time it starts waiting for one).

  Network sources that fail, end or stall for ``stall_s`` are reopened with backoff
  (``backoff_s`` doubling up to ``max_backoff_s``); ``give_up_s`` (None: never) ends the
  attempts with ``FeatureError``. Stdin and files end at their end (a file after ``stall_s``
  without growing); so does an HLS playlist that carries ``#EXT-X-ENDLIST`` and an RTMP or
  RTSP server that closes the session: one ``ended`` event, no reconnection. After a
  reconnection, what was already read is skipped by its timestamps (``REPLAY``), so a replay
  (an HLS playlist's listed segments, a server's cached pictures) is never new stream time
  (``replayed_packets`` counts what was skipped). Packets that fail to decode are skipped
  and counted (``corrupt_packets``).
  """

  def __init__(self, source: str, chunk_frames: int = 5, *, format: str | None = None,
               open_timeout_s: float = 10.0, stall_s: float = 5.0, backoff_s: float = 1.0,
               max_backoff_s: float = 30.0, give_up_s: float | None = None,
               options: dict[str, str] | None = None, listen: bool = False):
    self.source, self.chunk_frames, self.format = str(source), int(chunk_frames), format
    self.open_timeout_s, self.stall_s = open_timeout_s, stall_s
    self.backoff_s, self.max_backoff_s, self.give_up_s = backoff_s, max_backoff_s, give_up_s
    self.options = dict(options or {})
    self.listen = bool(listen)
    if self.listen and not self.source.startswith(LISTEN_SCHEMES):
      raise ValueError(f"{self.source}: listening needs rtmp://, rtsp:// or tcp://")
    self.reconnects_allowed = _is_network(self.source)
    self.info: StreamInfo | None = None
    self.audio: AudioChoice | None = None
    self.run = 0
    self.reconnects = 0
    self.corrupt_packets = 0
    self.discontinuities = 0
    self._done = {"source_frames": 0, "held_frames": 0, "unused_frames": 0, "audio_gaps": 0}
    self._dec: FrameDecoder | None = None
    self._stop = threading.Event()
    # Source time (s) of the first and last video packet delivered: a reconnection skips
    # what falls inside (``REPLAY``), so that nothing is counted as new stream time twice.
    self._seen: tuple[float, float] | None = None
    self.replayed_packets = 0

  def stop(self) -> None:
    """Asks ``chunks()`` to end (from another thread); a blocked read ends within
    ``stall_s``."""
    self._stop.set()

  @staticmethod
  def _run_counts(dec: FrameDecoder) -> dict[str, int]:
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
    if self.listen:
      if self.source.startswith("rtsp:"):
        # In seconds; FFmpeg's default (-1, wait for ever) fails in its TCP layer (8.x).
        opts |= {"rtsp_flags": "listen",
                 "listen_timeout": str(max(1, round(self.open_timeout_s)))}
      else:
        opts["listen"] = "1"
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

  def _decoder(self, container) -> FrameDecoder:
    if not container.streams.video:
      raise FeatureError(self.source, "no_video", "no video stream")
    if not container.streams.audio:
      raise FeatureError(self.source, "no_audio", "no audio stream")
    v, a = container.streams.video[0], container.streams.audio[0]
    v.thread_type = "AUTO"
    sw, sh = int(v.codec_context.width), int(v.codec_context.height)
    sar = sample_aspect(v)
    w, h = display_size(sw, sh, sar)
    self.info = StreamInfo(self.source, w, h, float(v.average_rate or v.guessed_rate or FPS),
                           None, sw, sh, sar)
    self.audio = live_audio(a)
    return FrameDecoder(self.info, v, [a], self.audio, self.chunk_frames, live=True, run=self.run)

  def _end_run(self, flush: bool = False) -> Iterator[Chunk]:
    """Ends the current run; ``flush`` (the connection ended) first takes the pictures the
    decoder still holds (frame threads, reordering): a connection that stalls ends without
    FFmpeg's end-of-stream flush. Not within a connection: a flushed decoder takes no more
    packets."""
    dec, self._dec = self._dec, None
    if dec is None:
      return
    if flush:
      try:
        for frame in dec.vstream.decode(None):
          frame.time_base = frame.time_base or dec.vstream.time_base   # unset when flushing
          yield from dec.frame(dec.vstream, frame)
      except (Discontinuity, av.FFmpegError):
        pass
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
    # What earlier connections delivered, on the source's clock: skipped until a video
    # packet comes from past it (``REPLAY``).
    floor = REPLAY_HLS_FLOOR_S if _is_hls(self.source) else REPLAY_FLOOR_S
    track = self.reconnects_allowed
    seen = self._seen
    video = self._dec.streams[0]
    # Replayed video packets since the last keyframe: the first new picture may need them
    # (a server resends from a keyframe; new content need not start on one). Decoded then,
    # their pictures (and any the decoder hands back late) not shown again.
    primer: list = []
    shown_until: float | None = None
    while not self._stop.is_set():
      try:
        packet = next(packets)
      except StopIteration:
        return "the source ended"
      except av.error.ExitError:       # our read timeout interrupted FFmpeg
        return f"no data for {self.stall_s:g} s"
      except (av.FFmpegError, OSError) as e:
        return f"read failed: {e}"
      if track and packet.pts is not None and packet.time_base:
        t = float(packet.pts * packet.time_base)
        if packet.stream is video and seen is not None and t < seen[0] + floor:
          seen = self._seen = None     # the source restarted its clock: nothing seen on it
        elif packet.stream is video and seen is not None and t > seen[1] + TS_TOLERANCE_S:
          seen = None                  # past everything seen: new content from here
        if seen is not None and seen[0] + floor <= t <= seen[1] + TS_TOLERANCE_S:
          self.replayed_packets += 1   # read before this reconnection: never new time
          if packet.stream is video:
            primer = [packet] if packet.is_keyframe else primer + [packet]
            shown_until = seen[1]
          continue
        if packet.stream is video and primer:
          if not packet.is_keyframe:
            for old in primer:
              try:
                for _ in old.decode():
                  pass
              except av.FFmpegError:
                pass
          primer = []
        if packet.stream is video:
          self._seen = (t, t) if self._seen is None else (min(self._seen[0], t),
                                                           max(self._seen[1], t))
      if packet.is_corrupt:
        self.corrupt_packets += 1
      try:
        for frame in packet.decode():
          if shown_until is not None and packet.stream is video and frame.pts is not None:
            if float(frame.time) <= shown_until + TS_TOLERANCE_S:
              continue                 # a replayed picture, handed back late
            shown_until = None
          yield from self._dec.frame(packet.stream, frame)
      except Discontinuity as d:
        yield from self._end_run()
        self.discontinuities += 1
        yield LiveEvent("discontinuity", str(d), run=self.run)
        near = float(d.frame.time) if d.frame.pts is not None else None
        self._dec = FrameDecoder(self.info, container.streams.video[0],
                             [container.streams.audio[0]], self.audio, self.chunk_frames,
                             live=True, run=self.run, near=near)
        try:
          yield from self._dec.frame(packet.stream, d.frame)
        except (Discontinuity, av.FFmpegError):
          pass
      except av.FFmpegError:
        self.corrupt_packets += 1       # undecodable: skipped, counted
    return "stopped"

  def chunks(self) -> Iterator[Chunk | LiveEvent]:
    """Chunks and events until the source ends for good, ``stop()`` or ``give_up_s``."""
    lost_at: float | None = None
    backoff = self.backoff_s
    opened_once = False
    waiting = False
    while not self._stop.is_set():
      if self.listen and not waiting:
        yield LiveEvent("listening", f"waiting for a publisher at {self.source}")
        waiting = True
      tried = time.monotonic()
      try:
        container = self._open()
      except (av.FFmpegError, OSError) as e:
        if not self.reconnects_allowed:
          raise FeatureError(self.source, "corrupt", f"cannot open: {e}") from e
        lost_at = lost_at if lost_at is not None else tried
        if self.give_up_s is not None and time.monotonic() - lost_at > self.give_up_s:
          raise FeatureError(self.source, "corrupt", f"cannot open for "
                             f"{self.give_up_s:g} s: {e}") from e
        if self.listen and time.monotonic() - tried >= 0.5 * self.open_timeout_s:
          continue      # listened the whole time and no publisher came: listen again
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
        yield from self._end_run(flush=True)
      finally:
        container.close()
      if self._stop.is_set():
        break
      final = _final_end(self.source, reason, self.listen) if self.reconnects_allowed \
          else reason
      if final is not None:
        yield LiveEvent("ended", final, run=self.run)
        return
      if self.listen:
        reason = f"the publisher left ({reason})"
        waiting = False
      lost_at = time.monotonic()
      yield LiveEvent("lost", reason, run=self.run)
      if first:
        # The connection opened but brought nothing new (an HLS playlist listing only what
        # was read): wait before asking again, as after a failed open.
        self._stop.wait(backoff)
        backoff = min(2 * backoff, self.max_backoff_s)
