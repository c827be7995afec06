"""Re-aligning a file without re-encoding: ``fix_offset`` moves every audio stream by a
measured offset and copies the packets as they are (``detect --fix``)."""
from __future__ import annotations

from fractions import Fraction


def fix_offset(src: str, dst: str, offset_ms: float) -> None:
  """Copies ``src`` to ``dst`` with the audio moved earlier by ``offset_ms`` (no re-encode).

  ``offset_ms`` is a measured offset (positive = audio late), so the copy plays the audio
  that much earlier. Packets are copied as they are; only audio timestamps change (by the
  nearest tick of the audio stream's time base, one sample for the usual 1/sample-rate
  base), so the video stream is bit-identical. Every audio stream moves (multi-track MOV/MXF
  keep all their tracks). Audio that would start before zero is dropped.
  """
  import av
  shift_s = float(offset_ms) / 1000.0
  with av.open(src) as inp, av.open(dst, "w") as out:
    vin = inp.streams.video[0]
    vout = out.add_stream_from_template(vin)
    aouts = {a.index: out.add_stream_from_template(a) for a in inp.streams.audio}
    for pkt in inp.demux(vin, *inp.streams.audio):
      if pkt.dts is None:
        continue
      if pkt.stream is vin:
        pkt.stream = vout
      else:
        aout = aouts[pkt.stream.index]
        delta = int(round(shift_s / Fraction(pkt.time_base)))
        pkt.pts = pkt.pts - delta if pkt.pts is not None else None
        pkt.dts = pkt.dts - delta
        if pkt.dts < 0 or (pkt.pts is not None and pkt.pts < 0):
          continue
        pkt.stream = aout
      out.mux(pkt)
