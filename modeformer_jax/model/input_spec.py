"""What a model expects as input: the one record shared by prep, training and inference.

An :class:`InputSpec` names everything that turns a video file into model input: the frame
rate, the audio sample rate and mel parameters, the window sizes, the lip-crop size and
channels, and the crop method with its parameters. It is written

* by ``data_prep.prepare`` into every dataset's ``manifest.json`` (``"input_spec"``),
* by training into every checkpoint's metadata (``meta["input_spec"]``),
* by ``export`` into every exported model's ``model.json`` (``"input_spec"``),

and ``eval`` / ``detect`` read it from the model they load. Nothing re-derives it from a
workdir's config or a manifest found through a relative path, so a model always sees the
features it was trained on.

Crop methods (``CropSpec.method``):

``box``
  A fixed window of the frame, ``box = (top, bottom, left, right)`` as fractions, resized
  to the lip size. For face-cropped datasets (LRS2, LRS3, VoxCeleb2, the synthetic set).
``haar``
  OpenCV's Haar face detector, boxes tracked and smoothed; the crop is the lower half of
  an enlarged face box (the crop of the GRID model, trained before landmarks existed).
``landmarks``
  A crop centred on the lip landmarks, scaled by the inter-ocular distance, optionally
  roll-corrected, smoothed over time (``crops.lip_crop``). Works on any framing.

This module is light (no PyAV, OpenCV or JAX) so any part of the project may import it.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping

from modeformer_jax.model import windows

SPEC_VERSION = 1
SAMPLE_RATE = windows.SAMPLE_RATE
LIP_SIZE = (48, 96)          # (height, width) of a lip crop
CHANNELS = 3                 # RGB

# Everything that determines the mel values; ``features.log_mel`` reads it, so it is the
# single source of truth. JSON-serialisable: it is written into manifests and checkpoints.
MEL_CONFIG: dict = {
    "sample_rate": SAMPLE_RATE,
    "n_mels": 80,
    "n_fft": 800,
    "hop_length": 200,
    "win_length": 800,
    "window": "hann_periodic",
    "center": True,             # frame m is centred on sample m * hop_length
    "pad_mode": "zeros",
    "fmin": 55.0,
    "fmax": 7600.0,
    "mel_norm": "slaney",
    "mel_htk": False,
    "preemphasis": 0.97,
    "magnitude_power": 1.0,     # magnitude, not power, spectrogram
    "amin": 1e-5,               # floor before log10
    "ref_level_db": 20.0,       # db = 20 log10(max(M, amin)) - ref_level_db
    "min_level_db": -100.0,     # db at or below this maps to -max_abs_value
    "max_abs_value": 4.0,       # output = clip(2 a (db - min) / -min - a, -a, a)
    "fps": windows.FPS,
    "mel_per_frame": windows.MEL_PER_FRAME,
}

CROP_METHODS = ("box", "haar", "landmarks")

# Fixed windows (top, bottom, left, right) as fractions of the frame. Measured on the LRS2-
# and VoxCeleb2-style crops in ../shared/data/real_clips: the face's centre sits at ~0.34 H
# and its size is ~0.6 H, so the mouth is at 0.35-0.57 H; the plain lower half would show
# chin and collar. The window keeps the 1:2 aspect of the 48x96 crop for square frames.
FACE_CROP_BOX = (0.37, 0.72, 0.15, 0.85)
LOWER_HALF_BOX = (0.5, 1.0, 0.0, 1.0)

# Landmark crop geometry (fractions of the inter-ocular distance, IOD). The crop is
# centred on the mean of the lip landmarks; its width is ``width_iod`` IODs (mouth corners
# are ~1 IOD apart, so the crop shows the mouth with cheeks and chin edge), its height is
# half its width (the 48x96 aspect). Smoothing is a centred moving average over frames.
# ``max_gap_frames`` is recorded in the specs written so far (faces_v1/v2 and their data) but
# nothing enforces it yet: crops.landmark_track interpolates gaps of any length and only
# rejects a clip with a face in under half its frames. Kept so recorded specs still match.
LANDMARK_DEFAULTS: dict = {"width_iod": 2.0, "roll": True, "smooth_frames": 5,
                           "max_gap_frames": 12}


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """How lip crops are cut from a frame (see the module docstring)."""
  method: str
  box: tuple[float, float, float, float] | None = None   # 'box' only
  params: tuple[tuple[str, Any], ...] = ()               # 'landmarks' geometry

  def __post_init__(self):
    if self.method not in CROP_METHODS:
      raise ValueError(f"unknown crop method {self.method!r}; expected one of {CROP_METHODS}")
    if self.method == "box":
      if self.box is None or len(self.box) != 4:
        raise ValueError(f"a 'box' crop needs (top, bottom, left, right), got {self.box}")
      top, bottom, left, right = self.box
      if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ValueError(f"crop box {self.box} is not a window inside the frame")
      object.__setattr__(self, "box", tuple(float(v) for v in self.box))
    elif self.box is not None:
      raise ValueError(f"crop method {self.method!r} takes no box")

  @property
  def options(self) -> dict:
    """The method's parameters as a dict (landmark defaults filled in)."""
    base = dict(LANDMARK_DEFAULTS) if self.method == "landmarks" else {}
    return base | dict(self.params)

  def to_dict(self) -> dict:
    out: dict[str, Any] = {"method": self.method}
    if self.box is not None:
      out["box"] = list(self.box)
    if self.method == "landmarks":
      out["params"] = self.options
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "CropSpec":
    params = tuple(sorted(dict(d.get("params") or {}).items()))
    box = d.get("box")
    return cls(method=d["method"], box=tuple(box) if box is not None else None, params=params)

  def describe(self) -> str:
    if self.method == "box":
      return "fixed box (top, bottom, left, right) = " + ", ".join(f"{v:g}" for v in self.box)
    if self.method == "haar":
      return "Haar face detection, lower half of the face box"
    return "lip landmarks (" + ", ".join(f"{k}={v}" for k, v in self.options.items()) + ")"


# Crop of each named feature layout (``data_prep.prepare --feature_layout``, ``--layout``
# of eval/detect): face-cropped datasets get their measured box, uncropped video a detector.
LAYOUT_CROPS: dict[str, CropSpec] = {
    "lrs2": CropSpec("box", FACE_CROP_BOX),
    "lrs3": CropSpec("box", FACE_CROP_BOX),
    "vox2": CropSpec("box", FACE_CROP_BOX),
    "crop": CropSpec("box", LOWER_HALF_BOX),
    "raw": CropSpec("haar"),
    "landmarks": CropSpec("landmarks"),
}


def crop_for_layout(layout: str, crop_box: tuple[float, ...] | None = None) -> CropSpec:
  """The crop of a named layout; ``crop_box`` replaces a box layout's window."""
  if layout not in LAYOUT_CROPS:
    raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUT_CROPS)}")
  crop = LAYOUT_CROPS[layout]
  if crop_box is not None:
    if crop.method != "box":
      raise ValueError(f"--crop_box applies to fixed-box layouts, not {layout!r} "
                       f"({crop.describe()})")
    crop = CropSpec("box", tuple(crop_box))
  return crop


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Everything that turns a video file into model input."""
  crop: CropSpec
  fps: int = windows.FPS
  sample_rate: int = SAMPLE_RATE
  window_frames: int = windows.WINDOW_FRAMES
  mel_window: int = windows.MEL_WINDOW
  mel_per_frame: float = windows.MEL_PER_FRAME
  lip_size: tuple[int, int] = LIP_SIZE
  channels: int = CHANNELS
  mel: tuple[tuple[str, Any], ...] = tuple(sorted(MEL_CONFIG.items()))

  def to_dict(self) -> dict:
    return {"version": SPEC_VERSION, "fps": self.fps, "sample_rate": self.sample_rate,
            "window_frames": self.window_frames, "mel_window": self.mel_window,
            "mel_per_frame": self.mel_per_frame, "lip_size": list(self.lip_size),
            "channels": self.channels, "mel": dict(self.mel), "crop": self.crop.to_dict()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "InputSpec":
    return cls(crop=CropSpec.from_dict(d["crop"]), fps=int(d["fps"]),
               sample_rate=int(d["sample_rate"]), window_frames=int(d["window_frames"]),
               mel_window=int(d["mel_window"]), mel_per_frame=float(d["mel_per_frame"]),
               lip_size=tuple(d["lip_size"]), channels=int(d["channels"]),
               mel=tuple(sorted(dict(d["mel"]).items())))

  def check_supported(self, where: str = "model") -> None:
    """Raises when this code cannot produce these features (e.g. other mel parameters)."""
    ours = InputSpec(crop=self.crop)
    diff = [k for k in ("fps", "sample_rate", "window_frames", "mel_window", "mel_per_frame",
                        "lip_size", "channels") if getattr(self, k) != getattr(ours, k)]
    diff += [f"mel.{k}" for k, v in dict(self.mel).items() if MEL_CONFIG.get(k) != v]
    if diff:
      raise ValueError(f"{where} expects input this version of modeformer_jax does not "
                       f"produce (differs in {', '.join(diff)})")

  def describe(self) -> str:
    m = dict(self.mel)
    return (f"{self.fps} fps, {self.window_frames}-frame windows of {self.lip_size[0]}x"
            f"{self.lip_size[1]} RGB lips ({self.crop.describe()}); {m['n_mels']}-bin log-mel "
            f"at {self.sample_rate} Hz, hop {m['hop_length']}, {self.mel_window} mel frames")


def for_layout(layout: str, crop_box: tuple[float, ...] | None = None) -> InputSpec:
  """The input spec of a named layout with this code's feature parameters."""
  return InputSpec(crop=crop_for_layout(layout, crop_box))


def _legacy_manifest_spec(feats: Mapping[str, Any]) -> InputSpec:
  # Manifests written before input specs existed name a layout and maybe a crop box.
  layout = feats.get("feature_layout", "crop")
  crop_box = feats.get("crop_box")
  if LAYOUT_CROPS.get(layout, CropSpec("haar")).method == "box" and crop_box:
    return InputSpec(crop=CropSpec("box", tuple(crop_box)))
  return for_layout(layout)


def read_dataset_spec(data_dir: str | pathlib.Path) -> dict:
  """The input spec (as a dict) recorded in a prepared dataset's ``manifest.json``.

  ``data_dir`` may list several datasets joined by commas; they must agree.
  """
  specs = {}
  for one in str(data_dir).split(","):
    one = one.strip()
    if not one:
      continue
    path = pathlib.Path(one) / "manifest.json"
    try:
      manifest = json.loads(path.read_text())
    except OSError as e:
      raise FileNotFoundError(f"{path}: no manifest (is {one} a prepared dataset?)") from e
    spec = (InputSpec.from_dict(manifest["input_spec"]) if "input_spec" in manifest
            else _legacy_manifest_spec(manifest.get("features", {})))
    specs[one] = spec.to_dict()
  if not specs:
    raise ValueError("no dataset folder given")
  first = next(iter(specs.values()))
  odd = [d for d, s in specs.items() if s != first]
  if odd:
    raise ValueError(f"datasets prepared with different input specs cannot be mixed: "
                     f"{next(iter(specs))} vs {odd}")
  return first


def from_model_meta(meta: Mapping[str, Any], where: str = "model") -> InputSpec:
  """The input spec of a loaded model (checkpoint meta or exported ``model.json``)."""
  if not meta.get("input_spec"):
    raise ValueError(f"{where} records no input spec (it predates specs in checkpoints); "
                     "pass --layout to say how its training lips were cropped")
  spec = InputSpec.from_dict(meta["input_spec"])
  spec.check_supported(where)
  return spec
