"""Long videos with known audio-video offsets, for testing per-segment sync analysis (QC).

  python -m data_prep.synthetic.long --out DIR [--minutes 1] [--size 1280x720]

writes the standard suite (each ``X.mp4`` with its ``X.truth.json`` beside it):

  offsets.mp4     2 min 20 s, 160x160: 20-s pieces at 0, +20, -60, +100, +40, -120 ms, a shot
                  cut to a second speaker at 70 s, 10 s of silence (40-50 s) and 10 s without
                  a face (90-100 s)
  drift.mp4       3 min, 160x160, one speaker, offset 0 at the start, +300 ppm drift
                  (the audio ends 54 ms late)
  composite.mp4   30 s, 320x160: two faces side by side, only the left one is heard (+80 ms)
  long_M.mp4      M minutes at --size for memory benchmarks: two rendered 30-s takes looped
                  with a new offset every 15 s, streamed to disk
  real_concat.mp4 the shared real clips of 3 s or more, letterboxed to 640x360, each with its
                  own injected offset (only when ``--real_clips`` exists)

Offsets
  A positive offset means the audio is LATE: the sound of the event at video time ``t`` is
  heard at ``t + offset(t)``. With drift ``ppm`` the audio runs slow by that factor,
  ``t_audio = t_video (1 + ppm 1e-6) + offset0``, so

    offset_ms(t) = piece.offset_ms + drift_ppm * 1e-3 * t        (t: video time in s)

  and positive ppm makes the audio progressively later (+300 ppm: +18 ms a minute). Offsets
  are applied in whole samples (``round(ms * 16)``, recorded as applied) without drift, and by
  windowed-sinc interpolation at the exact fractional positions with drift.

Pieces and takes
  A video is a sequence of pieces (an offset, a kind and a speaker each) on the video clock.
  Consecutive pieces of one speaker and scene share a take: one continuous rendering (one
  speech plan, one head-motion track), so within a take only the audio offset changes, by a
  splice at the piece's start on the playback clock; a sound within ``|change|`` of the splice
  is heard twice or not at all. A new speaker, scene or ``"cut": true`` starts a new take at a
  shot cut. Takes render a speech plan beyond both ends, so delayed audio is always real
  speech (of the take's own speaker, even just after a cut), never padding. Kinds:

    speech   the face talks, the audio is its speech (offset as above)
    silence  the speaker stops talking: the plan's syllables in the piece become a pause, so
             the mouth rests closed (head motion and blinks go on) and the audio is the
             scene's room noise only, 15-35 dB below the speech level
    noface   the frames show only the scene's background (gradient with soft blotches and a
             slow light drift), while the audio goes on speaking with the piece's offset

Seeds: a take's random draws come from ``[seed, speaker, 3, take, margin]``, a composite's
faces from ``[seed, speaker, 4, 0 (heard) or 1 (unheard), margin]`` (the 0-2 namespaces are
the dataset's, see ``seeds``).
"""
from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import math
import os
import pathlib
import sys
import time
from typing import Callable, Sequence

import av
import cv2
import numpy as np
import tqdm

from data_prep.synthetic.clip import MIN_MARGIN_FRAMES, render_clip
from data_prep.synthetic.constants import (
  FPS,
  FRAME_SIZE,
  SAMPLE_RATE,
  SAMPLES_PER_FRAME,
)
from data_prep.synthetic.encode import (
  RGB_TO_YUV,
  YUV_OFFSET,
  x264_params,
  yuv_frame,
)
from data_prep.synthetic.mouth import frame_tracks
from data_prep.synthetic.plan import plan_speech
from data_prep.synthetic.render import render_video
from data_prep.synthetic.seeds import smooth_noise
from data_prep.synthetic.speakers import (
  SceneParams,
  SpeakerParams,
  make_scene,
  make_speaker,
)
from data_prep.synthetic.speech import synthesize_audio
from modeformer_jax import cli

TRUTH_FORMAT = "modeformer-long-truth-v1"
KINDS = ("speech", "silence", "noface")
SIGN = ("positive offset_ms: audio late (the sound of video time t is heard at t + offset); "
        "offset_ms(t) = piece offset_ms + drift_ppm * 1e-3 * t, t = video time in s")
SAMPLES_PER_MS = SAMPLE_RATE // 1000          # 16
CHUNK_FRAMES = 25                             # frames per streamed write (1 s)
SUITE_OFFSETS_MS = (0.0, 20.0, -60.0, 100.0, 40.0, -120.0)
_TAKE_NS, _COMPOSITE_NS = 3, 4                # seed namespaces (0-2 belong to the dataset)

_REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_REAL_CLIPS = _REPO.parent / "shared" / "data" / "real_clips"


# ----------------------------------------------------------------------------------------
# Streaming mp4 writer.
# ----------------------------------------------------------------------------------------

_AFFINE = np.concatenate([RGB_TO_YUV, YUV_OFFSET[:, None]], 1)


def _half(plane: np.ndarray) -> np.ndarray:
  """2x2 mean with ``encode.rgb_to_i420``'s rounding, ``(a + b + c + d + 2) // 4``."""
  s = plane.astype(np.uint16)
  s = s[0::2] + s[1::2]
  s = s[:, 0::2] + s[:, 1::2]
  s += 2
  s >>= 2
  return s.astype(np.uint8)


def i420_planes(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``encode.rgb_to_i420`` for one RGB frame ``[H, W, 3]``, bit for bit.

  Frame by frame on split planes it runs about 8x faster at 1280x720 than the batched
  original (whose strided uint16 passes over a whole chunk miss the cache), which matters
  for hour-long videos.
  """
  y, u, v = cv2.split(cv2.transform(np.ascontiguousarray(frame), _AFFINE))
  return y, _half(u), _half(v)


class Mp4StreamWriter:
  """``write_mp4``'s h264 (yuv420p) + AAC (16 kHz mono) mp4, written chunk by chunk.

  Same codec settings and colour conversion as ``encode.write_mp4``; memory stays at one
  chunk whatever the length. The file appears (atomically renamed from ``.part``) on a
  clean ``close``; an exception inside ``with`` removes the partial file.
  """

  def __init__(self, path: str | os.PathLike, width: int, height: int, crf: int = 20,
               threads: int = 1):
    if width % 2 or height % 2:
      raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
    self.path = pathlib.Path(path)
    self.width, self.height = int(width), int(height)
    self.frames_written = 0
    self.samples_written = 0
    self._pending = np.zeros(0, np.float32)      # audio not yet a whole 1024-sample frame
    self._tmp = self.path.with_name(self.path.name + ".part")
    self._container = av.open(str(self._tmp), "w", format="mp4")
    self._vs = self._container.add_stream("libx264", rate=FPS)
    self._vs.width, self._vs.height = self.width, self.height
    self._vs.pix_fmt = "yuv420p"
    options = {"crf": str(int(crf)), "preset": "veryfast"}
    if x264_params():
      options["x264-params"] = x264_params()
    self._vs.options = options
    # One thread (write_mp4's setting) keeps the bytes reproducible; more is faster at 720p.
    self._vs.codec_context.thread_count = int(threads)
    self._as = self._container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
    self._as.bit_rate = 64000
    self._tb = fractions.Fraction(1, SAMPLE_RATE)

  def write(self, frames: np.ndarray, audio: np.ndarray | None = None) -> None:
    """Appends uint8 RGB ``[t, H, W, 3]`` frames and float32 mono audio (any length)."""
    if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) \
        or frames.dtype != np.uint8:
      raise ValueError(f"{self.path}: frames must be uint8 [t, {self.height}, {self.width}, 3]"
                       f", got {frames.dtype} {frames.shape}")
    if len(frames):
      for frame in frames:
        vf = yuv_frame(i420_planes(frame))
        vf.pts = self.frames_written
        self._container.mux(self._vs.encode(vf))
        self.frames_written += 1
    if audio is not None and audio.size:
      self._pending = np.concatenate([self._pending, np.clip(audio, -1, 1).astype(np.float32)])
      whole = self._pending.size // 1024 * 1024
      self._encode_audio(self._pending[:whole])
      self._pending = self._pending[whole:]

  def _encode_audio(self, audio: np.ndarray) -> None:
    for s in range(0, audio.size, 1024):
      af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[None, s:s + 1024]),
                                      format="flt", layout="mono")
      af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, self.samples_written, self._tb
      self._container.mux(self._as.encode(af))
      self.samples_written += af.samples

  def close(self) -> None:
    """Flushes both encoders and renames the file into place."""
    if self._container is None:
      return
    try:
      self._container.mux(self._vs.encode())
      if self._pending.size:
        self._encode_audio(self._pending)
        self._pending = np.zeros(0, np.float32)
      self._container.mux(self._as.encode())
    finally:
      self._container.close()
      self._container = None
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    """Closes without finishing the file and removes the partial output."""
    if self._container is not None:
      try:
        self._container.close()
      finally:
        self._container = None
    self._tmp.unlink(missing_ok=True)

  def __enter__(self) -> "Mp4StreamWriter":
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def fit_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
  """RGB frames ``[t, h, w, 3]`` scaled to fit ``width x height`` (aspect kept), black bars."""
  t, h, w, _ = frames.shape
  if (w, h) == (width, height):
    return frames
  scale = min(width / w, height / h)
  nw, nh = max(2, int(round(w * scale))), max(2, int(round(h * scale)))
  x0, y0 = (width - nw) // 2, (height - nh) // 2
  out = np.zeros((t, height, width, 3), np.uint8)
  interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
  for i in range(t):
    out[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(frames[i], (nw, nh), interpolation=interp)
  return out


def fit_box(src_w: int, src_h: int, width: int, height: int) -> list[int]:
  """Where ``fit_frames`` puts a ``src_w x src_h`` frame: ``[x0, y0, x1, y1]`` pixels."""
  scale = min(width / src_w, height / src_h)
  nw, nh = max(2, int(round(src_w * scale))), max(2, int(round(src_h * scale)))
  x0, y0 = (width - nw) // 2, (height - nh) // 2
  return [x0, y0, x0 + nw, y0 + nh]


# ----------------------------------------------------------------------------------------
# Audio reading at (fractional) positions.
# ----------------------------------------------------------------------------------------

_SINC_HALF = 32                 # taps each side of the windowed-sinc interpolator
_SINC_STEPS = 4096              # fractional positions tabulated (1/4096 sample: 0.015 us)


def _sinc_table() -> np.ndarray:
  """Kaiser-windowed sinc weights ``[_SINC_STEPS + 1, 2 * _SINC_HALF]`` per fractional part."""
  frac = np.arange(_SINC_STEPS + 1) / _SINC_STEPS
  taps = np.arange(-_SINC_HALF + 1, _SINC_HALF + 1)
  d = frac[:, None] - taps[None, :]                       # distance of each tap from the point
  win = np.i0(8.0 * np.sqrt(np.clip(1 - (d / _SINC_HALF) ** 2, 0, 1))) / np.i0(8.0)
  w = np.sinc(d) * win
  return (w / w.sum(1, keepdims=True)).astype(np.float32)   # unit DC gain at every phase


_TABLE: np.ndarray | None = None


def _read_at(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
  """``x`` at sample positions ``pos`` (float); whole positions are read exactly."""
  global _TABLE
  base = np.floor(pos).astype(np.int64)
  q = np.round((pos - base) * _SINC_STEPS).astype(np.int64)
  base += q // _SINC_STEPS                                  # a fraction rounding up to 1
  q %= _SINC_STEPS
  if not q.any():
    return x[base]
  if _TABLE is None:
    _TABLE = _sinc_table()
  taps = np.arange(-_SINC_HALF + 1, _SINC_HALF + 1)
  return np.einsum("nk,nk->n", x[base[:, None] + taps[None, :]], _TABLE[q]).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Takes: continuous renderings of one speaker in one scene.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Take:
  frames: np.ndarray            # uint8 [T, 160, 160, 3]
  audio: np.ndarray             # float32: in-sync audio from ``margin`` samples before frame 0
  margin: int                   # samples of audio before frame 0 (and after the last frame)
  speaker: int
  scene: int


def _background(scene: SceneParams, num_frames: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
  """A faceless backdrop: the scene's gradient with soft blotches (float32 ``[160, 160, 3]``)
  and a slow light drift (per-frame gain ``[num_frames]``)."""
  s = FRAME_SIZE
  yy = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
  img = np.asarray(scene.bg_top, np.float32) * (1 - yy) + np.asarray(scene.bg_bottom) * yy
  img = np.broadcast_to(img, (s, s, 3)).astype(np.float32)
  img = img + cv2.resize(rng.uniform(-25, 25, (4, 4, 3)).astype(np.float32), (s, s),
                         interpolation=cv2.INTER_CUBIC)
  gain = scene.gain * (1 + 0.06 * smooth_noise(rng, num_frames, 0.5, FPS))
  return img, gain


def _render_take(seed: int, speaker: int, scene_id: int, take: int, num_frames: int,
                 margin_frames: int, quiet: Sequence[tuple[int, int]] = (),
                 faceless: Sequence[tuple[int, int]] = ()) -> _Take:
  """One take; ``quiet`` / ``faceless`` are frame ranges of silence / of no face."""
  sp, scene = make_speaker(seed, speaker), make_scene(seed, speaker, scene_id)
  # As in clip.render_clip: plan, then separate audio and video streams.
  rng = np.random.default_rng(np.random.SeedSequence(
      [seed, speaker, _TAKE_NS, take, margin_frames]))
  t0 = -margin_frames / FPS
  segs = plan_speech(rng, t0, (num_frames + margin_frames) / FPS, sp.rate)
  for a, b in quiet:
    # Syllables touching the quiet stretch become pause: sound and mouth stop together.
    for s in segs:
      if s.end > a / FPS and s.start < b / FPS:
        s.kind, s.amp, s.open, s.round = "pause", 0.0, 0.0, 0.0
  open_f, round_f = frame_tracks(segs, t0, margin_frames, num_frames)
  audio_rng = np.random.default_rng(rng.integers(2 ** 63))
  video_rng = np.random.default_rng(rng.integers(2 ** 63))
  total = (num_frames + 2 * margin_frames) * SAMPLES_PER_FRAME
  audio = synthesize_audio(segs, sp, scene, audio_rng, t0, total)
  frames = render_video(sp, scene, open_f, round_f, video_rng)
  if faceless:
    bg, gain = _background(scene, num_frames, np.random.default_rng(video_rng.integers(2 ** 63)))
    for a, b in faceless:
      for i in range(a, b):     # frame by frame: a float copy of a whole take is gigabytes
        frames[i] = np.clip(bg * gain[i], 0, 255).astype(np.uint8)
  return _Take(frames, audio, margin_frames * SAMPLES_PER_FRAME, speaker, scene_id)


@dataclasses.dataclass
class _Piece:
  take: int
  take_frame: int               # the take's frame shown at the piece's first frame
  num_frames: int
  offset_samples: float         # base delay (samples), before drift


def _piece_audio(take: _Take, piece: _Piece, start_frame: int, ppm: float, lo: int, hi: int
                 ) -> np.ndarray:
  """Output samples ``lo .. hi-1`` of a piece starting at video frame ``start_frame``."""
  p0 = start_frame * SAMPLES_PER_FRAME
  n = np.arange(p0 + lo, p0 + hi, dtype=np.float64)
  # The sound of video sample s plays at n = s (1 + r) + d0; invert for s.
  s = (n - piece.offset_samples) / (1 + ppm * 1e-6)
  pos = take.margin + piece.take_frame * SAMPLES_PER_FRAME + (s - p0)
  if pos.min() < _SINC_HALF or pos.max() >= take.audio.size - _SINC_HALF:
    raise ValueError("audio shift beyond the take's margin")   # a bug in the margin sum
  return _read_at(take.audio, pos)


def _write_pieces(path: pathlib.Path, take_of: Callable[[int], _Take], pieces: list[_Piece],
                  ppm: float, size: tuple[int, int], crf: int, threads: int, progress: bool,
                  desc: str) -> None:
  """Streams the pieces (in order) to ``path``; ``take_of(i)`` gives take ``i``."""
  total = sum(p.num_frames for p in pieces)
  bar = tqdm.tqdm(total=total, desc=desc, unit="frame", disable=not progress)
  with Mp4StreamWriter(path, size[0], size[1], crf, threads) as writer:
    start = 0
    for piece in pieces:
      take = take_of(piece.take)
      for c0 in range(0, piece.num_frames, CHUNK_FRAMES):
        c1 = min(c0 + CHUNK_FRAMES, piece.num_frames)
        frames = take.frames[piece.take_frame + c0:piece.take_frame + c1]
        audio = _piece_audio(take, piece, start, ppm, c0 * SAMPLES_PER_FRAME,
                             c1 * SAMPLES_PER_FRAME)
        writer.write(fit_frames(frames, *size), audio)
        bar.update(c1 - c0)
      start += piece.num_frames
  bar.close()


def _face_box(sp: SpeakerParams, scene: SceneParams, box: Sequence[int]) -> list[int]:
  """Rough face box ``[x0, y0, x1, y1]`` (head motion aside) of a 160x160 tile shown at box."""
  sx, sy = (box[2] - box[0]) / FRAME_SIZE, (box[3] - box[1]) / FRAME_SIZE
  x0, x1 = 80 - sp.face_half_width + scene.dx, 80 + sp.face_half_width + scene.dx
  y0, y1 = sp.face_cy - sp.face_half_height + scene.dy, sp.face_cy + sp.face_half_height + \
      scene.dy
  return [int(round(box[0] + sx * max(x0, 0))), int(round(box[1] + sy * max(y0, 0))),
          int(round(box[0] + sx * min(x1, FRAME_SIZE))),
          int(round(box[1] + sy * min(y1, FRAME_SIZE)))]


def _margin_frames(max_shift_samples: float) -> int:
  """Plan margin covering a shift plus the interpolator's reach."""
  need = math.ceil((abs(max_shift_samples) + _SINC_HALF + 2) / SAMPLES_PER_FRAME)
  return max(MIN_MARGIN_FRAMES, need)


def _offset_samples(offset_ms: float) -> int:
  return int(round(float(offset_ms) * SAMPLES_PER_MS))


def _save_truth(path: pathlib.Path, truth: dict) -> pathlib.Path:
  out = path.with_name(path.stem + ".truth.json")
  tmp = out.with_name(out.name + ".part")
  tmp.write_text(json.dumps(truth, indent=1))
  os.replace(tmp, out)
  return out


def _truth_head(path: pathlib.Path, kind: str, num_frames: int, size: Sequence[int],
                ppm: float) -> dict:
  return {"format": TRUTH_FORMAT, "video": path.name, "material": kind, "fps": FPS,
          "sample_rate": SAMPLE_RATE, "width": int(size[0]), "height": int(size[1]),
          "frames": int(num_frames), "duration_s": num_frames / FPS,
          "sign": SIGN, "drift_ppm": float(ppm)}


def _piece_truth(index: int, start: int, n: int, kind: str, offset_samples: int, ppm: float,
                 **extra) -> dict:
  s0, s1 = start / FPS, (start + n) / FPS
  ms = offset_samples / SAMPLES_PER_MS
  return {"index": index, "start_s": s0, "end_s": s1, "start_frame": start,
          "end_frame": start + n, "kind": kind, "offset_ms": ms,
          "offset_samples": int(offset_samples),
          "offset_ms_start": ms + ppm * 1e-3 * s0, "offset_ms_end": ms + ppm * 1e-3 * s1,
          **extra}


# ----------------------------------------------------------------------------------------
# Public: long videos, composites, real-clip concatenations.
# ----------------------------------------------------------------------------------------

def make_long_video(out_path: str | os.PathLike, spec: dict, progress: bool = True) -> dict:
  """Renders a long synthetic video from ``spec`` and writes it with ``<name>.truth.json``.

  Args:
    out_path: the ``.mp4`` to write.
    spec: ``{"pieces": [...], "seed": 0, "drift_ppm": 0.0, "size": [160, 160], "crf": 20,
      "threads": 1}``; each piece ``{"seconds": 20, "speaker": 0, "offset_ms": 20.0,
      "kind": "speech" | "silence" | "noface", "scene": 0, "cut": false}`` (only
      ``seconds`` is required; ``speaker``, ``scene`` and ``offset_ms`` default to the
      previous piece's, the first piece's to 0). See the module docstring.
    progress: show a tqdm bar.

  Returns:
    The truth dict (also saved beside the mp4).
  """
  path = pathlib.Path(out_path)
  seed = int(spec.get("seed", 0))
  ppm = float(spec.get("drift_ppm", 0.0))
  size = tuple(int(v) for v in spec.get("size", (FRAME_SIZE, FRAME_SIZE)))
  raw = list(spec.get("pieces", ()))
  if not raw:
    raise ValueError("spec needs at least one piece")
  # Resolve defaults and group pieces into takes.
  resolved, groups = [], []                      # groups: [speaker, scene, [piece indices]]
  prev = {"speaker": 0, "scene": 0, "offset_ms": 0.0}
  start = 0
  for i, p in enumerate(raw):
    kind = p.get("kind", "speech")
    if kind not in KINDS:
      raise ValueError(f"piece {i}: kind must be one of {KINDS}, got {kind!r}")
    n = int(round(float(p["seconds"]) * FPS))
    if n < 1:
      raise ValueError(f"piece {i}: needs at least one frame, got {p['seconds']} s")
    speaker = int(p.get("speaker", prev["speaker"]))
    scene = int(p.get("scene", prev["scene"] if speaker == prev["speaker"] else 0))
    offset = _offset_samples(p.get("offset_ms", prev["offset_ms"]))
    new_take = (not groups or p.get("cut", False) or speaker != groups[-1][0]
                or scene != groups[-1][1])
    if new_take:
      groups.append([speaker, scene, []])
    groups[-1][2].append(i)
    resolved.append({"kind": kind, "frames": n, "speaker": speaker, "scene": scene,
                     "offset": offset, "start": start, "take": len(groups) - 1})
    prev = {"speaker": speaker, "scene": scene, "offset_ms": offset / SAMPLES_PER_MS}
    start += n
  total = start
  max_shift = max(abs(r["offset"]) for r in resolved) + abs(ppm) * 1e-6 * \
      total * SAMPLES_PER_FRAME + 1
  margin = _margin_frames(max_shift)

  take_args, pieces, take_truth = [], [], []
  for t, (speaker, scene, members) in enumerate(groups):
    t_start = resolved[members[0]]["start"]
    quiet, faceless = [], []
    for i in members:
      r = resolved[i]
      span = (r["start"] - t_start, r["start"] - t_start + r["frames"])
      if r["kind"] == "silence":
        quiet.append(span)
      elif r["kind"] == "noface":
        faceless.append(span)
    n = sum(resolved[i]["frames"] for i in members)
    take_args.append((seed, speaker, scene, t, n, margin, quiet, faceless))
    for i in members:
      r = resolved[i]
      pieces.append(_Piece(t, r["start"] - t_start, r["frames"], r["offset"]))
    sp, sc = make_speaker(seed, speaker), make_scene(seed, speaker, scene)
    tile = fit_box(FRAME_SIZE, FRAME_SIZE, *size)
    take_truth.append({"take": t, "speaker": speaker, "scene": scene,
                       "start_s": t_start / FPS, "end_s": (t_start + n) / FPS,
                       "face_box": _face_box(sp, sc, tile)})

  held: dict[int, _Take] = {}

  def take_of(t: int) -> _Take:
    # Pieces come take by take, so one rendered take in memory at a time is enough.
    if t not in held:
      held.clear()
      held[t] = _render_take(*take_args[t])
    return held[t]

  _write_pieces(path, take_of, pieces, ppm, size, int(spec.get("crf", 20)),
                int(spec.get("threads", 1)), progress, path.name)
  truth = _truth_head(path, "synthetic", total, size, ppm)
  truth["pieces"] = [
      _piece_truth(i, r["start"], r["frames"], r["kind"], r["offset"], ppm,
                   speaker=r["speaker"], scene=r["scene"], take=r["take"],
                   face=r["kind"] != "noface")
      for i, r in enumerate(resolved)]
  truth["cuts_s"] = [g["start_s"] for g in take_truth[1:]]
  # Frames where the face appears or disappears: hard picture changes that are no shot cut.
  truth["face_changes_s"] = [r["start"] / FPS for a, r in zip(resolved, resolved[1:])
                             if (a["kind"] == "noface") != (r["kind"] == "noface")
                             and a["take"] == r["take"]]
  truth["takes"] = take_truth
  truth["audio_edges"] = ("delayed audio is the take's own speech from beyond its ends; "
                          "offset changes inside a take are hard splices at the piece start")
  truth["spec"] = spec
  _save_truth(path, truth)
  return truth


def truth_offset_ms(truth: dict, t_s: float) -> tuple[float, str]:
  """The true offset (ms, + = audio late) and the piece's kind at video time ``t_s``.

  Pieces cover ``[start_s, end_s)``: a boundary time belongs to the piece that starts there;
  the video's end belongs to the last piece.
  """
  pieces = truth["pieces"]
  t = float(t_s)
  if not 0.0 <= t <= truth["duration_s"] + 1e-9:
    raise ValueError(f"t = {t} s is outside the video (0 .. {truth['duration_s']} s)")
  # Compare in frames (exact) rather than seconds, so 20.0 s is not read as 19.99999.
  frame = t * truth["fps"]
  chosen = pieces[-1]
  for p in pieces:
    if p["start_frame"] <= frame + 1e-6 and frame + 1e-6 < p["end_frame"]:
      chosen = p
      break
  return chosen["offset_ms"] + truth["drift_ppm"] * 1e-3 * t, chosen["kind"]


def make_composite(out_path: str | os.PathLike, speaker_a: int, speaker_b: int,
                   seconds: float, offset_ms: float, seed: int = 0, side: str = "left",
                   crf: int = 20) -> dict:
  """Two faces side by side (320x160); only ``speaker_a`` is heard, delayed by ``offset_ms``.

  ``speaker_b``'s mouth moves with its own speech, which is discarded, so it is out of sync
  with the audio throughout. ``side`` puts ``speaker_a`` left or right. Returns the truth
  dict (saved beside the mp4): ``speaker_side``, ``speaker_box`` and the other face's box.
  """
  if side not in ("left", "right"):
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")
  path = pathlib.Path(out_path)
  d = _offset_samples(offset_ms)
  sp_a, sp_b = make_speaker(seed, speaker_a), make_speaker(seed, speaker_b)
  sc_a, sc_b = make_scene(seed, speaker_a, 0), make_scene(seed, speaker_b, 1)
  fa, audio = render_clip(sp_a, seconds, [seed, speaker_a, _COMPOSITE_NS, 0], scene=sc_a,
                          audio_offset_samples=d)
  fb, _ = render_clip(sp_b, seconds, [seed, speaker_b, _COMPOSITE_NS, 1], scene=sc_b)
  left, right = (fa, fb) if side == "left" else (fb, fa)
  frames = np.concatenate([left, right], axis=2)
  with Mp4StreamWriter(path, 2 * FRAME_SIZE, FRAME_SIZE, crf) as w:
    for c in range(0, len(frames), CHUNK_FRAMES):
      w.write(frames[c:c + CHUNK_FRAMES],
              audio[c * SAMPLES_PER_FRAME:(c + CHUNK_FRAMES) * SAMPLES_PER_FRAME])
  box_a = [0, 0, FRAME_SIZE, FRAME_SIZE] if side == "left" else \
      [FRAME_SIZE, 0, 2 * FRAME_SIZE, FRAME_SIZE]
  box_b = [FRAME_SIZE - box_a[0], 0, 2 * FRAME_SIZE - box_a[0], FRAME_SIZE]
  truth = _truth_head(path, "composite", len(frames), (2 * FRAME_SIZE, FRAME_SIZE), 0.0)
  truth["pieces"] = [_piece_truth(0, 0, len(frames), "speech", d, 0.0, speaker=speaker_a,
                                  take=0, face=True)]
  truth["cuts_s"] = []
  truth["speaker_side"] = side
  truth["speaker"] = int(speaker_a)
  truth["speaker_box"] = box_a
  truth["speaker_face_box"] = _face_box(sp_a, sc_a, box_a)
  truth["other"] = {"side": "right" if side == "left" else "left", "speaker": int(speaker_b),
                    "box": box_b, "face_box": _face_box(sp_b, sc_b, box_b),
                    "kind": "talking, but its own speech is not in the audio"}
  truth["spec"] = {"speaker_a": int(speaker_a), "speaker_b": int(speaker_b),
                   "seconds": float(seconds), "offset_ms": float(offset_ms), "seed": int(seed),
                   "side": side}
  _save_truth(path, truth)
  return truth


def make_real_concat(out_path: str | os.PathLike, clip_paths: Sequence[str | os.PathLike],
                     offsets_ms: Sequence[float], size: tuple[int, int] = (640, 360),
                     edge: str = "silence", crf: int = 20, threads: int = 1,
                     progress: bool = True) -> dict:
  """Real clips one after another, letterboxed to ``size``, each with its own audio offset.

  Each clip is decoded with ``modeformer_jax.media.features.decode`` (25 fps, 16 kHz, one clock),
  its audio cut or zero-padded to its frames, then delayed by ``round(ms * 16)`` samples
  within the piece using only the piece's own audio; the samples shifted in at the edge are
  ``edge``: ``"silence"`` (zeros) or ``"hold"`` (the first / last sample repeated). The truth
  records those stretches (``fill_s``). The offsets are injected ones: the clips' own sync
  is not known exactly (the shared README: most within +-2 frames).
  """
  from modeformer_jax.media import decode  # the project's decoder; JAX-free import

  if edge not in ("silence", "hold"):
    raise ValueError(f"edge must be 'silence' or 'hold', got {edge!r}")
  if len(clip_paths) != len(offsets_ms) or not clip_paths:
    raise ValueError("need one offset per clip, and at least one clip")
  path = pathlib.Path(out_path)
  pieces, start = [], 0
  bar = tqdm.tqdm(desc=path.name, unit="frame", disable=not progress)
  with Mp4StreamWriter(path, size[0], size[1], crf, threads) as writer:
    for i, (clip, ms) in enumerate(zip(clip_paths, offsets_ms)):
      dec = decode(str(clip))
      n = len(dec.frames)
      num = n * SAMPLES_PER_FRAME
      audio = dec.audio[:num]
      if audio.size < num:
        audio = np.concatenate([audio, np.zeros(num - audio.size, np.float32)])
      k = _offset_samples(ms)
      mode = "constant" if edge == "silence" else "edge"
      padded = np.pad(audio, (max(k, 0), max(-k, 0)), mode=mode)
      shifted = padded[:num] if k >= 0 else padded[-k:-k + num]
      s0 = start / FPS
      fill = [[s0, s0 + min(k, num) / SAMPLE_RATE]] if k > 0 else \
          [[s0 + max(num + k, 0) / SAMPLE_RATE, s0 + num / SAMPLE_RATE]] if k < 0 else []
      for c in range(0, n, CHUNK_FRAMES):
        writer.write(fit_frames(dec.frames[c:c + CHUNK_FRAMES], *size),
                     shifted[c * SAMPLES_PER_FRAME:(c + CHUNK_FRAMES) * SAMPLES_PER_FRAME])
        bar.update(min(CHUNK_FRAMES, n - c))
      h, w = dec.frames.shape[1:3]
      pieces.append(_piece_truth(
          i, start, n, "speech", k, 0.0, take=i, face=True, source=str(clip),
          source_size=[int(w), int(h)], source_fps=round(dec.source_fps, 3),
          box=fit_box(w, h, *size), fill_s=fill,
          source_audio_missing_s=round(float(dec.audio_missing), 4)))
      start += n
  bar.close()
  truth = _truth_head(path, "real_concat", start, size, 0.0)
  truth["pieces"] = pieces
  truth["cuts_s"] = [p["start_s"] for p in pieces[1:]]
  truth["edge_fill"] = edge
  truth["native_sync"] = ("unknown: offsets are injected on top of each clip's own sync "
                          "(most real clips within +-2 frames)")
  truth["audio_edges"] = (f"each piece uses only its own audio: the first (offset > 0) or "
                          f"last (offset < 0) |offset| of a piece is {edge} (see fill_s)")
  _save_truth(path, truth)
  return truth


def make_benchmark_video(out_path: str | os.PathLike, minutes: float = 1.0,
                         size: tuple[int, int] = (1280, 720), seed: int = 0,
                         offsets_ms: Sequence[float] = SUITE_OFFSETS_MS + (12.5, -30.0, 60.0),
                         piece_seconds: float = 15.0, speakers: tuple[int, int] = (5, 6),
                         crf: int = 20, threads: int = 1, progress: bool = True) -> dict:
  """A long video for memory benchmarks, streamed to disk.

  Two 30-s takes (``speakers``) are rendered once at 160x160 and looped, each loop cut into
  ``piece_seconds`` pieces whose offsets cycle through ``offsets_ms``; frames are scaled up
  (pillarboxed) to ``size`` chunk by chunk, so memory does not grow with ``minutes``.
  """
  path = pathlib.Path(out_path)
  total = int(round(minutes * 60 * FPS))
  if total < 1:
    raise ValueError(f"minutes must give at least one frame, got {minutes}")
  take_frames = 30 * FPS
  piece_frames = int(round(piece_seconds * FPS))
  if not 0 < piece_frames <= take_frames:
    raise ValueError(f"piece_seconds must be in (0, 30], got {piece_seconds}")
  margin = _margin_frames(max(abs(_offset_samples(o)) for o in offsets_ms) + 1)
  takes = [_render_take(seed, spk, 0, t, take_frames, margin)
           for t, spk in enumerate(speakers)]
  pieces, resolved = [], []
  start, j = 0, 0
  while start < total:
    t = (start // take_frames) % len(takes)
    in_take = start % take_frames
    n = min(piece_frames, take_frames - in_take, total - start)
    k = _offset_samples(offsets_ms[j % len(offsets_ms)])
    pieces.append(_Piece(t, in_take, n, k))
    resolved.append((start, n, k, t))
    start += n
    j += 1
  _write_pieces(path, takes.__getitem__, pieces, 0.0, size, crf, threads, progress,
                path.name)
  tile = fit_box(FRAME_SIZE, FRAME_SIZE, *size)
  truth = _truth_head(path, "benchmark", total, size, 0.0)
  truth["pieces"] = [
      _piece_truth(i, s, n, "speech", k, 0.0, speaker=int(speakers[t]), scene=0, take=t,
                   face=True) for i, (s, n, k, t) in enumerate(resolved)]
  truth["cuts_s"] = [s / FPS for s in range(take_frames, total, take_frames)]
  truth["takes"] = [{"take": t, "speaker": int(spk), "scene": 0, "loop_s": 30.0,
                     "face_box": _face_box(make_speaker(seed, spk), make_scene(seed, spk, 0),
                                           tile)} for t, spk in enumerate(speakers)]
  truth["spec"] = {"minutes": float(minutes), "size": list(size), "seed": int(seed),
                   "offsets_ms": [float(o) for o in offsets_ms],
                   "piece_seconds": float(piece_seconds), "speakers": list(speakers)}
  _save_truth(path, truth)
  return truth


# ----------------------------------------------------------------------------------------
# The standard suite and the CLI.
# ----------------------------------------------------------------------------------------

def offsets_spec(seed: int = 0) -> dict:
  """The suite's ``offsets.mp4``: six 20-s speech pieces, a cut, silence and no-face."""
  o = SUITE_OFFSETS_MS
  return {"seed": seed, "drift_ppm": 0.0, "pieces": [
      {"seconds": 20, "speaker": 0, "offset_ms": o[0], "kind": "speech"},
      {"seconds": 20, "offset_ms": o[1], "kind": "speech"},
      {"seconds": 10, "offset_ms": o[1], "kind": "silence"},
      {"seconds": 20, "offset_ms": o[2], "kind": "speech"},
      {"seconds": 20, "speaker": 1, "offset_ms": o[3], "kind": "speech"},    # shot cut
      {"seconds": 10, "offset_ms": o[3], "kind": "noface"},
      {"seconds": 20, "offset_ms": o[4], "kind": "speech"},
      {"seconds": 20, "offset_ms": o[5], "kind": "speech"},
  ]}


def drift_spec(seed: int = 0, seconds: float = 180.0, ppm: float = 300.0) -> dict:
  """The suite's ``drift.mp4``: one speaker, offset 0 at the start, ``ppm`` drift."""
  return {"seed": seed, "drift_ppm": ppm,
          "pieces": [{"seconds": seconds, "speaker": 2, "offset_ms": 0.0, "kind": "speech"}]}


def _real_clip_list(root: pathlib.Path, min_seconds: float = 3.0) -> list[pathlib.Path]:
  """Clips of ``CLIPS.tsv`` (in its order) lasting at least ``min_seconds``."""
  rows = (root / "CLIPS.tsv").read_text().splitlines()
  head = rows[0].split("\t")
  out = []
  for line in rows[1:]:
    row = dict(zip(head, line.split("\t")))
    if row.get("file") and float(row.get("duration_s", 0)) >= min_seconds:
      out.append(root / row["file"])
  return out


def _parse_size(text: str) -> tuple[int, int]:
  w, h = (int(v) for v in text.lower().split("x"))
  if w % 2 or h % 2 or w < 2 or h < 2:
    raise argparse.ArgumentTypeError(f"need an even WIDTHxHEIGHT, got {text}")
  return w, h


def write_suite(out_dir: str | os.PathLike, minutes: float = 1.0,
                size: tuple[int, int] = (1280, 720), seed: int = 0,
                real_clips: str | os.PathLike | None = DEFAULT_REAL_CLIPS, threads: int = 1,
                progress: bool = True) -> dict:
  """Writes the standard suite (module docstring) to ``out_dir``; returns a summary dict."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  summary: dict = {"out": str(out), "files": {}}

  def timed(name: str, fn, *args, **kw) -> None:
    t0 = time.perf_counter()
    truth = fn(*args, **kw)
    summary["files"][name] = {"duration_s": truth["duration_s"],
                              "size": f"{truth['width']}x{truth['height']}",
                              "pieces": len(truth["pieces"]),
                              "seconds_to_make": round(time.perf_counter() - t0, 1),
                              "bytes": (out / name).stat().st_size}

  timed("offsets.mp4", make_long_video, out / "offsets.mp4", offsets_spec(seed), progress)
  timed("drift.mp4", make_long_video, out / "drift.mp4", drift_spec(seed), progress)
  timed("composite.mp4", make_composite, out / "composite.mp4", 3, 4, 30.0, 80.0, seed)
  label = f"{minutes:g}"
  timed(f"long_{label}.mp4", make_benchmark_video, out / f"long_{label}.mp4", minutes, size,
        seed, threads=threads, progress=progress)
  root = pathlib.Path(real_clips) if real_clips else None
  if root is not None and (root / "CLIPS.tsv").is_file():
    clips = _real_clip_list(root)
    offsets = [SUITE_OFFSETS_MS[i % len(SUITE_OFFSETS_MS)] for i in range(len(clips))]
    timed("real_concat.mp4", make_real_concat, out / "real_concat.mp4", clips, offsets,
          threads=threads, progress=progress)
  else:
    summary["skipped"] = f"real_concat.mp4: no CLIPS.tsv under {root}"
  return summary


def main(argv: list[str] | None = None) -> dict:
  """CLI entry point (see the module docstring)."""
  p = cli.parser(__name__, "Write long test videos with known audio-video offsets (mp4 + "
                 ".truth.json).")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--minutes", type=float, default=1.0, help="length of long_M.mp4")
  p.add_argument("--size", type=_parse_size, default="1280x720",
                 help="WIDTHxHEIGHT of long_M.mp4")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--real_clips", default=str(DEFAULT_REAL_CLIPS),
                 help="shared real clips folder (with CLIPS.tsv); '' skips real_concat.mp4")
  p.add_argument("--threads", type=int, default=1,
                 help="x264 threads for the large videos (1: reproducible bytes)")
  a = p.parse_args(argv)
  t0 = time.perf_counter()
  summary = write_suite(a.out, a.minutes, a.size, a.seed, a.real_clips or None, a.threads)
  summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
  print(json.dumps(summary, indent=1), file=sys.stdout)
  return summary


if __name__ == "__main__":
  main()
