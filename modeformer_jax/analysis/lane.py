"""One version of a source's audio as the analysis holds it (``Lane``): its mel and audio
embeddings, the voice-activity levels and speech shape, the sound's per-block levels
(``sound.character``), and the per-(face track, block) similarity sums (``Blocks``) that
every estimate is made from. ``Evidence`` keeps one lane per injected shift."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from modeformer_jax import media
from modeformer_jax.analysis import sound
from modeformer_jax.analysis.options import AnalysisOptions
from modeformer_jax.media import mel_stream
from modeformer_jax.model import windows

FPS = windows.FPS


class Blocks:
  """Per-(track, block) sums of the fine similarity curves, by phase."""

  def __init__(self, n_fine: int, n_whole: int):
    self.n_fine, self.n_whole = n_fine, n_whole
    self.data: dict[tuple[int, int], dict[str, np.ndarray]] = {}

  def add(self, track: int, block: int, phase: int, curve: np.ndarray, best: int | None):
    d = self.data.get((track, block))
    if d is None:
      d = self.data[(track, block)] = {
          "sum": np.zeros((5, self.n_fine)), "cnt": np.zeros((5, self.n_fine)),
          "hist": np.zeros(self.n_whole), "n": np.zeros(1)}
    ok = np.isfinite(curve)
    d["sum"][phase, ok] += curve[ok]
    d["cnt"][phase, ok] += 1
    if best is not None:
      d["hist"][best] += 1
    d["n"][0] += 1

  def forget(self, before: int) -> None:
    """Drops blocks before ``before`` (a live monitor's memory stays flat)."""
    for key in [k for k in self.data if k[1] < before]:
      del self.data[key]


class Lane:
  """One version of the source's audio (delayed by ``shift`` video frames, as
  ``features.shift_audio`` does): its mel, audio embeddings, speech levels and evidence.

  Real sound occupies samples ``start .. end`` of the lane's clock (``end`` is known when
  the source ends); audio windows that read outside it (a late start, an audio stream that
  ends before the video, samples a shift moved in) are never scored: silence made up by
  the reader is not evidence.
  """

  def __init__(self, shift: int, n_fine: int, n_whole: int, hop_frames: int):
    self.shift = int(shift)
    self.delay = int(round(self.shift * windows.SAMPLE_RATE / FPS))
    self.hop_frames = hop_frames
    self.mel_stream = mel_stream.MelStream()
    self.mel_buf, self.mel_base = np.zeros((80, 0), np.float32), 0   # mel frames from mel_base
    self.a_buf, self.a_base = np.zeros((0, 0), np.float32), 0        # unit audio embeddings
    self.a_last: tuple[int, np.ndarray] | None = None  # last computed (audio_every > 1)
    self.blocks = Blocks(n_fine, n_whole)
    self.speech: dict[int, np.ndarray] = {}      # block -> histogram of 12.5 ms levels (dB)
    self.shape: dict[int, np.ndarray] = {}       # block -> sound.speech_shape of its mel
    self.shape_buf = np.zeros((80, 0), np.float32)   # mel frames of the unfinished block
    self.shape_base = 0                          # mel frame of shape_buf[:, 0]
    self.rms_hist = np.zeros(120)                # hop levels in dB, -120..0, whole source
    self.vad_tail = np.zeros(0, np.float32)
    self.vad_count = 0                           # 200-sample hops measured so far
    # Per block, the 20-ms frames' RMS and speech-band energy (``sound.character``).
    self.levels: dict[int, list[np.ndarray]] = {}
    self.levels_tail = np.zeros(0, np.float32)
    self.levels_count = 0                        # 20-ms frames measured so far
    self.raw = 0                                 # source samples received
    self.lead = 0                                # silence the reader put in front
    self.end: int | None = None                  # end of real sound (lane clock), at finish
    self.positions = 0                           # positions with real sound in reach

  @property
  def start(self) -> int:
    """First sample of real sound on the lane's clock."""
    return max(0, self.lead + self.delay)

  def push(self, x: np.ndarray) -> np.ndarray:
    """Source samples in; returns the lane's samples (shifted)."""
    if self.delay > 0 and self.raw == 0 and x.size:
      y = np.concatenate([np.zeros(self.delay, np.float32), x])
    elif self.delay < 0:
      drop = max(0, min(x.size, -self.delay - self.raw))
      y = x[drop:]
    else:
      y = x
    self.raw += x.size
    return y

  def hear(self, audio: np.ndarray) -> None:
    """Source samples in: shifted, levels (``vad``), mel and its speech shape."""
    x = self.push(audio)
    self.vad(x)
    self.frame_levels(x)
    m = self.mel_stream.push(x)
    self.mel_buf = np.concatenate([self.mel_buf, m], axis=1)
    self.shape_push(m)

  def hear_end(self, num_frames: int | None) -> None:
    """The source ended (``num_frames`` of video): the last mel frames and shape."""
    m = self.mel_stream.finish(num_frames)
    self.mel_buf = np.concatenate([self.mel_buf, m], axis=1)
    self.shape_push(m, final=True)

  def valid_windows(self, video_samples: int | None) -> tuple[int, float]:
    """Audio windows ``[lo, hi)`` (by first mel frame) that read real sound only.

    A window starting at mel frame ``m`` reads samples ``200 m - 400 .. 200 (m + 15) + 400``.
    The file's own edges (sound from the first frame, or running past the last) are the
    training data's edges too and stay valid."""
    lo = 0 if self.start == 0 else -(-(self.start + 400) // 200)
    hi = math.inf
    if self.end is not None and video_samples is not None and self.end < video_samples:
      hi = (self.end - 400) // 200 - windows.MEL_WINDOW + 2
    return lo, hi

  def vad(self, x: np.ndarray) -> None:
    """Levels of 12.5 ms hops, per block and for the whole source."""
    x = np.concatenate([self.vad_tail, x])
    n = x.size // 200
    if n:
      e = x[:n * 200].reshape(n, 200)
      db = 10 * np.log10(np.mean(e * e, axis=1) + 1e-12)
      bins = np.clip((-db).astype(int), 0, 119)
      blk = ((self.vad_count + np.arange(n)) * 200 // (640 * self.hop_frames)).astype(int)
      for b in np.unique(blk):
        h = self.speech.setdefault(int(b), np.zeros(120, np.int32))
        np.add.at(h, bins[blk == b], 1)
      # Made-up silence (a late start) says nothing about the room's noise floor.
      real = (self.vad_count + np.arange(n)) * 200 >= self.start
      np.add.at(self.rms_hist, bins[real], 1)
      self.vad_count += n
    self.vad_tail = x[n * 200:]

  def frame_levels(self, x: np.ndarray) -> None:
    """RMS and speech-band energy of 20-ms frames, per block (``sound.character``)."""
    x = np.concatenate([self.levels_tail, x])
    n = x.size // sound.FRAME_SAMPLES
    if n:
      rms, band = media.frame_levels(x[:n * sound.FRAME_SAMPLES], windows.SAMPLE_RATE)
      blk = ((self.levels_count + np.arange(n)) * sound.FRAME_SAMPLES
             // (windows.SAMPLES_PER_FRAME * self.hop_frames))
      for b in np.unique(blk):
        sel = blk == b
        self.levels.setdefault(int(b), []).append(
            np.stack([rms[sel], band[sel]]).astype(np.float32))
      self.levels_count += n
    self.levels_tail = x[n * sound.FRAME_SAMPLES:]

  def character(self, blocks: Sequence[int], o: AnalysisOptions) -> dict:
    """The sound of ``blocks``: level (dBFS), speech-band spread (dB) and what it is
    (``sound.character``)."""
    parts = [p for b in blocks for p in self.levels.get(b, [])]
    f = np.concatenate(parts, axis=1).astype(np.float64) if parts else np.zeros((2, 0))
    level, spread = media.sound_stats(f[0], f[1])
    shaped = [self.shaped(b, o) for b in blocks if b in self.shape]
    share = float(np.mean(shaped)) if shaped else 0.0
    return {"level_dbfs": round(level, 1), "speech_spread_db": round(spread, 1),
            "character": sound.character(level, spread, share, o.vad_db)}

  def shaped(self, block: int, o: AnalysisOptions) -> bool:
    """Whether ``block``'s sound has speech's shape (``AnalysisOptions.vad_shape_*``)."""
    f = self.shape.get(block)
    return f is not None and (f[0] >= o.vad_shape_modulation and f[1] >= o.vad_shape_depth_db
                              and f[2] >= o.vad_shape_centroid_bins)

  def block_of_mel(self, m: int) -> int:
    """The block holding mel frame ``m`` (centred on sample ``200 m``, as ``vad``'s hops)."""
    return m * 200 // (640 * self.hop_frames)

  def shape_push(self, mel: np.ndarray, final: bool = False) -> None:
    """Mel frames in (the lane's, in order); ``sound.speech_shape`` of each block they complete,
    and with ``final`` of the last, partial one."""
    buf = np.concatenate([self.shape_buf, mel], axis=1)
    while buf.shape[1]:
      b = self.block_of_mel(self.shape_base)
      end = -(-(b + 1) * 640 * self.hop_frames // 200)      # first mel frame of block b + 1
      n = end - self.shape_base
      if buf.shape[1] < n and not final:
        break
      self.shape[b] = sound.speech_shape(buf[:, :n])
      buf, self.shape_base = buf[:, n:], self.shape_base + min(n, buf.shape[1])
    self.shape_buf = buf

  def speech_threshold(self, o: AnalysisOptions) -> float:
    """The floor rule's level: above ``vad_db`` and ``vad_above_floor_db`` above the noise
    floor (the 10th percentile level of the real sound)."""
    cum = np.cumsum(self.rms_hist[::-1])          # from the quietest bin up
    floor = -float(119 - np.searchsorted(cum, 0.1 * cum[-1])) if cum[-1] else -120.0
    return max(o.vad_db, floor + o.vad_above_floor_db)

  def speech_fraction(self, blocks: Sequence[int], thr: float, o: AnalysisOptions) -> float:
    """Share of the 12.5 ms hops of ``blocks`` that are speech: above ``thr`` (the floor
    rule, ``Evidence.speech_threshold``), or above ``o.vad_db`` in a block whose sound has
    speech's shape (``AnalysisOptions.vad_shape_*``)."""
    total = speech = 0
    for b in blocks:
      h = self.speech.get(b)
      if h is None:
        continue
      t = min(thr, o.vad_db) if self.shaped(b, o) else thr
      # Bin i holds levels in (-i - 1, -i] dB: speech where -i > t.
      total += int(h.sum())
      speech += int(h[:max(0, math.ceil(-t))].sum())
    return speech / total if total else 0.0

  def forget(self, before_block: int) -> None:
    self.blocks.forget(before_block)
    for b in [b for b in self.speech if b < before_block]:
      del self.speech[b]
    for b in [b for b in self.levels if b < before_block]:
      del self.levels[b]
    for b in [b for b in self.shape if b < before_block]:
      del self.shape[b]
