"""Every face through a long video: detection, shot changes, tracks and their lip crops.

``features``/``crops`` cut one face out of a short clip. Sync QC of long material needs every
face, frame by frame, in bounded memory:

* ``FaceObserver``: MediaPipe FaceMesh (up to ``max_faces`` faces, tracking mode) on each
  frame; where it finds nobody, BlazeFace (short- then full-range): ``crops.FaceLandmarker``,
  the pipeline clips use too. Each face gives the geometry the landmark crop uses: mouth
  centre, inter-ocular distance (IOD), roll.
* ``ShotDetector``: a cut is a large change of a small grey thumbnail between consecutive
  frames, far above the changes just before it. A cut ends every track (the face tracker
  restarts too).
* ``Tracker``: links faces frame to frame (mouth within ``link_iod`` IODs of the track's
  last position); a track ends after ``max_gap`` frames without its face or at a cut.
  ``crops_for(lo, hi, frames)`` returns each track's lip crops for frames ``lo .. hi - 1``,
  filled over gaps and smoothed exactly as ``crops.landmark_track`` does for a clip, which
  needs ``LOOKAHEAD`` frames beyond ``hi`` to have been observed.

Crops follow the model's ``CropSpec``: ``landmarks`` is the training crop itself; a ``box``
crop (face-cropped datasets) is the box taken from a virtual face-crop frame placed on the
face: the frame where the mouth and IOD sit where they sit in the training data
(``FACE_FRAMES``, measured with FaceMesh). ``haar`` models are not supported here.
"""
from __future__ import annotations

import collections
import dataclasses

import cv2
import numpy as np

from modeformer_jax.errors import FeatureError, NoFaceError
from modeformer_jax.media import crops
from modeformer_jax.model.input_spec import CropSpec, LIP_SIZE

# Mouth x, mouth y and IOD as fractions of a face-cropped frame's side, by FaceMesh
# (mean of 6 clips x 50 frames each): where a face sits in the frames a box model saw.
FACE_FRAMES = {
    "lrs2": (0.483, 0.540, 0.232),        # ../shared/data/real_clips/lrs2_crop (160x160)
    "vox2": (0.443, 0.519, 0.225),        # ../shared/data/real_clips/vox2_crop (224x224)
    "synthetic": (0.499, 0.582, 0.302),   # data_prep.synthetic (the demo's data)
}


@dataclasses.dataclass
class Face:
  """One face in one frame (full-resolution pixels)."""
  x: float          # mouth centre
  y: float
  iod: float        # inter-ocular distance
  roll: float       # radians, eye line
  source: int       # 1 FaceMesh, 2 BlazeFace

  def geometry(self) -> np.ndarray:
    return np.array([self.x, self.y, self.iod, self.roll, self.source], np.float64)


class FaceObserver:
  """All faces of a frame as ``Face`` objects (``crops.FaceLandmarker``, the clip pipeline)."""

  def __init__(self, max_faces: int = 4, max_side: int = crops.MESH_MAX_SIDE):
    self._landmarker = crops.FaceLandmarker(max_faces, max_side)

  def reset(self) -> None:
    """A fresh FaceMesh tracker (after a cut: no state carried over)."""
    self._landmarker.reset()

  def observe(self, frame: np.ndarray) -> list[Face]:
    return [Face(float(g[0]), float(g[1]), float(g[2]), float(g[3]), int(g[4]))
            for g in self._landmarker.observe(frame)]

  def close(self) -> None:
    self._landmarker.close()


class ShotDetector:
  """Flags a cut when the mean absolute change of a 64x36 grey thumbnail exceeds
  ``threshold`` grey levels (a talking head changes by 1-5; a cut by 30 or more) and
  ``ratio`` times the median change of the last ``history`` frames.

  The ratio is for pictures that move all the time: a face-following crop (LRS2) slides a
  busy background by 15-30 grey levels a frame, which the absolute threshold alone took for
  cuts every few frames, each ending the face track (``lrs2_crop/00009``). A cut is a
  change far above the ones around it."""

  def __init__(self, threshold: float = 25.0, ratio: float = 2.0, history: int = 12):
    self.threshold, self.ratio = threshold, ratio
    self._prev: np.ndarray | None = None
    self._changes: collections.deque[float] = collections.deque(maxlen=history)

  def is_cut(self, frame: np.ndarray) -> bool:
    # Every step-th pixel first (still 2x the thumbnail each way): the thumbnail averages
    # blocks anyway, and converting a whole 720p or 1080p frame cost more than the rest.
    h, w = frame.shape[:2]
    step = max(1, min(w // 128, h // 72))
    small = np.ascontiguousarray(frame[::step, ::step])
    g = cv2.resize(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (64, 36),
                   interpolation=cv2.INTER_AREA).astype(np.float32)
    cut = False
    if self._prev is not None:
      change = float(np.abs(g - self._prev).mean())
      usual = float(np.median(self._changes)) if self._changes else 0.0
      cut = change > self.threshold and change > self.ratio * usual
      self._changes.append(change)
    self._prev = g
    return cut


@dataclasses.dataclass
class Track:
  """One face followed through consecutive frames of one shot."""
  id: int
  start: int                              # first frame with the face
  geom: list[np.ndarray]                  # [x, y, iod, roll, source] per frame from base
  last_seen: int
  base: int = -1                          # frame of geom[0] (older rows are forgotten)
  ended: bool = False
  thumbnail: np.ndarray | None = None     # a face crop for reports
  mouth_sum: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))  # x, y, n

  @property
  def mouth(self) -> tuple[float, float]:
    """Mean mouth position over the frames the face was seen (pixels)."""
    return (float(self.mouth_sum[0] / max(1, self.mouth_sum[2])),
            float(self.mouth_sum[1] / max(1, self.mouth_sum[2])))

  def __post_init__(self):
    if self.base < 0:
      self.base = self.start

  @property
  def end(self) -> int:
    """One past the last frame with the face."""
    return self.last_seen + 1

  def observed(self, lo: int, hi: int) -> np.ndarray:
    """Geometry rows for frames ``lo .. hi - 1`` (NaN where the face was not seen)."""
    out = np.full((hi - lo, 5), np.nan)
    a, b = max(lo, self.base), min(hi, self.base + len(self.geom))
    if a < b:
      out[a - lo:b - lo] = np.stack(self.geom[a - self.base:b - self.base])
    return out


class Tracker:
  """Links faces into tracks and cuts lip crops from them (see the module docstring)."""

  needs_faces = True      # the analysis runs the face landmarker for it

  def __init__(self, crop: CropSpec, max_gap: int = 12, link_iod: float = 1.0,
               face_frame: str = "lrs2"):
    if crop.method == "haar":
      raise ValueError("sync QC crops lips from face landmarks; a model trained on Haar crops "
                       "is not supported (use a landmark or a box model)")
    if crop.method == "box" and face_frame not in FACE_FRAMES:
      raise ValueError(f"unknown face_frame {face_frame!r} for tracking faces; expected one "
                       f"of {list(FACE_FRAMES)} (or 'fixed': no tracking, FrameLips)")
    self.crop, self.max_gap, self.link_iod = crop, max_gap, link_iod
    self.face_frame = FACE_FRAMES.get(face_frame, FACE_FRAMES["lrs2"])
    opts = crop.options
    self.smooth = int(opts.get("smooth_frames", 5))
    self.lookahead = max_gap + self.smooth // 2 + 1
    self.tracks: list[Track] = []
    self.finished: dict[int, dict] = {}     # pruned tracks: thumbnail and mean mouth
    self._next_id = 0

  def update(self, t: int, faces: list[Face], cut: bool) -> None:
    """Adds frame ``t``'s faces; ``cut`` ends every open track first."""
    open_ = [tr for tr in self.tracks if not tr.ended]
    for tr in open_:
      if cut or t - tr.last_seen > self.max_gap:
        tr.ended = True
    open_ = [tr for tr in open_ if not tr.ended]
    # Greedy matching, nearest pairs first; the distance is in the track's IODs.
    pairs = []
    for i, f in enumerate(faces):
      for j, tr in enumerate(open_):
        g = tr.geom[tr.last_seen - tr.base]
        pairs.append((float(np.hypot(f.x - g[0], f.y - g[1]) / max(g[2], 1.0)), i, j))
    used_f, used_t = set(), set()
    for d, i, j in sorted(pairs):
      if d > self.link_iod or i in used_f or j in used_t:
        continue
      used_f.add(i)
      used_t.add(j)
      tr = open_[j]
      while tr.base + len(tr.geom) < t:        # frames without the face
        tr.geom.append(np.full(5, np.nan))
      tr.geom.append(faces[i].geometry())
      tr.last_seen = t
      tr.mouth_sum += (faces[i].x, faces[i].y, 1)
    for i, f in enumerate(faces):
      if i not in used_f:
        self.tracks.append(Track(self._next_id, t, [f.geometry()], t,
                                 mouth_sum=np.array([f.x, f.y, 1.0])))
        self._next_id += 1

  def _crop(self, frame: np.ndarray, g: np.ndarray) -> np.ndarray:
    cx, cy, iod, roll = g
    if self.crop.method == "landmarks":
      o = self.crop.options
      return crops.landmark_crop(frame, cx, cy, iod, roll if o["roll"] else 0.0,
                                 width_iod=float(o["width_iod"]))
    # Box: the training frame's window, on a virtual face-crop frame around this face.
    fx, fy, fiod = self.face_frame
    side = iod / fiod
    x0, y0 = cx - fx * side, cy - fy * side
    top, bottom, left, right = self.crop.box
    h, w = LIP_SIZE
    sx, sy = (right - left) * side / w, (bottom - top) * side / h
    m = np.array([[sx, 0, x0 + left * side + (sx - 1) / 2],
                  [0, sy, y0 + top * side + (sy - 1) / 2]])
    flags = cv2.INTER_AREA if min(sx, sy) > 1.5 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (w, h), flags=flags | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)

  def crops_for(self, lo: int, hi: int, frames: np.ndarray
                ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Lip crops of frames ``lo .. hi - 1`` (``frames[i]`` is frame ``lo + i``) per track.

    Returns ``{track id: (frame numbers [n], crops uint8 [n, 48, 96, 3])}`` for tracks with
    their face in that span. Frames up to ``hi - 1 + lookahead`` must have been observed
    (or the track ended), so gap filling and smoothing see what they would see on a whole
    clip.
    """
    out = {}
    margin = self.max_gap + self.smooth
    for tr in self.tracks:
      a, b = max(lo, tr.start), min(hi, tr.end)
      if a >= b:
        continue
      wa, wb = max(tr.base, a - margin), min(tr.end, b + margin)
      geom = tr.observed(wa, wb)
      track = crops.fill_and_smooth(geom, self.smooth)[a - wa:b - wa]
      idx = np.arange(a, b)
      cr = np.stack([self._crop(frames[t - lo], track[t - a]) for t in idx])
      if tr.thumbnail is None:
        tr.thumbnail = cr[len(cr) // 2]
      out[tr.id] = (idx, cr)
    return out

  def summaries(self) -> dict[int, dict]:
    """``{track id: {"thumbnail", "mouth"}}`` of every track seen so far."""
    return self.finished | {tr.id: {"thumbnail": tr.thumbnail, "mouth": tr.mouth}
                            for tr in self.tracks}

  def prune(self, before: int) -> None:
    """Forgets tracks that ended before frame ``before`` (their crops are all cut) and the
    geometry of open tracks that no crop at or after ``before`` can need."""
    gone = [tr for tr in self.tracks if tr.ended and tr.end + self.smooth < before]
    for tr in gone:
      self.finished[tr.id] = {"thumbnail": tr.thumbnail, "mouth": tr.mouth}
    self.tracks = [tr for tr in self.tracks if not (tr.ended and tr.end + self.smooth < before)]
    keep = before - self.max_gap - 2 * self.smooth
    for tr in self.tracks:
      if keep > tr.base and tr.last_seen - keep > 0:
        drop = min(keep - tr.base, len(tr.geom) - 1)
        del tr.geom[:drop]
        tr.base += drop


class FrameLips:
  """Lips cut from the whole picture, as one track: a box model on face-cropped video (the
  training frames themselves: the box is cut every frame, no faces searched) or a Haar
  model (``crops.lip_crop`` over the whole clip at the end, as its training data were cut,
  so the clip is held in memory: Haar models are for short clips).

  The same interface as ``Tracker`` for the analysis (``update``, ``crops_for``, ``prune``,
  ``lookahead``, ``tracks``, ``summaries``).
  """

  needs_faces = False

  def __init__(self, crop: CropSpec):
    if crop.method not in ("box", "haar"):
      raise ValueError(f"FrameLips cuts box or Haar crops, not {crop.method!r}")
    self.crop = crop
    # Box crops need no future frames; Haar tracks are smoothed over the whole clip.
    self.lookahead: int | None = 0 if crop.method == "box" else None
    self.tracks: list = []
    self._thumbnail: np.ndarray | None = None

  def update(self, t: int, faces: list, cut: bool) -> None:
    """Nothing to follow: the picture is the face."""

  def crops_for(self, lo: int, hi: int, frames) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Lip crops of frames ``lo .. hi - 1`` as track 0."""
    if hi <= lo:
      return {}
    try:
      cr = crops.lip_crop(np.stack(frames), self.crop)
    except NoFaceError as e:
      raise FeatureError("", "no_face", str(e)) from e
    if self._thumbnail is None:
      self._thumbnail = cr[len(cr) // 2]
    return {0: (np.arange(lo, hi), cr)}

  def prune(self, before: int) -> None:
    """Nothing is kept between calls."""

  def summaries(self) -> dict[int, dict]:
    return {0: {"thumbnail": self._thumbnail, "mouth": None}}
