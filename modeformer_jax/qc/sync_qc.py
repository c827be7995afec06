"""Sync QC of long videos: offset over time at sub-frame precision, drift, several faces.

``Analyzer(checkpoint).analyze(path)`` streams a file once (``stream``), follows every face
(``tracking``), embeds each track's 5-frame lip windows and the audio window at **every mel
frame** (12.5 ms apart), and keeps, per face track and per ``hop_s`` block of video, the
summed similarity of each video window with the audio windows 0..+-15 frames away. Memory
holds a few seconds of frames and embeddings and one small summary per block, so it does
not grow with the file's length.

Per segment (``window_s`` long, every ``hop_s``):

* **Speaking face**: the track with the highest confidence among those present in at least
  ``min_face`` of the segment's positions. Confidence = the mean similarity at the chosen
  offset minus the median over all offsets (as ``protocol.detect_offset``).
* **Whole frames**: the most frequent best offset of the segment's positions (the standard
  protocol's per-frame vote, ``vote_frames``) says where to look; the reported
  ``offset_frames`` is the whole frame nearest the sub-frame estimate below.
* **Sub-frame**: the audio window of video frame ``t`` starts at mel frame ``round(3.2 t)``,
  so audio windows ``s`` mel frames later sit ``12.5 s + 12.5 (round(3.2 t) - 3.2 t)`` ms
  away: the five phases of ``t mod 5`` sample the similarity curve on a 2.5 ms grid. A
  parabola is fitted to the grid points within ``fit_ms`` of the maximum (searched within
  one frame of the whole-frame answer); its vertex is the offset in ms. The uncertainty is
  the jackknife standard error over the segment's blocks.
* **Unmeasurable**, never guessed: less than ``min_speech`` of the segment's audio is
  speech (an energy voice-activity decision) or no face is tracked in ``min_face`` of it.

Per file: the global offset (median of the measurable segments, with a standard error
from independent segments), the drift (Theil-Sen slope of offset against time, in ms per
minute, with its confidence interval from non-overlapping segments) and a verdict against
each broadcast tolerance (``tolerances``). Positive offsets mean the audio is late.
"""
from __future__ import annotations

import base64
import dataclasses
import math
import pathlib
import resource
import time
from typing import Any

import cv2
import numpy as np

from modeformer_jax import features, media, windows
from modeformer_jax.features import FeatureError
from modeformer_jax.qc import stream, tolerances, tracking

FPS = windows.FPS
MEL_MS = 1000.0 / 80              # one mel hop: 12.5 ms
FRAME_MS = windows.FRAME_MS
_PHASE_MS = np.array([12.5 * (windows.mel_start(p) - 3.2 * p) for p in range(5)])


@dataclasses.dataclass
class QCOptions:
  """What the analysis measures and when a segment counts as measurable."""
  window_s: float = 5.0          # segment length
  hop_s: float = 1.0             # segment step (window_s must be a multiple of it)
  max_offset_frames: int = 15    # search range, +-frames
  min_speech: float = 0.2        # fraction of a segment's audio that must be speech
  min_face: float = 0.5          # fraction of a segment's windows with the chosen face
  vad_db: float = -45.0          # speech: 12.5 ms RMS above this (dBFS) ...
  vad_above_floor_db: float = 10.0   # ... and this far above the file's noise floor
  fit_ms: float = 20.0           # half-width of the parabola fit around the peak
  max_faces: int = 4             # faces tracked at once
  detect_every: int = 1          # run the face landmarker on every n-th frame
  face_frame: str = "lrs2"       # box models: where faces sit in the training frames
  drift_min_ms: float = 20.0     # change over the file below this is "stable"
  chunk_frames: int = 50         # frames decoded per step

  def check(self) -> None:
    k = self.window_s / self.hop_s
    if self.hop_s * FPS != int(self.hop_s * FPS) or abs(k - round(k)) > 1e-9 or k < 1:
      raise ValueError(f"window_s={self.window_s} must be a whole multiple of hop_s="
                       f"{self.hop_s}, and hop_s a whole number of frames")


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


class Analyzer:
  """A loaded model and the QC options; ``analyze(path)`` for each file."""

  def __init__(self, checkpoint: str | pathlib.Path | None = None,
               options: QCOptions | None = None, layout: str = "auto", progress: bool = False):
    from modeformer_jax import offsets
    self.options = options or QCOptions()
    self.options.check()
    self.progress = progress
    det = offsets.load_detector(checkpoint, layout=layout)
    self.checkpoint, self.crop, self.embedder = det.checkpoint, det.crop, det.embedder
    tracking.Tracker(self.crop, face_frame=self.options.face_frame)   # fails early if unsupported

  # ---------------------------------------------------------------------------------------
  def analyze(self, path: str | pathlib.Path, progress: bool | None = None) -> dict[str, Any]:
    """Measures one file (see the module docstring); raises ``FeatureError`` on bad input.

    ``progress`` (default: the analyzer's) shows a bar over the file's frames with an ETA.
    """
    o = self.options
    progress = self.progress if progress is None else progress
    path = str(path)
    t_start = time.perf_counter()
    reader = media.Reader(path)
    info = reader.info
    maxk = o.max_offset_frames
    max_s = windows.mel_start(maxk)              # mel frames of maxk video frames
    n_fine = 2 * max_s + 1
    whole_idx = np.array([[windows.mel_start(p + k) - windows.mel_start(p) + max_s
                           for k in range(-maxk, maxk + 1)] for p in range(5)])
    hop_f, win_blocks = int(round(o.hop_s * FPS)), int(round(o.window_s / o.hop_s))
    blocks = _Blocks(n_fine, 2 * maxk + 1)
    speech: dict[int, np.ndarray] = {}           # block -> histogram of 12.5 ms levels (dB)
    observer = tracking.FaceObserver(o.max_faces)
    shots = tracking.ShotDetector()
    tracker = tracking.Tracker(self.crop, face_frame=o.face_frame)
    mel_stream = stream.MelStream()
    mel_buf, mel_base = np.zeros((80, 0), np.float32), 0      # mel frames from mel_base
    a_buf, a_base = np.zeros((0, 0), np.float32), 0           # unit audio embeddings from a_base
    frame_buf: list[np.ndarray] = []
    buf_base = 0                                  # frame number of frame_buf[0]
    cropped = 0                                   # frames cut into lips so far
    tails: dict[int, tuple[int, np.ndarray]] = {}  # track -> (next frame, last 4 crops)
    pending: list[tuple[int, int, np.ndarray]] = []  # (track, position, unit video embedding)
    vid_queue: list[tuple[list, np.ndarray]] = []     # video windows waiting for a full chunk
    vad_tail = np.zeros(0, np.float32)
    vad_count = 0                                 # 200-sample hops measured so far
    rms_hist = np.zeros(120)                      # histogram of hop levels in dB, -120..0
    cuts: list[int] = []
    t_next = 0
    bar = None
    if progress:
      from tqdm import tqdm
      total = int(info.duration * FPS) if info.duration else None
      bar = tqdm(total=total, unit="frame", desc=pathlib.Path(path).name, leave=False)

    def embed_audio(final: bool) -> None:
      nonlocal a_buf, a_base, mel_buf, mel_base
      start = a_base + a_buf.shape[0]
      stop = mel_base + mel_buf.shape[1] - windows.MEL_WINDOW + 1
      if final:                                  # windows past the end read silence
        stop = mel_base + mel_buf.shape[1]
      if not final:   # whole embedder chunks only: a padded chunk costs a full one
        stop = start + (stop - start) // self.embedder.chunk * self.embedder.chunk
      if stop <= start:
        return
      mel = mel_buf
      if final:
        mel = np.pad(mel_buf, ((0, 0), (0, windows.MEL_WINDOW)),
                     constant_values=features.MEL_SILENCE)
      idx = np.arange(start, stop) - mel_base
      win = mel[:, idx[:, None] + np.arange(windows.MEL_WINDOW)].transpose(1, 0, 2)
      a = _unit(self.embedder.audio(np.ascontiguousarray(win, np.float32)))
      a_buf = a if a_buf.size == 0 else np.concatenate([a_buf, a])

    def score(final: bool) -> None:
      nonlocal pending
      have = a_base + a_buf.shape[0]
      keep = []
      for tr, p, v in pending:
        m0 = windows.mel_start(p)
        if not final and m0 + max_s >= have:
          keep.append((tr, p, v))
          continue
        lo, hi = m0 - max_s, m0 + max_s + 1
        curve = np.full(n_fine, np.nan)
        a, b = max(lo, a_base), min(hi, have)
        if a < b:
          curve[a - lo:b - lo] = a_buf[a - a_base:b - a_base] @ v
        whole = curve[whole_idx[p % 5]]
        best = int(np.nanargmax(whole)) if np.isfinite(whole).any() else None
        blocks.add(tr, p // hop_f, p % 5, curve, best)
      pending = keep

    def embed_video(final: bool) -> None:
      # Whole embedder chunks only (as embed_audio), the rest waits for the next call.
      n = sum(len(ow) for ow, _ in vid_queue)
      take = n if final else n // self.embedder.chunk * self.embedder.chunk
      if take == 0:
        return
      owners = [x for ow, _ in vid_queue for x in ow]
      wins = np.concatenate([w for _, w in vid_queue])
      v = _unit(self.embedder.video(wins[:take]))
      pending.extend((tid, p, v[i]) for i, (tid, p) in enumerate(owners[:take]))
      vid_queue.clear()
      if take < n:
        vid_queue.append((owners[take:], wins[take:]))

    def cut_lips(upto: int, final: bool = False) -> None:
      nonlocal cropped, frame_buf, buf_base
      if upto <= cropped:
        embed_video(final)
        return
      got = tracker.crops_for(cropped, upto, frame_buf[cropped - buf_base:upto - buf_base])
      vids, owners = [], []
      for tid, (idx, cr) in got.items():
        nxt, tail = tails.get(tid, (-1, np.zeros((0, *cr.shape[1:]), np.uint8)))
        if nxt != idx[0]:                          # a new track (or a gap): no tail
          tail = tail[:0]
        seq = np.concatenate([tail, cr])
        first = idx[0] - tail.shape[0]
        n = seq.shape[0] - windows.WINDOW_FRAMES + 1
        if n > 0:
          vids.append(windows.video_windows(seq))
          owners += [(tid, first + i) for i in range(n)]
        tails[tid] = (idx[-1] + 1, seq[-(windows.WINDOW_FRAMES - 1):])
      if vids:
        vid_queue.append((owners, np.concatenate(vids)))
      embed_video(final)
      cropped = upto
      drop = cropped - buf_base
      del frame_buf[:drop]
      buf_base += drop
      tracker.prune(cropped)

    def vad(x: np.ndarray) -> None:
      nonlocal vad_tail, vad_count
      x = np.concatenate([vad_tail, x])
      n = x.size // 200
      if n:
        e = x[:n * 200].reshape(n, 200)
        db = 10 * np.log10(np.mean(e * e, axis=1) + 1e-12)
        bins = np.clip((-db).astype(int), 0, 119)
        blk = ((vad_count + np.arange(n)) * 200 // (640 * hop_f)).astype(int)
        for b in np.unique(blk):
          h = speech.setdefault(int(b), np.zeros(120, np.int32))
          np.add.at(h, bins[blk == b], 1)
        np.add.at(rms_hist, bins, 1)
        vad_count += n
      vad_tail = x[n * 200:]

    try:
      # Fewer frames per chunk for large pictures: a chunk is held about three times
      # (decoder output, the stacked chunk, the crop delay), ~128 MB a copy at most.
      chunk = max(10, min(o.chunk_frames, int(128e6 // (3 * info.width * info.height))))
      reader.chunk_frames = chunk
      for ch in reader.chunks():
        vad(ch.audio)
        m = mel_stream.push(ch.audio)
        mel_buf = np.concatenate([mel_buf, m], axis=1)
        for i, frame in enumerate(ch.frames):
          t = ch.start + i
          cut = shots.is_cut(frame)
          if cut:
            cuts.append(t)
            observer.reset()
          faces = observer.observe(frame) if t % o.detect_every == 0 or cut else []
          tracker.update(t, faces, cut)
          frame_buf.append(frame)
        t_next = ch.start + len(ch.frames)
        cut_lips(max(cropped, t_next - tracker.lookahead))
        embed_audio(final=False)
        score(final=False)
        # Forget audio embeddings and mel no pending or future window needs.
        oldest = min([p for _, p, _ in pending] + [p for ow, _ in vid_queue for _, p in ow]
                     + [max(0, cropped - windows.WINDOW_FRAMES)])
        need = windows.mel_start(oldest) - max_s
        if need > a_base:
          drop = min(need - a_base, a_buf.shape[0])
          a_buf, a_base = a_buf[drop:], a_base + drop
        keep_mel = a_base + a_buf.shape[0]
        if keep_mel > mel_base:
          mel_buf, mel_base = mel_buf[:, keep_mel - mel_base:], keep_mel
        if bar is not None:
          bar.update(len(ch.frames))
      if t_next < features.MIN_FRAMES:
        raise FeatureError(path, "too_short", f"{t_next} frames at {FPS} fps, need at least "
                           f"{features.MIN_FRAMES}")
      for tr in tracker.tracks:
        tr.ended = True
      cut_lips(t_next, final=True)
      m = mel_stream.finish(t_next)
      mel_buf = np.concatenate([mel_buf, m], axis=1)
      embed_audio(final=True)
      score(final=True)
    finally:
      observer.close()
      if bar is not None:
        bar.close()
    seen = tracker.summaries()
    thumbs = {k: v["thumbnail"] for k, v in seen.items()}
    mouths = {k: v["mouth"] for k, v in seen.items()}
    result = self._summarise(path, info, t_next, blocks, speech, rms_hist, cuts, whole_idx,
                             max_s, hop_f, win_blocks, thumbs, mouths)
    result["audio_source"] = reader.audio.describe()
    result["audio_note"] = reader.audio.note
    wall = time.perf_counter() - t_start
    result["timing"] = {"wall_s": round(wall, 2),
                        "realtime_factor": round(t_next / FPS / wall, 2) if wall else None,
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                             / 1024, 1)}
    return result

  # ---------------------------------------------------------------------------------------
  def _summarise(self, path, info, num_frames, blocks, speech, rms_hist, cuts, whole_idx,
                 max_s, hop_f, win_blocks, thumbs, mouths) -> dict[str, Any]:
    o = self.options
    # Speech threshold: absolute, and above the file's noise floor (10th percentile level).
    cum = np.cumsum(rms_hist[::-1])          # from the quietest bin up
    floor = -float(119 - np.searchsorted(cum, 0.1 * cum[-1])) if cum[-1] else -120.0
    thr = max(o.vad_db, floor + o.vad_above_floor_db)
    n_blocks = max(1, math.ceil((num_frames - windows.WINDOW_FRAMES + 1) / hop_f))
    n_segments = max(1, n_blocks - win_blocks + 1)
    tracks = sorted({tr for tr, _ in blocks.data})
    segs = []
    for j in range(n_segments):
      bl = range(j, min(j + win_blocks, n_blocks))
      # Bin i holds levels in (-i - 1, -i] dB: speech where -i > thr.
      hist = sum((speech[b] for b in bl if b in speech), np.zeros(120, np.int64))
      speech_frac = float(hist[:max(0, math.ceil(-thr))].sum() / hist.sum()) if hist.sum() else 0.0
      n_pos = sum(min(hop_f, num_frames - windows.WINDOW_FRAMES + 1 - b * hop_f) for b in bl)
      best = None
      for tr in tracks:
        parts = [blocks.data.get((tr, b)) for b in bl]
        parts = [p for p in parts if p is not None]
        if not parts:
          continue
        face_frac = float(sum(p["n"][0] for p in parts) / max(1, n_pos))
        est = _estimate(parts, whole_idx, max_s, o.fit_ms)
        if est is None:
          continue
        est |= {"track": tr, "face_fraction": round(face_frac, 3)}
        if face_frac >= o.min_face and (best is None or est["confidence"] > best["confidence"]):
          best = est
      seg = {"start_s": j * hop_f / FPS, "end_s": (j * hop_f + win_blocks * hop_f) / FPS,
             "speech_fraction": round(speech_frac, 3)}
      reason = None
      if best is None:
        reason = "no face"
      elif speech_frac < o.min_speech:
        reason = "no speech"
      if best is not None:
        seg |= best
      else:
        seg |= {"offset_ms": None, "offset_frames": None, "uncertainty_ms": None,
                "confidence": None, "track": None, "face_fraction": 0.0}
      seg["measurable"] = reason is None
      seg["reason"] = reason
      # Only measurable segments carry an offset the verdicts may read.
      seg["verdicts"] = tolerances.verdicts(seg["offset_ms"] if reason is None else None)
      segs.append(seg)
    good = [s for s in segs if s["measurable"]]
    result: dict[str, Any] = {
        "name": pathlib.Path(path).name, "path": str(pathlib.Path(path).absolute()),
        "duration_s": round(num_frames / FPS, 3), "source_fps": round(info.source_fps, 3),
        "resolution": [info.width, info.height], "model": self.checkpoint,

        "crop": self.crop.to_dict(), "options": dataclasses.asdict(o),
        "speech_threshold_db": round(thr, 1), "shots": [c / FPS for c in cuts],
        "segments": segs}
    result["global"] = _global(good, len(segs), o)
    result["drift"] = _drift(good, o, num_frames / FPS)
    result["tolerances"] = tolerances.file_verdicts([s["offset_ms"] for s in good])
    result["tracks"] = []
    for tr in tracks:
      won = [s for s in good if s["track"] == tr]
      frames = [b for (t, b) in blocks.data if t == tr]
      n_windows = int(sum(d["n"][0] for (t, _), d in blocks.data.items() if t == tr))
      result["tracks"].append({
          "id": tr, "start_s": min(frames) * hop_f / FPS, "end_s": (max(frames) + 1) * hop_f / FPS,
          "segments_won": len(won), "num_frames": n_windows + windows.WINDOW_FRAMES - 1,
          "offset_ms": float(np.median([s["offset_ms"] for s in won])) if won else None,
          "confidence": float(np.mean([s["confidence"] for s in won])) if won else None,
          "mouth_xy": [round(v, 1) for v in mouths[tr]] if tr in mouths else None,
          "thumbnail": _png64(thumbs.get(tr))})
    return result


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


def _estimate(parts: list[dict], whole_idx: np.ndarray, max_s: int,
              fit_ms: float) -> dict | None:
  """A segment's offset from its blocks' sums (whole frames, ms, jackknife uncertainty)."""
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
  peaks = np.flatnonzero(hist == hist.max())
  offs = np.arange(-maxk, maxk + 1)
  pick = peaks[np.lexsort((np.abs(offs[peaks]), -key[peaks]))[0]]
  k = int(offs[pick])
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
  return {"offset_frames": int(round(est / FRAME_MS)), "vote_frames": k,
          "offset_ms": round(est, 2),
          "uncertainty_ms": None if unc is None else round(unc, 2),
          "confidence": round(conf, 4), "vote_fraction": round(float(hist[pick] / hist.sum()), 3)}


def _global(good: list[dict], n_segments: int, o: QCOptions) -> dict:
  out = {"measurable_segments": len(good), "num_segments": n_segments}
  if not good:
    return out | {"offset_ms": None, "uncertainty_ms": None, "offset_frames": None,
                  "confidence": None, "track": None}
  ms = np.array([s["offset_ms"] for s in good])
  med = float(np.median(ms))
  # Segments overlap by window/hop: only that many-th are independent.
  n_ind = max(1.0, len(good) * o.hop_s / o.window_s)
  mad = 1.4826 * float(np.median(np.abs(ms - med)))
  spread = mad if mad > 0 else float(np.std(ms))
  tracks = [s["track"] for s in good]
  return out | {"offset_ms": round(med, 2),
                "uncertainty_ms": round(1.2533 * spread / math.sqrt(n_ind), 2),
                "offset_frames": int(round(med / FRAME_MS)),
                "confidence": round(float(np.median([s["confidence"] for s in good])), 4),
                "track": max(set(tracks), key=tracks.count)}


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


def describe(entry: dict) -> str:
  """One line per file for a person: global offset, drift and the EBU R37 verdict."""
  if "error" in entry:
    return f"{entry['name']}: error ({entry.get('kind')}): {entry['error']}"
  g, d = entry.get("global") or {}, entry.get("drift") or {}
  n = f"{g.get('measurable_segments', 0)} of {g.get('num_segments', 0)} segments measurable"
  if g.get("offset_ms") is None:
    return f"{entry['name']}: no measurable segment ({n})"
  ms = g["offset_ms"]
  side = "audio late" if ms > 0 else ("audio early" if ms < 0 else "in sync")
  ebu = (entry.get("tolerances") or {}).get("EBU R37", {}).get("verdict", "unknown")
  audio = f"; audio: {entry['audio_note']}" if entry.get("audio_note") else ""
  return (f"{entry['name']}: offset {ms:+.1f} ms +- {g['uncertainty_ms']:.1f} ({side}), "
          f"{n}; drift: {d.get('text', 'unknown')}; EBU R37 {ebu}{audio}")
