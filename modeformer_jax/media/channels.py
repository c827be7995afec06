"""The speech channels of a file or a live source: which channels of which audio streams
are mixed into the mono analysis track, and why (``AudioChoice.describe``).

``choose_audio`` measures the first ``SCAN_S`` seconds of every channel of a file (level and
speech dynamics, see ``media.decode``'s docstring, "Sound"); ``choose_by_layout`` and
``live_audio`` decide by channel layout alone, for live sources that cannot be measured first.
"""
from __future__ import annotations

import dataclasses

import av
import numpy as np

from modeformer_jax.errors import FeatureError
from modeformer_jax.model.input_spec import SAMPLE_RATE


SCAN_S = 30.0                 # seconds of each audio channel measured to choose the speech
SILENT_DBFS = -60.0           # a channel whose loud 5% stays below this is silent
SPEECH_SPREAD_DB = 12.0       # band-energy spread from which a channel sounds like speech
SPEECH_SPREAD_MARGIN_DB = 10.0  # channels this far below the most speech-like are left out

ONLY_CHANNEL = "the only channel"   # the choice's reason for a file with one mono track



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


def frame_levels(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Per 20-ms frame of a mono signal: RMS (linear) and 300-3400 Hz band energy; the
  pieces ``sound_stats`` summarises (the analysis keeps them per block, ``analysis.sound``)."""
  n = int(round(0.02 * rate))
  frames = x[:x.size // n * n].reshape(-1, n).astype(np.float64)
  rms = np.sqrt(np.mean(frames ** 2, axis=1))
  spec = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
  f = np.fft.rfftfreq(n, 1.0 / rate)
  return rms, spec[:, (f >= 300) & (f <= 3400)].sum(axis=1)


def sound_stats(rms: np.ndarray, band: np.ndarray) -> tuple[float, float]:
  """(level dBFS, speech band spread dB) from ``frame_levels``' frames (see the module
  docstring); (-120, 0) for fewer than 10 frames."""
  if rms.size < 10:
    return -120.0, 0.0
  level = float(np.percentile(20 * np.log10(rms + 1e-9), 95))
  # Frames of digital silence would stretch the spread without meaning: floor at -100 dB
  # below the loudest frame.
  db = 10 * np.log10(band + band.max() * 1e-10 + 1e-20)
  return level, float(np.percentile(db, 90) - np.percentile(db, 10))


def channel_stats(x: np.ndarray, rate: int) -> tuple[float, float]:
  """(level dBFS, speech band spread dB) of a mono signal (see the module docstring)."""
  return sound_stats(*frame_levels(x, rate))


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

