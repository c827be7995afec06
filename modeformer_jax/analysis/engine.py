"""Sync QC of long videos: offset over time at sub-frame precision, drift, several faces.

``Analyzer(checkpoint).analyze(path)`` streams a file once (``stream``), follows every face
(``tracking``), embeds each track's 5-frame lip windows and the audio window at **every mel
frame** (12.5 ms apart; with ``QCOptions.audio_every`` n > 1 the audio model runs on every
n-th, the ones between are blended from their neighbours), and keeps, per face track and
per ``hop_s`` block of video, the summed similarity of each video window with the audio
windows 0..+-15 frames away. Memory holds a few seconds of frames and embeddings and one
small summary per block, so it does not grow with the file's length.

Per segment (``window_s`` long, every ``hop_s``):

* **Speaking face**: the track with the highest confidence among those present in at least
  ``min_face`` of the segment's positions. Confidence = the mean similarity at the chosen
  offset minus the median over all offsets (as ``protocol.detect_offset``).
* **Whole frames**: the most frequent best offset of the segment's positions (the standard
  protocol's per-frame vote, ``vote_frames``; each frame's votes pooled with its two
  neighbours') says where to look; the reported
  ``offset_frames`` is the whole frame nearest the sub-frame estimate below.
* **Sub-frame**: the audio window of video frame ``t`` starts at mel frame ``round(3.2 t)``,
  so audio windows ``s`` mel frames later sit ``12.5 s + 12.5 (round(3.2 t) - 3.2 t)`` ms
  away: the five phases of ``t mod 5`` sample the similarity curve on a 2.5 ms grid. A
  parabola is fitted to the grid points within ``fit_ms`` of the maximum (searched within
  one frame of the whole-frame answer); its vertex is the offset in ms. The uncertainty is
  the jackknife standard error over the segment's blocks.
* **Unmeasurable**, never guessed: less than ``min_speech`` of the segment's audio is
  speech (a voice-activity decision on level and, where the sound is loud throughout, its
  shape: ``speech_shape``) or no face is tracked in ``min_face`` of it.

Per file: the global offset, which is also plain ``detect``'s answer (``_whole``): the
whole frame most measurable segments read (within one frame; without such a majority the
evidence conflicts and there is no offset), in ms from their blocks pooled, with a
jackknife standard error; the drift (Theil-Sen slope of offset against time, in ms per
minute, with its confidence interval from non-overlapping segments) and a verdict against
each broadcast tolerance (``tolerances``). Positive offsets mean the audio is late.
"""
from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import json
import math
import pathlib
import queue
import resource
import threading
import time
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from modeformer_jax import media
from modeformer_jax.analysis import tracking
from modeformer_jax.errors import FeatureError
from modeformer_jax.evaluation import protocol
from modeformer_jax.media import features, mel_stream
from modeformer_jax.model import windows
from modeformer_jax.model.input_spec import MEL_CONFIG
from modeformer_jax.qc import tolerances

FPS = windows.FPS
MEL_MS = 1000.0 / 80              # one mel hop: 12.5 ms
FRAME_MS = windows.FRAME_MS
MISMATCH_NOTE_S = 0.1            # stream ends further apart than this are reported
_PHASE_MS = np.array([12.5 * (windows.mel_start(p) - 3.2 * p) for p in range(5)])


@dataclasses.dataclass
class QCOptions:
  """What the analysis measures and when a segment counts as measurable."""
  window_s: float = 5.0          # segment length
  hop_s: float = 1.0             # segment step (window_s must be a multiple of it)
  max_offset_frames: int = 15    # search range, +-frames
  # The shortest video (and stretch of it with sound) analysed: every offset of the search
  # is then scored by at least this many lip windows (``min_frames``). Training clips need
  # the whole search around one window (``features.MIN_FRAMES``, 35 frames); a detection
  # pools every window, so a 1.2 s word clip (29 frames, LRW) is measurable.
  min_offset_windows: int = 5
  min_speech: float = 0.2        # fraction of a segment's audio that must be speech
  min_face: float = 0.5          # fraction of a segment's windows with the chosen face
  vad_db: float = -45.0          # speech: 12.5 ms RMS above this (dBFS) ...
  vad_above_floor_db: float = 10.0   # ... and this far above the file's noise floor,
  # ... or, in a block whose sound has speech's shape (``speech_shape``; for sound that is
  # loud throughout, with no quiet floor to stand above), above ``vad_db`` alone. Shape:
  # this share of the level's modulation at syllable rates (2-8 Hz), a level that dips
  # this many dB between syllables, and a spectral centroid that moves this many mel bins
  # (vowels against fricatives). On the real clips speech blocks measure 0.25-0.95,
  # 9-50 dB and 5-25 bins; steady noise, held or plucked tones, chords and drum hits
  # (tests/test_sync_qc.py) at most 2.1 bins, or under 2 dB.
  vad_shape_modulation: float = 0.5
  vad_shape_depth_db: float = 6.0
  vad_shape_centroid_bins: float = 5.0
  fit_ms: float = 20.0           # half-width of the parabola fit around the peak
  max_faces: int = 4             # faces tracked at once
  # Face landmarks on every n-th frame (the tracker fills the frames between, smoothed as
  # always). 2 halves the landmarks, the largest cost, at no measured loss: 22 real clips x
  # 15 injected shifts, relative exact 88.8 / 87.2 / 82.7% at 1 / 2 / 3 when chosen; on
  # today's analysis 89.0% at 2 and 85.8% at 3 (bench/RESULTS.md).
  detect_every: int = 2
  # Audio windows embedded on every n-th mel frame (12.5 ms apart at 1); a window between
  # two computed ones gets their blend (linear, unit length), so every mel frame is still
  # scored. 2 halves the audio model's work: on the 22 real clips x 15 injected shifts
  # (bench.detect_shifts) relative exact 89.0% at 1 and at 2 (within +-1 95.0 / 97.2%;
  # absolute exact 46.2 / 41.6%; 84.8% at 3), but at 2 two clips pinned by
  # tests/test_shipped_model.py (vox2_crop/00015, raw/lrw_word_sample1) miss a shift, so
  # the default stays 1. Scoring only the computed windows (no blend) gave 77.7%.
  audio_every: int = 1
  # Box-crop models: "fixed" = the picture is the face crop the model was trained on (LRS2
  # or VoxCeleb2 style face-cropped video); a FACE_FRAMES name = find faces in a wider
  # picture and place such a crop on each. Landmark models ignore it.
  face_frame: str = "fixed"
  drift_min_ms: float = 20.0     # change over the file below this is "stable"
  chunk_frames: int = 50         # frames decoded per step
  # A lip window is measured when at most this many of its 5 frames repeat the picture
  # before them (dropped frames of a variable-rate file, sources under 25 fps): 2 keeps
  # 15 fps webcams measurable (3 of 5 pictures their own), more would feed the model
  # mostly frozen mouths.
  max_held: int = 2
  # A file fails a tolerance when out of it this long in a row (``tolerances.MIN_FAIL_S``).
  min_fail_s: float = tolerances.MIN_FAIL_S
  # Segments whose calibrated reliability (the probability that their offset is within one
  # frame of the truth, ``reliability.json`` beside the model) is lower are "uncertain".
  min_reliability: float = 0.5

  @property
  def min_frames(self) -> int:
    """Frames of video with sound needed: the last ``min_offset_windows`` of the
    5-frame windows still have audio ``max_offset_frames`` later (or earlier)."""
    return windows.WINDOW_FRAMES - 1 + self.max_offset_frames + self.min_offset_windows

  def check(self) -> None:
    k = self.window_s / self.hop_s
    if self.hop_s * FPS != int(self.hop_s * FPS) or abs(k - round(k)) > 1e-9 or k < 1:
      raise ValueError(f"window_s={self.window_s} must be a whole multiple of hop_s="
                       f"{self.hop_s}, and hop_s a whole number of frames")
    if self.audio_every < 1 or self.detect_every < 1:
      raise ValueError("audio_every and detect_every must be at least 1")


def add_analysis_flags(group: Any, window_s: float | None = None) -> None:
  """The analysis options people set, on an argparse parser or group: one definition, so
  ``detect`` and ``monitor`` share names, defaults and help. ``window_s``: a front end's
  own default window (the monitor's reports read 10 s)."""
  d = QCOptions()
  group.add_argument("--window", type=float, default=window_s or d.window_s,
                     help="seconds of video each offset reads (a whole number of --hop)")
  group.add_argument("--hop", type=float, default=d.hop_s,
                     help="seconds between segments (a whole number of frames)")
  group.add_argument("--max_faces", type=int, default=d.max_faces, help="faces tracked at once")
  group.add_argument("--detect_every", type=int, default=d.detect_every,
                     help="run the face landmarker on every n-th frame (faster, coarser)")
  group.add_argument("--audio_every", type=int, default=d.audio_every,
                     help="run the audio model on every n-th mel frame, the ones between "
                     "blended (2: faster; bench/RESULTS.md gives its accuracy cost)")
  group.add_argument("--min_reliability", type=float, default=d.min_reliability,
                     help="segments whose calibrated probability of being within one frame "
                     "is lower are 'uncertain' (not used for verdicts or alarms)")
  group.add_argument("--face_frame", default=d.face_frame,
                     choices=["fixed", *sorted(tracking.FACE_FRAMES)],
                     help="box-crop models only: 'fixed' = the video is a face crop like the "
                     "model's training frames; a dataset name = find faces in a wider "
                     "picture and place that dataset's face crop on each")


def analysis_options(args: Any, **fields: Any) -> QCOptions:
  """``QCOptions`` from the flags of :func:`add_analysis_flags` (and a front end's own
  ``fields``); raises ValueError for inconsistent ones."""
  options = QCOptions(window_s=args.window, hop_s=args.hop, max_faces=args.max_faces,
                      detect_every=args.detect_every, audio_every=args.audio_every,
                      min_reliability=args.min_reliability,
                      face_frame=args.face_frame, **fields)
  options.check()
  return options


def speech_shape(mel: np.ndarray) -> np.ndarray:
  """What tells speech from other sound in a stretch of log-mel frames ``[80, n]`` (about a
  second; ``features.log_mel`` scaling), when its level cannot (sound loud throughout):
  ``[modulation share, depth dB, centroid spread]``.

  * modulation share: of the level's modulation power above 0.5 Hz, the share at syllable
    rates, 2-8 Hz (steady noise and held chords have little);
  * depth: the level's 90th minus 10th percentile, dB (the dips between syllables);
  * centroid spread: the standard deviation, in mel bins, of the spectral centroid over
    the frames within 20 dB of the loudest (vowels, fricatives and nasals sit at different
    heights; a tone, a tremolo, a plucked note or a drum hit keeps its spectrum's shape).
  """
  c = MEL_CONFIG
  if mel.shape[1] < 8:
    return np.zeros(3)
  top, min_db = c["max_abs_value"], c["min_level_db"]
  amp_db = (np.asarray(mel, np.float64) + top) * -min_db / (2 * top) + min_db
  power = 10.0 ** (amp_db / 10)                # the mel is of magnitudes: 20 log10
  level = 10 * np.log10(power.mean(axis=0))
  env = level - level.mean()
  spec = np.abs(np.fft.rfft(env * np.hanning(env.size))) ** 2
  hz = np.fft.rfftfreq(env.size, MEL_MS / 1000)
  mod = spec[hz > 0.5].sum()
  share = spec[(hz >= 2) & (hz <= 8)].sum() / mod if mod > 0 else 0.0
  depth = np.percentile(level, 90) - np.percentile(level, 10)
  loud = level >= level.max() - 20
  centroid = (power * np.arange(mel.shape[0])[:, None]).sum(axis=0) / power.sum(axis=0)
  return np.array([share, depth, centroid[loud].std()])


class _Blocks:
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


class _Lane:
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
    self.blocks = _Blocks(n_fine, n_whole)
    self.speech: dict[int, np.ndarray] = {}      # block -> histogram of 12.5 ms levels (dB)
    self.shape: dict[int, np.ndarray] = {}       # block -> speech_shape of its mel
    self.shape_buf = np.zeros((80, 0), np.float32)   # mel frames of the unfinished block
    self.shape_base = 0                          # mel frame of shape_buf[:, 0]
    self.rms_hist = np.zeros(120)                # hop levels in dB, -120..0, whole source
    self.vad_tail = np.zeros(0, np.float32)
    self.vad_count = 0                           # 200-sample hops measured so far
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

  def block_of_mel(self, m: int) -> int:
    """The block holding mel frame ``m`` (centred on sample ``200 m``, as ``vad``'s hops)."""
    return m * 200 // (640 * self.hop_frames)

  def shape_push(self, mel: np.ndarray, final: bool = False) -> None:
    """Mel frames in (the lane's, in order); ``speech_shape`` of each block they complete,
    and with ``final`` of the last, partial one."""
    buf = np.concatenate([self.shape_buf, mel], axis=1)
    while buf.shape[1]:
      b = self.block_of_mel(self.shape_base)
      end = -(-(b + 1) * 640 * self.hop_frames // 200)      # first mel frame of block b + 1
      n = end - self.shape_base
      if buf.shape[1] < n and not final:
        break
      self.shape[b] = speech_shape(buf[:, :n])
      buf, self.shape_base = buf[:, n:], self.shape_base + min(n, buf.shape[1])
    self.shape_buf = buf

  def speech_threshold(self, o: QCOptions) -> float:
    """The floor rule's level: above ``vad_db`` and ``vad_above_floor_db`` above the noise
    floor (the 10th percentile level of the real sound)."""
    cum = np.cumsum(self.rms_hist[::-1])          # from the quietest bin up
    floor = -float(119 - np.searchsorted(cum, 0.1 * cum[-1])) if cum[-1] else -120.0
    return max(o.vad_db, floor + o.vad_above_floor_db)

  def speech_fraction(self, blocks: Sequence[int], thr: float, o: QCOptions) -> float:
    """Share of the 12.5 ms hops of ``blocks`` that are speech: above ``thr`` (the floor
    rule, ``Evidence.speech_threshold``), or above ``o.vad_db`` in a block whose sound has
    speech's shape (``QCOptions.vad_shape_*``)."""
    total = speech = 0
    for b in blocks:
      h = self.speech.get(b)
      if h is None:
        continue
      f = self.shape.get(b)
      shaped = f is not None and (f[0] >= o.vad_shape_modulation
                                  and f[1] >= o.vad_shape_depth_db
                                  and f[2] >= o.vad_shape_centroid_bins)
      t = min(thr, o.vad_db) if shaped else thr
      # Bin i holds levels in (-i - 1, -i] dB: speech where -i > t.
      total += int(h.sum())
      speech += int(h[:max(0, math.ceil(-t))].sum())
    return speech / total if total else 0.0

  def forget(self, before_block: int) -> None:
    self.blocks.forget(before_block)
    for b in [b for b in self.speech if b < before_block]:
      del self.speech[b]
    for b in [b for b in self.shape if b < before_block]:
      del self.shape[b]


class Evidence:
  """The one analysis of a source, as it streams: per face track and per ``hop_s`` block,
  the similarity of every 5-frame lip window with the audio windows 0..+-15 frames away at
  every mel frame (see the module docstring). ``push`` chunks of ``media.Reader`` (or of a
  live reader), then ``finish``; ``Analyzer.summarise`` turns it into answers.

  ``shifts`` analyses several versions of the audio at once (each delayed by that many
  frames, ``_Lane``); the pictures are decoded, tracked and embedded once.
  """

  def __init__(self, analyzer: "Analyzer", info: media.StreamInfo, shifts: Sequence[int] = (0,),
               name: str = ""):
    o = analyzer.options
    self.analyzer, self.options, self.info, self.name = analyzer, o, info, name
    self.embedder = analyzer.embedder
    self.maxk = o.max_offset_frames
    self.max_s = windows.mel_start(self.maxk)          # mel frames of maxk video frames
    self.n_fine = 2 * self.max_s + 1
    self.whole_idx = np.array([[windows.mel_start(p + k) - windows.mel_start(p) + self.max_s
                                for k in range(-self.maxk, self.maxk + 1)] for p in range(5)])
    # Frames per block (hop_s of video): segments and windows start and end on blocks.
    self.hop_frames = int(round(o.hop_s * FPS))
    self.win_blocks = int(round(o.window_s / o.hop_s))
    self._window_end = 0          # blocks before this were in a latest_window already
    self.lanes = [_Lane(k, self.n_fine, 2 * self.maxk + 1, self.hop_frames) for k in shifts]
    self.lips = analyzer.lip_source()
    self.observer = (tracking.FaceObserver(o.max_faces) if self.lips.needs_faces else None)
    self.shots = tracking.ShotDetector()
    self.frame_buf: list[np.ndarray] = []
    self.held_buf: list[bool] = []
    self.buf_base = 0                  # frame number of frame_buf[0]
    self.cropped = 0                   # frames cut into lips so far
    self.tails: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # track -> (next, crops, held)
    self.pending: list[tuple[int, int, np.ndarray]] = []   # (track, position, video embedding)
    self.vid_queue: list[tuple[list, np.ndarray]] = []     # windows waiting for a full chunk
    self.cuts: list[int] = []
    self.num_frames = 0
    self.held_frames = 0
    self.windows_held = 0              # lip windows skipped for held frames
    self.finished = False
    # Seconds spent per stage (where the time goes; bench.decode_floor prints it).
    self.stage_s: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def _timed(self, stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.stage_s[stage] += time.perf_counter() - t0

  # --- audio -------------------------------------------------------------------------------
  def _embed_audio(self, lane: _Lane, final: bool, partial: bool = False) -> None:
    chunk = self.embedder.chunk
    n = self.options.audio_every
    start = lane.a_base + lane.a_buf.shape[0]
    stop = lane.mel_base + lane.mel_buf.shape[1] - windows.MEL_WINDOW + 1
    if final:                                  # windows past the end read silence
      stop = lane.mel_base + lane.mel_buf.shape[1]
    if stop <= start:
      return
    # The mel frames whose window is computed: every n-th (the others are blended from
    # their neighbours, ``_between``); whole embedder chunks of them only, unless ``final``
    # or ``partial`` (a padded chunk costs a full one). With n > 1 the last one computed
    # ends the step (the frames after it wait for their right neighbour), and the last
    # window of the source is always computed.
    todo = np.arange(start + (-start) % n, stop, n)
    if not final and not partial:
      todo = todo[:todo.size // chunk * chunk]
    if final and n > 1 and (todo.size == 0 or todo[-1] != stop - 1):
      todo = np.append(todo, stop - 1)
    if todo.size == 0:
      return
    stop = int(todo[-1]) + 1 if n > 1 or not final else stop
    mel = lane.mel_buf
    if final:
      mel = np.pad(mel, ((0, 0), (0, windows.MEL_WINDOW)), constant_values=features.MEL_SILENCE)
    idx = todo - lane.mel_base
    win = mel[:, idx[:, None] + np.arange(windows.MEL_WINDOW)].transpose(1, 0, 2)
    with self._timed("audio model"):
      a = _unit(self.embedder.audio(np.ascontiguousarray(win, np.float32)))
    if n > 1:
      a = self._between(lane, start, stop, todo, a)
    lane.a_buf = a if lane.a_buf.size == 0 else np.concatenate([lane.a_buf, a])

  def _between(self, lane: _Lane, start: int, stop: int, todo: np.ndarray,
               a: np.ndarray) -> np.ndarray:
    """Embeddings of mel frames ``start .. stop - 1`` from those computed at ``todo`` (and
    the lane's last computed one before): each frame between two computed ones gets their
    linear blend, made unit length again; before the first computed window of the source,
    NaN (never scored). ``todo[-1]`` is ``stop - 1``."""
    known_m = np.concatenate([[lane.a_last[0]], todo]) if lane.a_last is not None else todo
    known = np.concatenate([lane.a_last[1][None], a]) if lane.a_last is not None else a
    lane.a_last = (int(todo[-1]), a[-1])
    m = np.arange(start, stop)
    right = np.searchsorted(known_m, m)             # first computed frame at or after m
    out = np.full((m.size, a.shape[1]), np.nan, np.float32)
    exact = known_m[np.minimum(right, known_m.size - 1)] == m
    out[exact] = known[right[exact]]
    mid = ~exact & (right > 0)
    if mid.any():
      r = right[mid]
      w = ((m[mid] - known_m[r - 1]) / (known_m[r] - known_m[r - 1]))[:, None]
      out[mid] = _unit((1 - w) * known[r - 1] + w * known[r])
    return out

  def _score(self, final: bool) -> None:
    max_s = self.max_s
    video_samples = self.num_frames * 640 if final else None
    bounds = [lane.valid_windows(video_samples) for lane in self.lanes]
    have = min(lane.a_base + lane.a_buf.shape[0] for lane in self.lanes)
    keep = []
    for tr, p, v in self.pending:
      m0 = windows.mel_start(p)
      if not final and m0 + max_s >= have:
        keep.append((tr, p, v))
        continue
      lo, hi = m0 - max_s, m0 + max_s + 1
      for lane, (vlo, vhi) in zip(self.lanes, bounds):
        a = max(lo, lane.a_base, vlo)
        b = min(hi, lane.a_base + lane.a_buf.shape[0], vhi)
        if a >= b:          # no real sound within reach of this window
          continue
        curve = np.full(self.n_fine, np.nan)
        curve[a - lo:b - lo] = lane.a_buf[a - lane.a_base:b - lane.a_base] @ v
        whole = curve[self.whole_idx[p % 5]]
        best = int(np.nanargmax(whole)) if np.isfinite(whole).any() else None
        lane.blocks.add(tr, p // self.hop_frames, p % 5, curve, best)
    self.pending = keep

  # --- pictures ------------------------------------------------------------------------------
  def _embed_video(self, final: bool, partial: bool = False) -> None:
    # Whole embedder chunks only (as _embed_audio), the rest waits for the next call.
    n = sum(len(ow) for ow, _ in self.vid_queue)
    take = n if final or partial else n // self.embedder.chunk * self.embedder.chunk
    if take == 0:
      return
    owners = [x for ow, _ in self.vid_queue for x in ow]
    wins = np.concatenate([w for _, w in self.vid_queue])
    with self._timed("video model"):
      v = _unit(self.embedder.video(wins[:take]))
    self.pending.extend((tid, p, v[i]) for i, (tid, p) in enumerate(owners[:take]))
    self.vid_queue.clear()
    if take < n:
      self.vid_queue.append((owners[take:], wins[take:]))

  def _cut_lips(self, upto: int, final: bool = False) -> None:
    if upto <= self.cropped:
      self._embed_video(final)
      return
    lo, w = self.cropped, windows.WINDOW_FRAMES
    held = np.array(self.held_buf[lo - self.buf_base:upto - self.buf_base], bool)
    with self._timed("lip crops"):
      got = self.lips.crops_for(lo, upto,
                                self.frame_buf[lo - self.buf_base:upto - self.buf_base])
    vids, owners = [], []
    for tid, (idx, cr) in got.items():
      nxt, tail, tail_held = self.tails.get(
          tid, (-1, np.zeros((0, *cr.shape[1:]), np.uint8), np.zeros(0, bool)))
      if nxt != idx[0]:                          # a new track (or a gap): no tail
        tail, tail_held = tail[:0], tail_held[:0]
      seq = np.concatenate([tail, cr])
      seq_held = np.concatenate([tail_held, held[idx - lo]])
      first = idx[0] - tail.shape[0]
      n = seq.shape[0] - w + 1
      if n > 0:
        # A window is measured when at most ``max_held`` of its frames repeat the picture
        # before them; its frames stay where their timestamps put them either way.
        n_held = np.convolve(seq_held.astype(int), np.ones(w, int), "valid")
        ok = n_held <= self.options.max_held
        self.windows_held += int((~ok).sum())
        if ok.any():
          vids.append(windows.video_windows(seq)[ok])
          owners += [(tid, first + i) for i in np.flatnonzero(ok)]
      self.tails[tid] = (idx[-1] + 1, seq[-(w - 1):], seq_held[-(w - 1):])
    if vids:
      self.vid_queue.append((owners, np.concatenate(vids)))
    self._embed_video(final)
    self.cropped = upto
    drop = self.cropped - self.buf_base
    del self.frame_buf[:drop]
    del self.held_buf[:drop]
    self.buf_base += drop
    self.lips.prune(self.cropped)

  # --- the stream ----------------------------------------------------------------------------
  def push(self, ch: media.Chunk, landmarks_every: int | None = None) -> None:
    """Adds one chunk of frames and audio; analyses what became complete.
    ``landmarks_every``: face landmarks on every n-th frame of this chunk (default the
    options' ``detect_every``; a live monitor that falls behind runs them more sparsely)."""
    o = self.options
    every = o.detect_every if landmarks_every is None else int(landmarks_every)
    for lane in self.lanes:
      if ch.audio.size and lane.raw == 0:
        lane.lead = int(ch.audio_lead)
      with self._timed("mel"):
        lane.hear(ch.audio)
    held = ch.held if ch.held is not None else np.zeros(len(ch.frames), bool)
    for i, frame in enumerate(ch.frames):
      t = ch.start + i
      with self._timed("shot cuts"):
        cut = self.shots.is_cut(frame)
      if cut:
        self.cuts.append(t)
        if self.observer is not None:
          self.observer.reset()
      faces = []
      if self.observer is not None and (t % every == 0 or cut):
        with self._timed("face landmarks"):
          faces = self.observer.observe(frame)
      self.lips.update(t, faces, cut)
      self.frame_buf.append(frame)
      self.held_buf.append(bool(held[i]))
    self.held_frames += int(held.sum())
    self.num_frames = ch.start + len(ch.frames)
    if self.lips.lookahead is not None:
      self._cut_lips(max(self.cropped, self.num_frames - self.lips.lookahead))
    for lane in self.lanes:
      self._embed_audio(lane, final=False)
    with self._timed("scoring"):
      self._score(final=False)
    self._forget_audio()

  def _forget_audio(self) -> None:
    """Forgets audio embeddings and mel that no pending or future window needs."""
    oldest = min([p for _, p, _ in self.pending] + [p for ow, _ in self.vid_queue for _, p in ow]
                 + [max(0, self.cropped - windows.WINDOW_FRAMES)])
    need = windows.mel_start(oldest) - self.max_s
    for lane in self.lanes:
      if need > lane.a_base:
        drop = min(need - lane.a_base, lane.a_buf.shape[0])
        lane.a_buf, lane.a_base = lane.a_buf[drop:], lane.a_base + drop
      keep_mel = lane.a_base + lane.a_buf.shape[0]
      if keep_mel > lane.mel_base:
        lane.mel_buf = lane.mel_buf[:, keep_mel - lane.mel_base:]
        lane.mel_base = keep_mel

  def finish(self) -> None:
    """The source ended: analyses the rest (windows past the end of the sound are not
    scored)."""
    if self.finished:
      return
    self.finished = True
    try:
      for lane in self.lanes:
        # Real sound ends where the source's samples end, moved by the lane's shift.
        lane.end = lane.raw + lane.delay
      for tr in self.lips.tracks:
        tr.ended = True
      self._cut_lips(self.num_frames, final=True)
      for lane in self.lanes:
        lane.hear_end(self.num_frames)
        self._embed_audio(lane, final=True)
      self._score(final=True)
    finally:
      self.close()

  def close(self) -> None:
    if self.observer is not None:
      self.observer.close()
      self.observer = None

  # --- live monitoring -----------------------------------------------------------------------
  def latest_window(self) -> dict | None:
    """The last ``window_s`` of complete blocks, analysed now (a live monitor's report).

    Everything pushed is embedded and scored first (``flush``); None when no block was
    completed since the last call. Returns ``segment``'s dict (offset, confidence,
    reliability, track, face and speech fractions, reason) plus ``start_frame`` and
    ``end_frame`` (of this evidence's stream) and ``new_frames`` (not in an earlier
    window). Evidence no later window can reach is forgotten: memory stays flat.
    """
    self.flush()
    b1 = self.scored_until() // self.hop_frames
    if b1 <= self._window_end:
      return None
    b0 = max(0, b1 - self.win_blocks)
    lane = self.lanes[0]
    seg = self.segment(lane, b0, b1 - b0, self.speech_threshold(lane))
    seg |= {"start_frame": b0 * self.hop_frames, "end_frame": b1 * self.hop_frames,
            "new_frames": (b1 - max(self._window_end, b0)) * self.hop_frames}
    self._window_end = b1
    self.forget(b0 - self.win_blocks)
    return seg

  def flush(self) -> None:
    """Embeds and scores every window complete now, without waiting for whole embedder
    chunks (``push`` waits: a padded chunk costs a full one). A live monitor calls it when
    a report is due, so the report does not wait seconds for a chunk to fill."""
    self._embed_video(final=False, partial=True)
    for lane in self.lanes:
      self._embed_audio(lane, final=False, partial=True)
    with self._timed("scoring"):
      self._score(final=False)
    self._forget_audio()

  def scored_until(self) -> int:
    """Lip windows starting before this frame are scored (or skipped): blocks before
    ``scored_until() // hop_frames`` are complete, later pushes add nothing to them."""
    waiting = [p for _, p, _ in self.pending] + [p for ow, _ in self.vid_queue for _, p in ow]
    return max(0, min(waiting + [self.cropped - windows.WINDOW_FRAMES + 1]))

  def forget(self, before_block: int) -> None:
    """Drops the evidence of blocks before ``before_block`` and what ended face tracks
    left behind (live monitoring: memory stays flat for hours)."""
    for lane in self.lanes:
      lane.forget(before_block)
    self.cuts = [c for c in self.cuts if c >= before_block * self.hop_frames]
    if self.lips.needs_faces:
      alive = {tr.id for tr in self.lips.tracks}
      for tid in [t for t in self.tails if t not in alive]:
        del self.tails[tid]
      self.lips.finished.clear()

  # --- reading it ----------------------------------------------------------------------------
  def speech_threshold(self, lane: _Lane) -> float:
    """``lane.speech_threshold`` under this analysis's options."""
    return lane.speech_threshold(self.options)

  def overlap_s(self, lane: _Lane) -> float:
    """Seconds of video that have real sound (after ``finish``)."""
    video = self.num_frames * 640
    end = min(video, lane.end if lane.end is not None else video)
    return max(0, end - lane.start) / windows.SAMPLE_RATE

  def segment(self, lane: _Lane, first_block: int, num_blocks: int, thr: float) -> dict:
    """The estimate over blocks ``first_block ..`` (at most ``num_blocks``): the speaking
    face (the track with the highest confidence among those with lips in ``min_face`` of
    the positions), its offset, and why it is not measurable when it is not."""
    o = self.options
    n_total = max(0, self.num_frames - windows.WINDOW_FRAMES + 1)
    n_blocks = max(1, math.ceil(n_total / self.hop_frames))
    bl = range(first_block, min(first_block + num_blocks, n_blocks))
    speech_frac = lane.speech_fraction(bl, thr, o)
    n_pos = sum(max(0, min(self.hop_frames, n_total - b * self.hop_frames)) for b in bl)
    tracks = sorted({tr for tr, b in lane.blocks.data if b in bl})
    best = None
    for tr in tracks:
      parts = [p for p in (lane.blocks.data.get((tr, b)) for b in bl) if p is not None]
      face_frac = float(sum(p["n"][0] for p in parts) / max(1, n_pos))
      est = _estimate(parts, self.whole_idx, self.max_s, o.fit_ms)
      if est is None:
        continue
      est |= {"track": tr, "face_fraction": round(face_frac, 3)}
      if face_frac >= o.min_face and (best is None or est["confidence"] > best["confidence"]):
        best = est
    seg = {"start_s": first_block * self.hop_frames / FPS,
           "end_s": (first_block + num_blocks) * self.hop_frames / FPS,
           "speech_fraction": round(speech_frac, 3)}
    t0, t1 = seg["start_s"] * windows.SAMPLE_RATE, seg["end_s"] * windows.SAMPLE_RATE
    no_audio = lane.start >= t1 or (lane.end is not None and lane.end <= t0)
    reason = None
    if no_audio:
      reason = "no audio"
    elif best is None:
      reason = "no face"
    elif speech_frac < o.min_speech:
      reason = "no speech"
    elif best["at_search_edge"]:
      # The best whole frame is the last one searched: the true peak may lie beyond the
      # range, or there is none; either way this is not a measurement.
      reason = "uncertain"
    if best is not None:
      best["reliability"] = self.analyzer.reliability_of(best, speech_frac)
      if (reason is None and best["reliability"] is not None
          and best["reliability"] < o.min_reliability):
        reason = "uncertain"
      seg |= best
    else:
      seg |= {"offset_ms": None, "offset_frames": None, "uncertainty_ms": None,
              "confidence": None, "track": None, "face_fraction": 0.0}
    seg["measurable"] = reason is None
    seg["reason"] = reason
    seg["blocks"] = [first_block, bl.stop]
    return seg


class Analyzer:
  """A loaded model and the analysis options; ``analyze(path)`` for each file."""

  def __init__(self, checkpoint: str | pathlib.Path | None = None,
               options: QCOptions | None = None, layout: str = "auto", progress: bool = False,
               detector: Any | None = None):
    from modeformer_jax.analysis import detectors
    self.options = options or QCOptions()
    self.options.check()
    self.progress = progress
    det = detector if detector is not None else detectors.load_detector(checkpoint, layout=layout)
    self.checkpoint, self.crop, self.embedder = det.checkpoint, det.crop, det.embedder
    self.lip_source()     # fails early if the crop is not supported
    # The model's calibration of segment confidence (bench.qc_calibration), if it has one.
    path = pathlib.Path(self.checkpoint) / RELIABILITY_FILE
    self.reliability = json.loads(path.read_text()) if path.is_file() else None

  def reliability_of(self, est: dict, speech_fraction: float) -> float | None:
    """The calibrated probability that an estimate is within one frame of the truth
    (a logistic function of ``RELIABILITY_FEATURES``); None for a model without one."""
    return reliability(self.reliability, est, speech_fraction)

  def lip_source(self) -> Any:
    """Where lips come from: face tracks (landmark crops, box crops placed on found faces)
    or the whole picture (a box model on face-cropped video, Haar models)."""
    o = self.options
    if self.crop.method == "haar" or (self.crop.method == "box" and o.face_frame == "fixed"):
      return tracking.FrameLips(self.crop)
    return tracking.Tracker(self.crop, face_frame=o.face_frame)

  # ---------------------------------------------------------------------------------------
  def analyze(self, path: str | pathlib.Path, progress: bool | None = None,
              audio_shift_frames: int = 0) -> dict[str, Any]:
    """Measures one file (see the module docstring); raises ``FeatureError`` on bad input.

    ``progress`` (default: the analyzer's) shows a bar over the file's frames with an ETA.
    ``audio_shift_frames`` delays the audio first (an injected offset, for tests and benches).
    """
    return self.analyze_shifts(path, [audio_shift_frames], progress)[0]

  def analyze_shifts(self, path: str | pathlib.Path, shifts: Sequence[int],
                     progress: bool | None = None, strict: bool = True
                     ) -> list[dict[str, Any]]:
    """``analyze`` with the audio delayed by each of ``shifts`` frames, in one pass over the
    pictures (decoded, tracked and embedded once). Each result gains ``injected``.

    ``strict=False``: a shift that cannot be summarised (too little overlap left) gives
    ``{"injected": k, "error": FeatureError}`` instead of raising, so one shift does not
    cost the others; errors of the file itself still raise."""
    progress = self.progress if progress is None else progress
    path = str(path)
    t_start = time.perf_counter()
    reader = media.Reader(path)
    info = reader.info
    ev = Evidence(self, info, shifts, name=pathlib.Path(path).name)
    bar = None
    if progress:
      from tqdm import tqdm
      total = int(info.duration * FPS) if info.duration else None
      bar = tqdm(total=total, unit="frame", desc=pathlib.Path(path).name, leave=False)
    try:
      # Fewer frames per chunk for large pictures: a chunk is held about three times
      # (decoder output, the stacked chunk, the crop delay), ~128 MB a copy at most.
      reader.chunk_frames = max(10, min(self.options.chunk_frames,
                                        int(128e6 // (3 * info.width * info.height))))
      # Decoding runs in its own thread, a chunk ahead: PyAV decodes with the GIL released,
      # so it overlaps the landmarks and the model (the decode-floor bench measures both).
      chunks = _prefetch(reader.chunks())
      try:
        while True:
          with ev._timed("waiting for decode"):
            ch = next(chunks, None)
          if ch is None:
            break
          _named(path, ev.push, ch)
          if bar is not None:
            bar.update(len(ch.frames))
      finally:
        chunks.close()
      # (media.Reader raised already for no audio samples or a truncated file.)
      if ev.num_frames < self.options.min_frames:
        raise FeatureError(path, "too_short", f"{ev.num_frames} frames at {FPS} fps, need "
                           f"at least {self.options.min_frames} (the +-"
                           f"{self.options.max_offset_frames} frame search)")
      _named(path, ev.finish)
    finally:
      ev.close()
      if bar is not None:
        bar.close()
    seen = ev.lips.summaries()
    out = []
    for lane in ev.lanes:
      try:
        result = self.summarise(ev, lane, path, reader, seen)
      except FeatureError as e:
        if strict:
          raise
        out.append({"injected": lane.shift, "error": e})
        continue
      wall = time.perf_counter() - t_start
      result["timing"] = {"wall_s": round(wall, 2),
                          "realtime_factor": round(ev.num_frames / FPS / wall, 2) if wall else None,
                          "peak_rss_mb": round(resource.getrusage(
                              resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                          "stages_s": {k: round(v, 2) for k, v in sorted(ev.stage_s.items())}}
      if len(shifts) > 1 or lane.shift:
        result["injected"] = lane.shift
      out.append(result)
    return out

  # ---------------------------------------------------------------------------------------
  def summarise(self, ev: Evidence, lane: _Lane, path: str, reader: Any,
                seen: dict[int, dict]) -> dict[str, Any]:
    """Segments, the whole-file answer, drift, tolerances and tracks of one lane."""
    o = self.options
    info = reader.info
    num_frames = ev.num_frames
    audio_s = max(0, (lane.end or 0) - lane.start) / windows.SAMPLE_RATE
    video_s = num_frames / FPS
    overlap = ev.overlap_s(lane)
    if overlap * FPS < o.min_frames:
      raise FeatureError(path, "too_short", f"audio and video overlap for {overlap:.2f} s "
                         f"(video {video_s:.2f} s, sound from {lane.start / 16000:.2f} s to "
                         f"{(lane.end or 0) / 16000:.2f} s); need "
                         f"{o.min_frames / FPS:.2f} s ({o.min_frames} frames)")
    thr = ev.speech_threshold(lane)
    n_blocks = max(1, math.ceil((num_frames - windows.WINDOW_FRAMES + 1) / ev.hop_frames))
    n_segments = max(1, n_blocks - ev.win_blocks + 1)
    segs = [ev.segment(lane, j, ev.win_blocks, thr) for j in range(n_segments)]
    for seg in segs:
      # Only measurable segments carry an offset the verdicts may read.
      seg["verdicts"] = tolerances.verdicts(seg["offset_ms"] if seg["measurable"] else None)
    good = [s for s in segs if s["measurable"]]
    # Where the streams END relative to each other (a late start is reported on its own).
    mismatch = round(video_s - lane.raw / windows.SAMPLE_RATE, 3)
    streams = {
        "video_s": round(video_s, 3), "audio_s": round(audio_s, 3),
        "audio_starts_s": round(lane.start / windows.SAMPLE_RATE, 3),
        "overlap_s": round(overlap, 3),
        # Streams routinely end a frame or two apart (encoder priming, a cut on a picture).
        "short": None if abs(mismatch) < MISMATCH_NOTE_S else ("audio" if mismatch > 0 else "video"),
        "mismatch_s": mismatch,
        "source_frames": reader.source_frames, "held_frames": ev.held_frames,
        "unused_source_frames": reader.unused_frames, "windows_skipped_held": ev.windows_held,
    }
    result: dict[str, Any] = {
        "name": pathlib.Path(path).name, "path": str(pathlib.Path(path).absolute()),
        "duration_s": round(video_s, 3), "source_fps": round(info.source_fps, 3),
        "resolution": [info.width, info.height], "model": self.checkpoint,
        "crop": self.crop.to_dict(), "options": dataclasses.asdict(o),
        "speech_threshold_db": round(thr, 1), "shots": [c / FPS for c in ev.cuts],
        "streams": streams, "segments": segs}
    result["global"] = _whole(ev, lane, segs) | {
        "measurable_segments": len(good), "num_segments": len(segs),
        "segments_median_ms": (round(float(np.median([s["offset_ms"] for s in good])), 2)
                               if good else None)}
    result["drift"] = _drift(good, o, video_s)
    result["tolerances"] = tolerances.file_verdicts(good, o.hop_s, o.min_fail_s)
    result["audio_source"] = reader.audio.describe()
    result["audio_note"] = reader.audio.note
    blocks = lane.blocks.data
    result["tracks"] = []
    for tr in sorted({t for t, _ in blocks}):
      won = [s for s in good if s["track"] == tr]
      frames = [b for (t, b) in blocks if t == tr]
      n_windows = int(sum(d["n"][0] for (t, _), d in blocks.items() if t == tr))
      info_tr = seen.get(tr, {})
      mouth = info_tr.get("mouth")
      result["tracks"].append({
          "id": tr, "start_s": min(frames) * ev.hop_frames / FPS,
          "end_s": (max(frames) + 1) * ev.hop_frames / FPS,
          "segments_won": len(won), "num_frames": n_windows + windows.WINDOW_FRAMES - 1,
          "offset_ms": float(np.median([s["offset_ms"] for s in won])) if won else None,
          "confidence": float(np.mean([s["confidence"] for s in won])) if won else None,
          "mouth_xy": [round(v, 1) for v in mouth] if mouth is not None else None,
          "thumbnail": _png64(info_tr.get("thumbnail"))})
    return result


def _prefetch(it: Iterator[Any], depth: int = 1) -> Iterator[Any]:
  """``it`` run in a background thread, ``depth`` items ahead; its exceptions are raised
  here, in order. Closing the generator stops the thread (it is not left blocked)."""
  q: queue.Queue = queue.Queue(maxsize=depth)
  stop = threading.Event()
  done = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def run() -> None:
    try:
      for item in it:
        if not put((True, item)):
          return
      put((True, done))
    except BaseException as e:          # handed to the consumer, raised there
      put((False, e))
    finally:
      close = getattr(it, "close", None)
      if close is not None:              # a generator is closed by the thread running it
        close()

  thread = threading.Thread(target=run, name="decode", daemon=True)
  thread.start()
  try:
    while True:
      ok, item = q.get()
      if not ok:
        raise item
      if item is done:
        return
      yield item
  finally:
    stop.set()
    thread.join(timeout=5)


RELIABILITY_FILE = "reliability.json"
# What predicts a segment's error (bench.qc_calibration): the margin of its similarity peak
# and the share of positions voting for it. Speech and face fractions added nothing out of
# sample (their leave-one-clip-out fit was worse calibrated).
RELIABILITY_FEATURES = ("confidence", "vote_fraction")


def reliability(model: dict | None, est: dict, speech_fraction: float) -> float | None:
  """``sigmoid(bias + sum(w_f * f))`` over ``RELIABILITY_FEATURES`` of a segment estimate,
  with ``model`` = ``{"bias": b, "weights": {feature: w}}`` (None: no calibration)."""
  if not model:
    return None
  x = dict(est, speech_fraction=speech_fraction)
  z = model["bias"] + sum(w * float(x[f]) for f, w in model["weights"].items())
  return round(float(1.0 / (1.0 + math.exp(-z))), 4)


def _named(path: str, fn, *args) -> None:
  """Runs ``fn``; a ``FeatureError`` raised without a file name gets ``path``."""
  try:
    fn(*args)
  except FeatureError as e:
    if e.path:
      raise
    raise FeatureError(path, e.kind, e.reason) from e


def _whole(ev: Evidence, lane: _Lane, segs: list[dict]) -> dict:
  """The file's one offset: plain ``detect``'s answer and ``--qc``'s global offset.

  The measurable segments vote with their whole frames (``protocol.vote``, pooled: the rule
  each segment's own positions vote by). The winner must hold a strict majority of them
  within one frame, else the evidence conflicts and the file gets no offset (reason
  "conflicting evidence", ``why`` tallies the readings). The ms is then fitted on the
  agreeing segments' blocks pooled (each read on the face that speaks in the segment
  centred nearest it), its whole frame within one of the vote. With no measurable segment the blocks of the "uncertain"
  ones are pooled and the answer keeps reason "uncertain"."""
  good = [s for s in segs if s["measurable"]]
  empty = {"offset_ms": None, "uncertainty_ms": None, "offset_frames": None,
           "confidence": None, "track": None, "vote_fraction": None, "vote_frames": None}
  maxk = (ev.whole_idx.shape[1] - 1) // 2
  around = None
  if good:
    hist, key = np.zeros(2 * maxk + 1), np.zeros(2 * maxk + 1)
    for s in good:
      hist[s["offset_frames"] + maxk] += 1
      key[s["offset_frames"] + maxk] += s["confidence"]
    around = protocol.vote(hist, key, pool=True) - maxk
    pooled = [s for s in good if abs(s["offset_frames"] - around) <= 1]
    if 2 * len(pooled) <= len(good):
      # No reading holds most of what was measured: any one offset would be a guess.
      read = collections.Counter(s["offset_frames"] for s in good)
      tally = ", ".join(f"{k:+d} ({n} of {len(good)})" for k, n in read.most_common())
      return empty | {"reason": "conflicting evidence",
                      "why": f"the measurable segments read {tally} frames"}
  else:
    pooled = [s for s in segs if s["reason"] == "uncertain"]
  if not pooled:
    reasons = [s["reason"] for s in segs]
    return empty | {"reason": max(set(reasons), key=reasons.count) if reasons else "no face"}
  owner: dict[int, tuple[float, int]] = {}
  for s in pooled:
    b0, b1 = s["blocks"]
    centre = (b0 + b1 - 1) / 2
    for b in range(b0, b1):
      d = abs(b - centre)
      if b not in owner or d < owner[b][0]:
        owner[b] = (d, s["track"])
  parts = [lane.blocks.data[(tr, b)] for b, (_, tr) in sorted(owner.items())
           if (tr, b) in lane.blocks.data]
  est = _estimate(parts, ev.whole_idx, ev.max_s, ev.options.fit_ms, curves=True, around=around)
  if est is None:
    return empty | {"reason": "no face"}
  tracks = [tr for _, tr in owner.values()]
  est["track"] = max(set(tracks), key=tracks.count)
  est["reason"] = None if good else "uncertain"
  if not good:
    est["why"] = (f"the best match is at the edge of the +-{maxk} frame search"
                  if est["at_search_edge"] else
                  f"no {ev.options.window_s:g} s stretch was measured reliably")
  est["num_positions"] = int(sum(p["n"][0] for p in parts))
  return est


def _unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _png64(img: np.ndarray | None) -> str | None:
  if img is None:
    return None
  ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
  return base64.b64encode(buf.tobytes()).decode() if ok else None


def fine_grid(sums: np.ndarray, counts: np.ndarray, max_s: int) -> tuple[np.ndarray, np.ndarray]:
  """The phase-resolved similarity curve on its 2.5 ms grid: ``(ms [n], mean [n])`` sorted
  by ms, from per-phase sums and counts ``[5, 2 max_s + 1]`` over mel shifts ``-max_s..``."""
  s = np.arange(-max_s, max_s + 1)
  ms = (MEL_MS * s[None, :] + _PHASE_MS[:, None]).ravel()
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = (sums / counts).ravel()
  ok = counts.ravel() > 0
  order = np.argsort(ms[ok], kind="stable")
  return ms[ok][order], mean[ok][order]


def subframe_peak(ms: np.ndarray, curve: np.ndarray, centre_ms: float, search_ms: float,
                  fit_ms: float) -> float:
  """The peak of ``curve(ms)`` near ``centre_ms``: the vertex of a least-squares parabola
  through the points within ``fit_ms`` of the largest point within ``search_ms``."""
  near = np.flatnonzero(np.abs(ms - centre_ms) <= search_ms)
  if near.size == 0:
    return float(centre_ms)
  top = ms[near[np.argmax(curve[near])]]
  sel = np.abs(ms - top) <= fit_ms
  if sel.sum() < 3:
    return float(top)
  x = ms[sel] - top
  a, b, _ = np.polyfit(x, curve[sel], 2)
  if a >= 0:
    return float(top)
  return float(top + np.clip(-b / (2 * a), -fit_ms, fit_ms))


def _estimate(parts: list[dict], whole_idx: np.ndarray, max_s: int, fit_ms: float,
              curves: bool = False, around: int | None = None) -> dict | None:
  """An offset from blocks' sums (whole frames, ms, jackknife uncertainty); ``curves`` adds
  the vote histogram and mean similarity per whole frame (the plain answer's plot);
  ``around``: the whole frame is picked within one frame of this offset (``_vote``)."""
  if not parts:
    return None
  sums = sum(p["sum"] for p in parts)
  cnt = sum(p["cnt"] for p in parts)
  hist = sum(p["hist"] for p in parts)
  if hist.sum() == 0:
    return None
  maxk = (whole_idx.shape[1] - 1) // 2
  with np.errstate(invalid="ignore", divide="ignore"):
    whole = np.array([sums[np.arange(5), whole_idx[:, k]].sum() /
                      cnt[np.arange(5), whole_idx[:, k]].sum() for k in range(2 * maxk + 1)])
  key = np.where(np.isfinite(whole), whole, -np.inf)
  # Pooled: on few positions (a 1 s clip: 25) one frame of a second peak of periodic
  # lips tied with each half of a peak split between two frames and won on mean
  # similarity (lrw_word_sample4: +9 for +2). The sub-frame search reaches one frame
  # either side of the pick.
  pick = protocol.vote(hist, key, pool=True,
                       around=None if around is None else around + maxk)
  k = int(pick - maxk)
  offs = np.arange(-maxk, maxk + 1)
  conf = float(whole[pick] - np.nanmedian(whole))

  def ms_of(s, c):
    grid, curve = fine_grid(s, c, max_s)
    return subframe_peak(grid, curve, k * FRAME_MS, FRAME_MS, fit_ms)

  est = ms_of(sums, cnt)
  unc = None
  if len(parts) >= 3:   # jackknife over the blocks
    loo = np.array([ms_of(sums - p["sum"], cnt - p["cnt"]) for p in parts])
    n = len(parts)
    unc = float(math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
  # The whole-frame answer is the frame nearest the sub-frame estimate: near a half frame
  # the per-position vote (kept as vote_frames) splits between the two neighbours, while
  # the ms estimate is good to a few ms.
  out = {"offset_frames": int(round(est / FRAME_MS)), "vote_frames": k,
         "offset_ms": round(est, 2),
         "uncertainty_ms": None if unc is None else round(unc, 2),
         "confidence": round(conf, 4), "vote_fraction": round(float(hist[pick] / hist.sum()), 3),
         # The vote's peak on the last frame searched is not a peak that was found.
         "at_search_edge": bool(abs(k) == maxk)}
  if curves:
    out |= {"offsets": offs, "histogram": hist.astype(np.int64), "mean_curve": whole}
  return out


def _drift(good: list[dict], o: QCOptions, duration_s: float) -> dict:
  """Theil-Sen slope of offset against time; CI from non-overlapping segments."""
  step = max(1, int(round(o.window_s / o.hop_s)))
  if len(good) < 2 * step or duration_s < 2 * o.window_s:
    return {"ms_per_min": None, "ci_ms_per_min": None, "intercept_ms": None,
            "verdict": "unknown", "text": "too few measurable segments to judge drift"}
  from scipy import stats
  t = np.array([(s["start_s"] + s["end_s"]) / 2 for s in good])
  y = np.array([s["offset_ms"] for s in good])
  slope, icpt, _, _ = stats.theilslopes(y, t)
  sub = slice(None, None, step)
  if len(t[sub]) >= 3:
    _, _, lo, hi = stats.theilslopes(y[sub], t[sub], alpha=0.95)
  else:
    lo, hi = -math.inf, math.inf
  change = abs(slope) * (t.max() - t.min())
  if lo > 0 or hi < 0:
    verdict = "drifting" if change >= o.drift_min_ms else "stable"
  else:
    verdict = "stable" if abs(max(abs(lo), abs(hi))) * (t.max() - t.min()) < o.drift_min_ms \
        or change < o.drift_min_ms / 2 else "unknown"
  per_min = slope * 60
  if verdict == "drifting":
    text = (f"audio gets {'later' if per_min > 0 else 'earlier'} by {abs(per_min):.1f} ms per "
            f"minute ({change:.0f} ms over the measured {t.max() - t.min():.0f} s)")
  elif verdict == "stable":
    text = f"no drift: {change:.0f} ms change over {t.max() - t.min():.0f} s"
  else:
    text = f"uncertain: {per_min:+.1f} ms per minute, confidence interval spans zero"
  return {"ms_per_min": round(per_min, 3),
          "ci_ms_per_min": [round(lo * 60, 3), round(hi * 60, 3)] if math.isfinite(lo) else None,
          "intercept_ms": round(float(icpt), 2), "verdict": verdict, "text": text}


def _streams_note(entry: dict) -> str:
  """What a person should know about the streams: a length mismatch, held frames."""
  st = entry.get("streams") or {}
  notes = []
  if st.get("short"):
    notes.append(f"{st['short']} ends {abs(st['mismatch_s']):.2f} s early; measured the "
                 f"{st['overlap_s']:.2f} s where both exist")
  if st.get("audio_starts_s"):
    notes.append(f"sound starts {st['audio_starts_s']:.2f} s after the first picture")
  if st.get("held_frames"):
    notes.append(f"{st['held_frames']} frame(s) missing in the source (held), "
                 f"{st.get('windows_skipped_held', 0)} lip window(s) skipped for them")
  return "".join(f"; {n}" for n in notes)


def describe(entry: dict) -> str:
  """One line per file for a person: global offset, drift and the EBU R37 verdict."""
  if "error" in entry:
    return f"{entry['name']}: error ({entry.get('kind')}): {entry['error']}"
  g, d = entry.get("global") or {}, entry.get("drift") or {}
  n = f"{g.get('measurable_segments', 0)} of {g.get('num_segments', 0)} segments measurable"
  if g.get("offset_ms") is None:
    return f"{entry['name']}: {refusal(entry)} ({n})"
  ms = g["offset_ms"]
  side = "audio late" if ms > 0 else ("audio early" if ms < 0 else "in sync")
  ebu = (entry.get("tolerances") or {}).get("EBU R37", {}).get("verdict", "unknown")
  audio = f"; audio: {entry['audio_note']}" if entry.get("audio_note") else ""
  unc = "" if g.get("uncertainty_ms") is None else f" +- {g['uncertainty_ms']:.1f}"
  unsure = f"; uncertain: {g['why']}" if g.get("reason") == "uncertain" else ""
  return (f"{entry['name']}: offset {ms:+.1f} ms{unc} ({side}), "
          f"{n}{unsure}; drift: {d.get('text', 'unknown')}; EBU R37 {ebu}{audio}"
          f"{_streams_note(entry)}")


# ------------------------------------------------------------------------------------------
# The plain answer (``detect`` without ``--qc``): the whole-file summary of the same analysis.
# ------------------------------------------------------------------------------------------

# Why a file has no whole-file answer -> the FeatureError kind plain ``detect`` reports.
_REFUSALS = {"no face": "no_face", "no speech": "no_speech", "no audio": "no_audio",
             "conflicting evidence": "conflict"}


def refusal(result: dict) -> str:
  """Why ``analyze``'s result has no offset, in the words plain ``detect`` and ``--qc``
  both print."""
  g = result["global"]
  reason = g.get("reason") or "no face"
  if g.get("why"):
    return f"no measurable offset: {reason}: {g['why']}"
  return f"no measurable offset: {reason} in any {result['options']['window_s']:g} s stretch"



def plain_answer(result: dict, name: str | None = None) -> dict:
  """The whole-file answer of ``analyze``'s result, in frames and ms, with what the file
  was (streams, audio choice, crop); ``--qc``'s ``global`` is the same estimate. Raises
  ``FeatureError`` when the file has no measurable offset (no face, no speech, no audio)."""
  g = result["global"]
  if g.get("offset_ms") is None:
    raise FeatureError(result["path"], _REFUSALS.get(g.get("reason") or "no face", "no_face"),
                       refusal(result))
  keep = ("offset_frames", "offset_ms", "uncertainty_ms", "vote_frames", "confidence",
          "vote_fraction", "histogram", "mean_curve", "offsets", "track", "num_positions",
          "reason", "why")
  out = {k: g[k] for k in keep if k in g}
  out |= {"name": name or result["path"], "num_frames": int(round(result["duration_s"] * FPS)),
          "crop": result["crop"], "audio_source": result.get("audio_source", ""),
          "audio_note": result.get("audio_note", ""), "streams": result.get("streams"),
          "reliable": g.get("reason") is None}
  if "injected" in result:
    out["injected"] = result["injected"]
  return out


def detect_file(analyzer: Analyzer, path: str | pathlib.Path,
                audio_shift_frames: int = 0) -> dict:
  """Plain ``detect`` of one file: ``plain_answer(analyzer.analyze(path))``."""
  return plain_answer(analyzer.analyze(path, audio_shift_frames=audio_shift_frames), str(path))


def detect_shifted(analyzer: Analyzer, path: str | pathlib.Path,
                   shifts: Sequence[int], strict: bool = True) -> list[dict]:
  """``[detect_file(analyzer, path, k) for k in shifts]`` in one pass over the pictures;
  each answer gains ``injected``. A shift with no answer raises like ``detect_file``, or
  with ``strict=False`` gives ``{"injected": k, "error": FeatureError}`` in its place
  (errors of the file itself, such as an unreadable stream, still raise)."""
  out = []
  for r in analyzer.analyze_shifts(path, shifts, strict=strict):
    try:
      if "error" in r:
        raise r["error"]
      out.append(plain_answer(r, str(path)))
    except FeatureError as e:
      if strict:
        raise
      out.append({"injected": r.get("injected", 0), "error": e})
  return out


def describe_plain(r: dict) -> str:
  """One line for a person: the offset, its direction and the confidence."""
  k = r["offset_frames"]
  side = "audio late" if k > 0 else ("audio early" if k < 0 else "in sync")
  audio = f"; audio: {r['audio_note']}" if r.get("audio_note") else ""
  unsure = f"; uncertain: {r.get('why')}" if not r.get("reliable", True) else ""
  return (f"{r['name']}: offset {k:+d} frames ({r['offset_ms']:+.0f} ms, {side}), "
          f"confidence {r['confidence']:.3f}, {r['vote_fraction']:.0%} of frames agree"
          f"{unsure}{audio}{_streams_note(r)}")
