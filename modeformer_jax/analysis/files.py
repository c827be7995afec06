"""The file driver: ``Analyzer`` loads a model once and analyses files (``analyze``,
``analyze_shifts``), decoding in a thread a chunk ahead and summarising each file's evidence
(segments, the one offset, drift, tolerances, faces); ``detect_file`` is plain ``detect``."""
from __future__ import annotations

import base64
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
from modeformer_jax.analysis import estimate, evidence, tracking, words
from modeformer_jax.analysis.lane import Lane
from modeformer_jax.analysis.options import AnalysisOptions
from modeformer_jax.errors import FeatureError
from modeformer_jax.model import windows
from modeformer_jax.qc import tolerances

FPS = windows.FPS
MISMATCH_NOTE_S = 0.1            # stream ends further apart than this are reported


class Analyzer:
  """A loaded model and the analysis options; ``analyze(path)`` for each file."""

  def __init__(self, checkpoint: str | pathlib.Path | None = None,
               options: AnalysisOptions | None = None, layout: str = "auto", progress: bool = False,
               detector: Any | None = None):
    from modeformer_jax.analysis import detectors
    self.options = options or AnalysisOptions()
    self.options.check()
    self.progress = progress
    det = detector if detector is not None else detectors.load_detector(checkpoint, layout=layout)
    self.checkpoint, self.crop, self.embedder = det.checkpoint, det.crop, det.embedder
    self.lip_source()     # fails early if the crop is not supported
    # The model's calibration of segment confidence (bench.qc_calibration), if it has one.
    path = pathlib.Path(self.checkpoint) / estimate.RELIABILITY_FILE
    self.reliability = json.loads(path.read_text()) if path.is_file() else None

  def reliability_of(self, est: dict, speech_fraction: float) -> float | None:
    """The calibrated probability that an estimate is within one frame of the truth
    (a logistic function of ``RELIABILITY_FEATURES``); None for a model without one."""
    return estimate.reliability(self.reliability, est, speech_fraction)

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
    # The pictures are read one by one: a list per chunk, not a stacked copy (~1 CPU s a
    # minute of 720p).
    reader = media.Reader(path, stack=False)
    info = reader.info
    ev = evidence.Evidence(self, info, shifts, name=pathlib.Path(path).name)
    bar = None
    if progress:
      from tqdm import tqdm
      total = int(info.duration * FPS) if info.duration else None
      bar = tqdm(total=total, unit="frame", desc=pathlib.Path(path).name, leave=False)
    try:
      # Fewer frames per chunk for large pictures: ~128 MB a chunk at most (held about three
      # times: the one being decoded, the one waiting, the crop delay).
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
  def summarise(self, ev: evidence.Evidence, lane: Lane, path: str, reader: Any,
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
    result["global"] = estimate.file_offset(ev, lane, segs) | {
        "measurable_segments": len(good), "num_segments": len(segs),
        "segments_median_ms": (round(float(np.median([s["offset_ms"] for s in good])), 2)
                               if good else None)}
    result["drift"] = estimate.drift(good, o, video_s)
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


def _named(path: str, fn, *args) -> None:
  """Runs ``fn``; a ``FeatureError`` raised without a file name gets ``path``."""
  try:
    fn(*args)
  except FeatureError as e:
    if e.path:
      raise
    raise FeatureError(path, e.kind, e.reason) from e


def _png64(img: np.ndarray | None) -> str | None:
  if img is None:
    return None
  ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
  return base64.b64encode(buf.tobytes()).decode() if ok else None


def detect_file(analyzer: Analyzer, path: str | pathlib.Path,
                audio_shift_frames: int = 0) -> dict:
  """Plain ``detect`` of one file: ``words.plain_answer(analyzer.analyze(path))``."""
  return words.plain_answer(analyzer.analyze(path, audio_shift_frames=audio_shift_frames), str(path))


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
      out.append(words.plain_answer(r, str(path)))
    except FeatureError as e:
      if strict:
        raise
      out.append({"injected": r.get("injected", 0), "error": e})
  return out
