"""Lip crops: a fixed box, Haar face detection, or lip landmarks (``input_spec.CropSpec``).

``lip_crop(frames, crop)`` turns RGB frames ``uint8 [T, H, W, 3]`` into lip crops
``uint8 [T, 48, 96, 3]`` by the crop method a model was trained with:

``box``
  The same window of every frame (face-cropped datasets).
``haar``
  OpenCV's bundled Haar frontal-face cascade on a downscaled grey image every few frames,
  outliers removed with a running median, gaps interpolated, boxes smoothed over time; the
  crop is the lower half of a slightly enlarged, lowered square around the face. Misses
  ~9% of real frames and puts ~7% of crops on glasses, a cheek or the neck
  (../shared/notes/face_detectors.md); kept for models trained with it.
``landmarks``
  MediaPipe FaceMesh (468 points, tracking mode) on every frame; where it loses the face,
  MediaPipe's BlazeFace detector (6 key points) fills in. The crop is centred on the mean of
  the 40 lip landmarks (BlazeFace: its mouth point), its width is ``width_iod`` times the
  inter-ocular distance, its height half of that, rotated by the eye line's roll when
  ``roll`` is set; centre, scale and roll are interpolated over short gaps and smoothed
  with a centred moving average of ``smooth_frames``.

Why MediaPipe: its models ship inside the registry wheel (nothing is downloaded), it finds
a face in 99.4-100% of the real test clips with none misplaced, and it runs at 300-600
frames/s on this CPU; dlib's HOG + 68 points misses turned heads and its landmark model is
a separate 100 MB non-commercial download. See the README's install notes.
"""
from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

from modeformer_jax import native_log
from modeformer_jax.errors import NoFaceError
from modeformer_jax.model.input_spec import CropSpec, LIP_SIZE


_DETECT_EVERY = 3           # run the detector on every k-th frame, interpolate the rest
_DETECT_MAX_SIDE = 320      # detector input: longest side downscaled to this many pixels
_DETECT_MIN_FACE = 0.2      # smallest face searched, as a fraction of the shorter side
_MIN_FACE_FRACTION = 0.2    # faces kept in fewer than this fraction of tried frames: no_face
_MEDIAN_WINDOW = 5          # tried frames; running median that exposes stray detections
_SMOOTH_WINDOW = 7          # frames; moving average of the interpolated boxes
_SIZE_TOLERANCE = 1.5       # a box this much larger/smaller than the face is someone else
_MAX_JUMP = 0.5             # centre deviation from the running median, in face sizes
# The Haar box spans brow to lower lip; enlarge and lower it so that its lower half runs
# from the nose to below the chin, with the mouth a little above the middle.
_BOX_SCALE = 1.1
_BOX_SHIFT = 0.05           # fraction of the box size, downwards


@functools.lru_cache(maxsize=None)
def _cascade() -> cv2.CascadeClassifier:
  path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f"cannot load OpenCV's Haar cascade {path}")
  return cascade


def _resize(img: np.ndarray) -> np.ndarray:
  h, w = LIP_SIZE
  interp = cv2.INTER_AREA if img.shape[0] >= h else cv2.INTER_LINEAR
  return cv2.resize(img, (w, h), interpolation=interp)


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
  if x.shape[0] < 3:
    return x
  half = min(window // 2, (x.shape[0] - 1) // 2)
  padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
  views = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)
  return np.median(views, axis=-1)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
  half = min(window // 2, x.shape[0] // 2)
  if half == 0:
    return x
  padded = np.pad(x, ((half, half), (0, 0)), mode="edge")
  kernel = np.ones(2 * half + 1) / (2 * half + 1)
  return np.stack([np.convolve(padded[:, j], kernel, mode="valid")
                   for j in range(x.shape[1])], axis=1)


def detect_faces(frames: np.ndarray, every: int = _DETECT_EVERY
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
  """Runs the Haar cascade on every ``every``-th frame (and the last).

  Returns:
    ``(indices, candidates)``: the frames tried and, for each, ``float [n, 3]`` boxes
    ``(cx, cy, size)`` in full-resolution pixels (``n`` may be 0).
  """
  t, h, w = frames.shape[:3]
  scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
  small = (max(1, round(w * scale)), max(1, round(h * scale)))
  min_side = max(20, int(_DETECT_MIN_FACE * min(small)))
  cascade = _cascade()
  indices = np.arange(0, t, max(1, every))
  if t and indices[-1] != t - 1:
    indices = np.append(indices, t - 1)
  candidates = []
  for i in indices:
    grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
      grey = cv2.resize(grey, small, interpolation=cv2.INTER_AREA)
    # Few neighbours: better recall on turned heads; _select_track drops the extra boxes.
    found = cascade.detectMultiScale(cv2.equalizeHist(grey), scaleFactor=1.1,
                                     minNeighbors=3, minSize=(min_side, min_side))
    found = np.asarray(found, np.float64).reshape(-1, 4)
    candidates.append(np.stack([found[:, 0] + found[:, 2] / 2, found[:, 1] + found[:, 3] / 2,
                                np.maximum(found[:, 2], found[:, 3])], axis=1) / scale)
  return indices, candidates


def _select_track(candidates: list[np.ndarray]) -> np.ndarray:
  """One box per tried frame (NaN where none) following the clip's main face."""
  boxes = np.full((len(candidates), 3), np.nan)
  pool = np.concatenate([c for c in candidates if len(c)] or [np.zeros((0, 3))])
  if pool.shape[0] == 0:
    return boxes
  # The main face is the box that agrees (similar size and place) with the most others;
  # false positives are scattered and rarely agree with each other.
  others = pool[np.linspace(0, pool.shape[0] - 1, min(pool.shape[0], 2000)).astype(int)]
  big = np.maximum(pool[:, None, 2], others[None, :, 2])
  agree = ((np.abs(pool[:, None, 2] - others[None, :, 2]) <= 0.3 * big)
           & (np.hypot(pool[:, None, 0] - others[None, :, 0],
                       pool[:, None, 1] - others[None, :, 1]) <= _MAX_JUMP * big))
  ref = pool[np.argmax(agree.sum(axis=1))]
  for j, cand in enumerate(candidates):
    ok = cand[(cand[:, 2] <= ref[2] * _SIZE_TOLERANCE) & (cand[:, 2] >= ref[2] / _SIZE_TOLERANCE)]
    if len(ok):
      boxes[j] = ok[np.argmin(np.hypot(ok[:, 0] - ref[0], ok[:, 1] - ref[1]))]
  found = np.flatnonzero(~np.isnan(boxes[:, 0]))
  if found.size >= 3:
    med = _running_median(boxes[found], _MEDIAN_WINDOW)
    jump = np.hypot(*(boxes[found, :2] - med[:, :2]).T) > _MAX_JUMP * med[:, 2]
    resized = np.abs(boxes[found, 2] - med[:, 2]) > 0.3 * med[:, 2]
    boxes[found[jump | resized]] = np.nan
  return boxes


def _crop_lower_half(frame: np.ndarray, cx: float, cy: float, size: float) -> np.ndarray:
  size = size * _BOX_SCALE
  cy = cy + _BOX_SHIFT * size / _BOX_SCALE
  x0, x1 = int(round(cx - size / 2)), int(round(cx + size / 2))
  y0, y1 = int(round(cy)), int(round(cy + size / 2))
  h, w = frame.shape[:2]
  if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
    # Replicate the border for faces at the frame edge rather than shrinking the crop.
    pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
    frame = np.pad(frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)], pad, mode="edge")
    return _resize(frame)
  return _resize(frame[y0:y1, x0:x1])



def haar_track(frames: np.ndarray) -> np.ndarray:
  """The smoothed Haar face track ``[T, 3]`` (cx, cy, size) in pixels.

  Raises:
    NoFaceError: a face in under 20% of the frames tried.
  """
  indices, candidates = detect_faces(frames)
  boxes = _select_track(candidates)
  found = ~np.isnan(boxes[:, 0])
  if found.sum() < max(1, _MIN_FACE_FRACTION * indices.size):
    raise NoFaceError(f"face found in {int(found.sum())} of {indices.size} frames tried")
  every = np.arange(frames.shape[0])
  track = np.stack([np.interp(every, indices[found], boxes[found, j]) for j in range(3)],
                   axis=1)
  return _moving_average(track, _SMOOTH_WINDOW)


def haar_crop_centre(track: np.ndarray) -> np.ndarray:
  """Centre ``[T, 2]`` of the Haar lip crop for a face track (where it puts the mouth)."""
  size = track[:, 2]
  return np.stack([track[:, 0], track[:, 1] + (_BOX_SHIFT + _BOX_SCALE / 4) * size], axis=1)


def _haar_crops(frames: np.ndarray) -> np.ndarray:
  track = haar_track(frames)
  out = np.empty((frames.shape[0], *LIP_SIZE, 3), np.uint8)
  for i in range(frames.shape[0]):
    out[i] = _crop_lower_half(frames[i], *track[i])
  return out


# ----------------------------------------------------------------------------------------
# Landmarks (MediaPipe).
# ----------------------------------------------------------------------------------------

# FaceMesh indices: the 40 points of the lips (mediapipe's FACEMESH_LIPS), and the corners
# of each eye (outer, inner) whose midpoints give the eye centres.
LIP_POINTS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178,
              181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321,
              324, 375, 402, 405, 409, 415)
RIGHT_EYE = (33, 133)     # the subject's right eye: image left for a frontal face
LEFT_EYE = (362, 263)
_MIN_LANDMARK_FRACTION = 0.5   # faces in fewer frames than this: no_face
MESH_MAX_SIDE = 640           # larger frames are downscaled before FaceMesh (speed)


@functools.lru_cache(maxsize=None)
def mediapipe() -> Any:
  """The ``mediapipe`` module with its legacy solutions loaded; from now on the native log
  lines it prints are filtered out of stderr unless verbose (``native_log``)."""
  native_log.silence()
  try:
    import mediapipe as mp
    from mediapipe.python.solutions import face_detection, face_mesh  # noqa: F401
  except ImportError as e:  # pragma: no cover - the README's setup installs it
    raise ImportError("landmark crops need mediapipe 0.10.21 (installed by the README's "
                      "setup command: `make venv`)") from e
  return mp


def _geometry(right: np.ndarray, left: np.ndarray, mouth: np.ndarray, source: int
              ) -> tuple[float, ...]:
  eyes = left - right
  return (*mouth, np.hypot(*eyes), np.arctan2(eyes[1], eyes[0]), source)


class FaceLandmarker:
  """The one lip-landmark pipeline, frame by frame: MediaPipe FaceMesh in tracking mode (up
  to ``max_faces`` faces) and, where it finds nobody, BlazeFace (the short-range model first,
  for faces filling much of the frame as in LRS2 crops, then the full-range one for small
  faces in wide shots). Clips (``face_geometry``) and long videos (``qc.tracking``) both
  use it. Frames larger than ``max_side`` are downscaled first (speed)."""

  def __init__(self, max_faces: int = 1, max_side: int = MESH_MAX_SIDE):
    self.max_faces, self.max_side = max_faces, max_side
    self._mp = mediapipe()
    self._mesh = None
    self._det: dict[int, Any] = {}
    self.reset()

  def reset(self) -> None:
    """A fresh FaceMesh tracker: no tracking state carried over (a new clip, a cut)."""
    if self._mesh is not None:
      self._mesh.close()
    self._mesh = self._mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=self.max_faces, refine_landmarks=False,
        min_detection_confidence=0.5, min_tracking_confidence=0.5)

  def _detector(self, model: int):
    if model not in self._det:
      self._det[model] = self._mp.solutions.face_detection.FaceDetection(
          model_selection=model, min_detection_confidence=0.4)
    return self._det[model]

  def observe(self, frame: np.ndarray) -> np.ndarray:
    """Faces of one RGB frame: ``float64 [n, 5]`` rows of mouth x, y, inter-ocular distance,
    roll (radians) and source (1 FaceMesh, 2 BlazeFace) in full-resolution pixels; FaceMesh
    faces in its order, BlazeFace ones largest first."""
    h, w = frame.shape[:2]
    scale = min(1.0, self.max_side / max(h, w))
    img = frame if scale == 1.0 else cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img)
    faces = []
    res = self._mesh.process(img)
    for lm in res.multi_face_landmarks or []:
      # Only the 44 points used of the 468: each is read from a protobuf in Python.
      marks = lm.landmark
      def mean(idx):
        return np.array([(marks[i].x * w, marks[i].y * h) for i in idx]).mean(axis=0)
      faces.append(_geometry(mean(RIGHT_EYE), mean(LEFT_EYE), mean(LIP_POINTS), 1))
    if not faces:
      for model in (0, 1):
        res = self._detector(model).process(img)
        dets = sorted(res.detections or [],
                      key=lambda d: -d.location_data.relative_bounding_box.width)
        for d in dets:
          kp = np.array([(k.x * w, k.y * h) for k in d.location_data.relative_keypoints])
          faces.append(_geometry(kp[0], kp[1], kp[3], 2))   # right eye, left eye, mouth
        if faces:
          break
    return np.array(faces, np.float64).reshape(-1, 5)

  def close(self) -> None:
    self._mesh.close()
    for d in self._det.values():
      d.close()

  def __enter__(self) -> "FaceLandmarker":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def face_geometry(frames: np.ndarray) -> np.ndarray:
  """Per-frame face geometry ``float64 [T, 5]`` of a clip's one face (``FaceLandmarker``
  rows: mouth x, y, inter-ocular distance, roll, source); rows of NaN where no model finds a
  face. A fresh tracker per clip: tracking state must not leak between clips (determinism).
  """
  out = np.full((frames.shape[0], 5), np.nan)
  with FaceLandmarker(max_faces=1) as lm:
    for i in range(frames.shape[0]):
      faces = lm.observe(frames[i])
      if len(faces):
        out[i] = faces[0]
  return out


def fill_and_smooth(geom: np.ndarray, smooth_frames: int) -> np.ndarray:
  """Crop track ``[T, 4]`` from geometry rows with gaps: interpolates missing frames (holding
  the ends) and smooths centre, scale and roll."""
  t = geom.shape[0]
  found = ~np.isnan(geom[:, 0])
  every = np.arange(t)
  track = np.stack([np.interp(every, every[found], geom[found, j]) for j in range(4)], axis=1)
  return _moving_average(track, smooth_frames)


def landmark_crop(frame: np.ndarray, cx: float, cy: float, iod: float, roll: float,
                  width_iod: float) -> np.ndarray:
  """The 48x96 lip crop centred on the mouth ``(cx, cy)``, ``width_iod`` inter-ocular
  distances wide, turned by ``roll`` (radians)."""
  h, w = LIP_SIZE
  scale = width_iod * iod / w            # source pixels per output pixel
  c, s = np.cos(roll) * scale, np.sin(roll) * scale
  # Output pixel (u, v) -> source (x, y): rotate by the roll, scale, centre on the mouth.
  m = np.array([[c, -s, cx - c * (w - 1) / 2 + s * (h - 1) / 2],
                [s, c, cy - s * (w - 1) / 2 - c * (h - 1) / 2]])
  flags = cv2.INTER_AREA if scale > 1.5 else cv2.INTER_LINEAR
  return cv2.warpAffine(frame, m, (w, h), flags=flags | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_REPLICATE)


def landmark_track(frames: np.ndarray, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
  """The smoothed per-frame crop track ``[T, 4]`` (cx, cy, iod, roll) and face statistics.

  Raises:
    NoFaceError: a face in fewer than half of the frames.
  """
  geom = face_geometry(frames)
  found = ~np.isnan(geom[:, 0])
  t = frames.shape[0]
  stats = {"frames": t, "mesh": int((geom[:, 4] == 1).sum()),
           "detector": int((geom[:, 4] == 2).sum()), "missing": int((~found).sum())}
  if found.sum() < max(1, _MIN_LANDMARK_FRACTION * t):
    raise NoFaceError(f"face found in {int(found.sum())} of {t} frames")
  track = fill_and_smooth(geom, int(options["smooth_frames"]))
  if not options["roll"]:
    track[:, 3] = 0.0
  return track, stats


def _landmark_crops(frames: np.ndarray, options: dict[str, Any]) -> np.ndarray:
  track, _ = landmark_track(frames, options)
  out = np.empty((frames.shape[0], *LIP_SIZE, 3), np.uint8)
  for i in range(frames.shape[0]):
    out[i] = landmark_crop(frames[i], *track[i], width_iod=float(options["width_iod"]))
  return out


# ----------------------------------------------------------------------------------------
# Dispatch.
# ----------------------------------------------------------------------------------------

def lip_crop(frames: np.ndarray, crop: CropSpec) -> np.ndarray:
  """Lip crops ``uint8 [T, 48, 96, 3]`` from RGB frames ``uint8 [T, H, W, 3]``.

  Raises:
    NoFaceError: a detector method (haar, landmarks) found no usable face.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  t, h, w = frames.shape[:3]
  if t == 0:
    return np.empty((0, *LIP_SIZE, 3), np.uint8)
  if crop.method == "box":
    top, bottom, left, right = crop.box
    y0, y1 = int(round(top * h)), int(round(bottom * h))
    x0, x1 = int(round(left * w)), int(round(right * w))
    return np.stack([_resize(frames[i, y0:y1, x0:x1]) for i in range(t)])
  if crop.method == "haar":
    return _haar_crops(frames)
  return _landmark_crops(frames, crop.options)
