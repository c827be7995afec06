"""The streaming evidence of one analysis: offset over time at sub-frame precision, several faces.

``Evidence`` takes a source chunk by chunk (``files.Analyzer`` for a file, ``monitor`` for a
live stream), follows every face (``tracking``), embeds each track's 5-frame lip windows and the audio window at **every mel
frame** (12.5 ms apart; with ``AnalysisOptions.audio_every`` n > 1 the audio model runs on every
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

Per file (``estimate.file_offset``, ``files``): the global offset, which is also plain ``detect``'s answer: the
whole frame most measurable segments read (within one frame; without such a majority the
evidence conflicts and there is no offset), in ms from their blocks pooled, with a
jackknife standard error; the drift (Theil-Sen slope of offset against time, in ms per
minute, with its confidence interval from non-overlapping segments) and a verdict against
each broadcast tolerance (``tolerances``). Positive offsets mean the audio is late.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import time
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from modeformer_jax import media
from modeformer_jax.analysis import estimate, sound, tracking
from modeformer_jax.analysis.lane import Lane
from modeformer_jax.evaluation import embedding
from modeformer_jax.media import features
from modeformer_jax.model import windows

if TYPE_CHECKING:   # annotations only: files imports this module
  from modeformer_jax.analysis import files

FPS = windows.FPS


@dataclasses.dataclass
class _Job:
  """Embeddings the towers are computing (``Evidence._collect`` files them): lip windows
  (``owners``: their track and position) or a lane's audio windows (mel frames ``start ..
  stop - 1``, computed at ``todo``)."""
  push: int                              # the push that started it
  result: embedding.Pending
  owners: list[tuple[int, int]] | None = None
  lane: Lane | None = None
  start: int = 0
  stop: int = 0
  todo: np.ndarray | None = None


class Evidence:
  """The one analysis of a source, as it streams: per face track and per ``hop_s`` block,
  the similarity of every 5-frame lip window with the audio windows 0..+-15 frames away at
  every mel frame (see the module docstring). ``push`` chunks of ``media.Reader`` (or of a
  live reader), then ``finish``; ``files.Analyzer.summarise`` turns it into answers.

  ``shifts`` analyses several versions of the audio at once (each delayed by that many
  frames, ``Lane``); the pictures are decoded, tracked and embedded once.
  """

  def __init__(self, analyzer: "files.Analyzer", info: media.StreamInfo, shifts: Sequence[int] = (0,),
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
    self.lanes = [Lane(k, self.n_fine, 2 * self.maxk + 1, self.hop_frames) for k in shifts]
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
    self.in_flight: list[_Job] = []    # embeddings being computed, in the order started
    self.pushes = 0                    # chunks pushed so far
    self.cuts: list[int] = []
    self.num_frames = 0
    self.held_frames = 0
    self.windows_held = 0              # lip windows skipped for held frames
    self.finished = False
    # Seconds spent per stage (where the time goes; bench.decode_floor prints it), in the
    # caller's thread: "video model" and "audio model" only start the towers, which compute
    # in the background; "waiting for models" is what the caller still waits for them.
    self.stage_s: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def _timed(self, stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.stage_s[stage] += time.perf_counter() - t0

  # --- audio -------------------------------------------------------------------------------
  def _embed_audio(self, lane: Lane, final: bool, partial: bool = False) -> None:
    """Starts embedding the lane's audio windows that are complete (``_collect`` takes
    them)."""
    chunk = self.embedder.chunk
    n = self.options.audio_every
    started = [job.stop for job in self.in_flight if job.lane is lane]
    start = started[-1] if started else lane.a_base + lane.a_buf.shape[0]
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
      job = self.embedder.audio_async(np.ascontiguousarray(win, np.float32))
    self.in_flight.append(_Job(self.pushes, job, lane=lane, start=start, stop=stop, todo=todo))

  def _audio_done(self, lane: Lane, start: int, stop: int, todo: np.ndarray,
                  a: np.ndarray) -> None:
    """Audio embeddings of mel frames ``todo`` (started by ``_embed_audio``) into the lane."""
    a = unit(a)
    if self.options.audio_every > 1:
      a = self._between(lane, start, stop, todo, a)
    lane.a_buf = a if lane.a_buf.size == 0 else np.concatenate([lane.a_buf, a])

  def _between(self, lane: Lane, start: int, stop: int, todo: np.ndarray,
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
      out[mid] = unit((1 - w) * known[r - 1] + w * known[r])
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
    """Starts embedding the queued lip windows (``_collect`` takes them)."""
    # Whole embedder chunks only (as _embed_audio), the rest waits for the next call.
    n = sum(len(ow) for ow, _ in self.vid_queue)
    take = n if final or partial else n // self.embedder.chunk * self.embedder.chunk
    if take == 0:
      return
    owners = [x for ow, _ in self.vid_queue for x in ow]
    wins = np.concatenate([w for _, w in self.vid_queue])
    with self._timed("video model"):
      job = self.embedder.video_async(wins[:take])
    self.in_flight.append(_Job(self.pushes, job, owners=owners[:take]))
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

  def _collect(self, wait_before: int | None = None) -> None:
    """Files the embeddings ``_embed_video`` and ``_embed_audio`` started (lip windows to
    score, the lanes' audio embeddings), in the order they were started: all of them, or
    with ``wait_before`` those of earlier pushes and then those that are ready."""
    with self._timed("waiting for models"):
      while self.in_flight:
        job = self.in_flight[0]
        if wait_before is not None and job.push >= wait_before and not job.result.ready():
          break
        del self.in_flight[0]
        if job.owners is not None:
          v = unit(job.result.result())
          self.pending.extend((tid, p, v[i]) for i, (tid, p) in enumerate(job.owners))
        else:
          self._audio_done(job.lane, job.start, job.stop, job.todo, job.result.result())

  def _settle(self, wait_before: int | None = None) -> None:
    """Files the embeddings started (``_collect``), scores the windows they complete and
    forgets what no window needs any more: what the end of a push did before the towers ran
    in the background. A window is scored once all its audio is embedded, with the same
    numbers whenever that is, and each (track, block) sum adds its windows in the same
    order; so filing some embeddings a push later changes no result."""
    self._collect(wait_before)
    with self._timed("scoring"):
      self._score(final=False)
    self._forget_audio()

  def _waiting(self) -> list[int]:
    """Positions of the lip windows not scored yet: embedded, being embedded or queued."""
    return ([p for _, p, _ in self.pending]
            + [p for job in self.in_flight if job.owners is not None for _, p in job.owners]
            + [p for ow, _ in self.vid_queue for _, p in ow])

  # --- the stream ----------------------------------------------------------------------------
  def push(self, ch: media.Chunk, landmarks_every: int | None = None) -> None:
    """Adds one chunk of frames and audio; analyses what became complete.
    ``landmarks_every``: face landmarks on every n-th frame of this chunk (default the
    options' ``detect_every``; a live monitor that falls behind runs them more sparsely)."""
    o = self.options
    every = o.detect_every if landmarks_every is None else int(landmarks_every)
    self.pushes += 1
    # The towers may still be embedding the last pushes' windows (``_collect``): the work
    # below runs beside them, and ``_settle`` scores them after it. A lane's first sound
    # must wait for that scoring: it fixes where the lane's real sound starts
    # (``Lane.start``), which the scoring reads.
    if ch.audio.size and any(lane.raw == 0 for lane in self.lanes):
      self._settle()
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
    # The last push's embeddings only if ready: the towers go on computing them while the
    # next chunk's landmarks run (two pushes in flight at most).
    self._settle(wait_before=self.pushes - 1)
    # Started, not waited for: the next push's landmarks run while the towers compute.
    if self.lips.lookahead is not None:
      self._cut_lips(max(self.cropped, self.num_frames - self.lips.lookahead))
    for lane in self.lanes:
      self._embed_audio(lane, final=False)

  def _forget_audio(self) -> None:
    """Forgets audio embeddings and mel that no pending or future window needs."""
    oldest = min(self._waiting() + [max(0, self.cropped - windows.WINDOW_FRAMES)])
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
      self._settle()       # the last push's windows, scored before the end is known
      for lane in self.lanes:
        # Real sound ends where the source's samples end, moved by the lane's shift.
        lane.end = lane.raw + lane.delay
      for tr in self.lips.tracks:
        tr.ended = True
      self._cut_lips(self.num_frames, final=True)
      for lane in self.lanes:
        lane.hear_end(self.num_frames)
        self._embed_audio(lane, final=True)
      self._collect()
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
    self._settle()
    self._embed_video(final=False, partial=True)
    for lane in self.lanes:
      self._embed_audio(lane, final=False, partial=True)
    self._settle()

  def scored_until(self) -> int:
    """Lip windows starting before this frame are scored (or skipped): blocks before
    ``scored_until() // hop_frames`` are complete, later pushes add nothing to them."""
    return max(0, min(self._waiting() + [self.cropped - windows.WINDOW_FRAMES + 1]))

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
  def speech_threshold(self, lane: Lane) -> float:
    """``lane.speech_threshold`` under this analysis's options."""
    return lane.speech_threshold(self.options)

  def overlap_s(self, lane: Lane) -> float:
    """Seconds of video that have real sound (after ``finish``)."""
    video = self.num_frames * 640
    end = min(video, lane.end if lane.end is not None else video)
    return max(0, end - lane.start) / windows.SAMPLE_RATE

  def segment(self, lane: Lane, first_block: int, num_blocks: int, thr: float) -> dict:
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
      est = estimate.estimate_segment(parts, self.whole_idx, self.max_s, o.fit_ms)
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
    # What the sound is, decided here for files and live streams alike (``sound``).
    seg["sound"] = lane.character(bl, o)
    reason = sound.reason_with_character(reason, seg["sound"]["character"])
    seg["measurable"] = reason is None
    seg["reason"] = reason
    seg["blocks"] = [first_block, bl.stop]
    return seg


def unit(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
