"""A file played as a live stream, at the file's own pace: MPEG-TS over UDP, TCP, RTP or a
pipe, a live HLS playlist, or published to an RTMP or RTSP server.

  python -m data_prep.synthetic.live clip.mp4 udp://127.0.0.1:5000        # real time, once
  python -m data_prep.synthetic.live clip.mp4 - --loop | python -m modeformer_jax.monitor -
  python -m data_prep.synthetic.live clip.mp4 www/live.m3u8   # serve www/ over HTTP
  python -m data_prep.synthetic.live clip.mp4 rtmp://127.0.0.1:1935/live/key   # publish
  python -m data_prep.synthetic.live clip.mp4 rtp://127.0.0.1:5004 --sdp stream.sdp

A ``.m3u8`` path is written as a live HLS playlist (``HLS_OPTIONS``: 2-s segments, the last 6
listed, older ones deleted) that ends with ``#EXT-X-ENDLIST`` when the file does, as a
broadcaster's packager writes one; serve its folder with ``python -m http.server``.

Packets are copied (no re-encoding, so it costs almost no CPU) into MPEG-TS and sent when
the wall clock reaches their timestamp (``speed`` times real time). ``start_s`` starts at
the last keyframe at or before it (a restarted sender, as a receiver sees one; with
``keep_clock`` its timestamps stay the file's: a server resending what it sent). ``loop``
plays the file again and again with timestamps that keep increasing. What the monitor's
tests and ``bench.monitor`` stream.
"""
from __future__ import annotations

import pathlib
import sys
import threading
import time

import av
from av.bitstream import BitStreamFilterContext

from modeformer_jax import cli


def _url(url: str) -> str:
  # Datagrams that fit an Ethernet frame: seven 188-byte TS packets.
  if url.startswith("udp:") and "pkt_size" not in url:
    url += ("&" if "?" in url else "?") + "pkt_size=1316"
  return url


HLS_OPTIONS = {"hls_time": "2", "hls_list_size": "6", "hls_flags": "delete_segments"}


def write_sdp(path: str, url: str) -> None:
  """An SDP file describing MPEG-TS in RTP (payload 33) sent to ``url`` (rtp://host:port):
  a receiver that opens it listens at once, where FFmpeg given the bare ``rtp://`` URL
  reads one packet to learn the payload type and reopens the port, so it starts at the next
  keyframe."""
  host, port = url.split("://", 1)[1].split("?", 1)[0].rsplit(":", 1)
  pathlib.Path(path).write_text(
      "v=0\no=- 0 0 IN IP4 {h}\ns=modeformer_jax live\nc=IN IP4 {h}\nt=0 0\n"
      "m=video {p} RTP/AVP 33\na=rtpmap:33 MP2T/90000\n".format(h=host, p=int(port)))


def _open_out(url: str):
  if url == "-":
    return av.open(sys.stdout.buffer, "w", format="mpegts")
  if url.lower().endswith(".m3u8"):
    return av.open(url, "w", format="hls", options=dict(HLS_OPTIONS))
  if url.startswith("rtmp://"):
    return av.open(url, "w", format="flv")                  # RTMP publish (h264 + AAC)
  if url.startswith("rtsp://"):
    # ANNOUNCE and RECORD, interleaved over the RTSP connection.
    return av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"})
  if url.startswith("rtp://"):
    return av.open(url, "w", format="rtp_mpegts")           # MPEG-TS in RTP (payload 33)
  return av.open(_url(url), "w", format="mpegts")


def loop_s(path: str) -> float:
  """Seconds one loop of ``path`` takes in ``send(..., loop=True)``: from its first packet
  to where its longer stream ends (stream time ``t`` of a loop shows the file at
  ``t % loop_s``)."""
  with av.open(path) as inp:
    first, last = None, 0.0
    for pkt in inp.demux():
      if pkt.dts is None:
        continue
      t = float(pkt.dts * pkt.time_base)
      first = t if first is None else first
      last = max(last, t - first + float((pkt.duration or 0) * pkt.time_base))
  return last


def send(path: str, url: str, speed: float = 1.0, start_s: float = 0.0, loop: bool = False,
         stop: threading.Event | None = None, keep_clock: bool = False,
         seconds: float | None = None) -> float:
  """Streams ``path`` to ``url`` (``udp://``, ``tcp://``, ``rtp://``, a file, ``-`` for
  stdout: MPEG-TS; a ``.m3u8`` path: live HLS; ``rtmp://``, ``rtsp://``: published), paced
  at ``speed`` x real time (0: as fast as possible). ``keep_clock``: the file's own
  timestamps, also after ``start_s`` (a server resending pictures it sent before), instead
  of a clock that starts at 0. ``seconds``: stop after that much stream (with ``loop``: a
  stream of that length that then ends, an HLS playlist with ``#EXT-X-ENDLIST``). Returns
  seconds sent."""
  if keep_clock and loop:
    raise ValueError("keep_clock plays the file once")
  stop = stop or threading.Event()
  out = _open_out(url)
  sent, shift = 0.0, 0.0
  t_wall = time.monotonic()
  try:
    while not stop.is_set():
      with av.open(path) as inp:
        vin = inp.streams.video[0]
        ains = list(inp.streams.audio)
        if not len(out.streams):
          vout = out.add_stream_from_template(vin)
          aouts = {a.index: out.add_stream_from_template(a) for a in ains}
        if start_s > 0:
          inp.seek(int(start_s / vin.time_base), stream=vin, backward=True)
        # MPEG-4 Part 2 from an mp4 keeps its headers (VOL) in the container: a stream
        # carries them on each keyframe, or a receiver that joins can decode nothing.
        # (H.264 and HEVC get theirs from the MPEG-TS muxer itself.)
        headers = (BitStreamFilterContext("dump_extra=freq=keyframe", vin)
                   if vin.codec_context.name == "mpeg4" else None)
        first: float | None = None
        last = 0.0
        for pkt in inp.demux(vin, *ains):
          if pkt.dts is None or stop.is_set():
            continue
          t = float(pkt.dts * pkt.time_base)
          first = t if first is None else first
          rel = t - first + shift
          if seconds is not None and rel >= seconds:
            stop.set()
            break
          # The next loop starts where both streams have ended (no overlap, no hole).
          last = max(last, rel + float((pkt.duration or 0) * pkt.time_base))
          if speed > 0:
            wait = t_wall + rel / speed - time.monotonic()
            if wait > 0:
              time.sleep(wait)
          delta = 0 if keep_clock else int(round((shift - first) / pkt.time_base))
          pkt.dts += delta
          if pkt.pts is not None:
            pkt.pts += delta
          video = pkt.stream.index == vin.index
          for q in headers.filter(pkt) if headers is not None and video else [pkt]:
            q.stream = vout if video else aouts[pkt.stream.index]
            out.mux(q)
          sent = rel
        if not loop:
          break
        shift = last
        start_s = 0.0
  except (BrokenPipeError, OSError):
    pass      # the receiver went away (a pipe closed)
  finally:
    try:
      out.close()
    except (BrokenPipeError, OSError, av.FFmpegError):
      pass
  return sent


def main(argv: list[str] | None = None) -> None:
  p = cli.parser(__name__, __doc__)
  p.add_argument("path", help="an mp4 (h264 + AAC) or any file FFmpeg reads")
  p.add_argument("url", help="udp://host:port, tcp://host:port, rtp://host:port, a .ts file, "
                 "- (stdout), a .m3u8 path (a live HLS playlist), or rtmp:// / rtsp:// (publish "
                 "to that server)")
  p.add_argument("--speed", type=float, default=1.0, help="x real time (0: no pacing)")
  p.add_argument("--start", type=float, default=0.0, help="start at this second")
  p.add_argument("--loop", action="store_true", help="play the file again and again")
  p.add_argument("--seconds", type=float, default=None,
                 help="stop after this many seconds of stream (then end cleanly)")
  p.add_argument("--sdp", default=None, metavar="FILE",
                 help="with an rtp:// URL: first write an SDP file describing the stream")
  p.add_argument("--keep_clock", action="store_true",
                 help="keep the file's timestamps after --start (a resent stretch)")
  args = p.parse_args(argv)
  if args.sdp:
    if not args.url.startswith("rtp://"):
      p.error("--sdp describes an rtp:// stream")
    write_sdp(args.sdp, args.url)
  try:
    send(args.path, args.url, args.speed, args.start, args.loop, keep_clock=args.keep_clock,
         seconds=args.seconds)
  except ValueError as e:     # options that do not go together: a usage error
    p.error(str(e))


if __name__ == "__main__":
  main()
