"""Lip crops: fixed boxes, Haar detection and lip landmarks (real clips when present)."""
import numpy as np
import pytest

from modeformer_jax import errors, media
from modeformer_jax.media import crops, features
from modeformer_jax.model.input_spec import CropSpec, LOWER_HALF_BOX, crop_for_layout


def _noise_frames(n, size=200, seed=0):
  """Dark noise and a bright bar sweeping down: motion, but nothing like a face."""
  frames = np.random.default_rng(seed).integers(0, 40, (n, size, size, 3), dtype=np.uint8)
  rows = (np.arange(n) * 7) % (size - 20)
  frames[np.arange(n)[:, None], rows[:, None] + np.arange(20)] = 230
  return frames


@pytest.mark.parametrize("size", [160, 224, 512])
def test_box_crop_takes_the_window(size):
  frames = np.zeros((4, size, size, 3), np.uint8)
  frames[:, size // 2:] = 200        # lower half bright, upper half black
  frames[:, size // 2:, :size // 2, 0] = 50
  lips = crops.lip_crop(frames, CropSpec("box", LOWER_HALF_BOX))
  assert lips.shape == (4, 48, 96, 3) and lips.dtype == np.uint8
  assert lips[..., 1].min() == 200 and lips[..., 1].max() == 200   # nothing from the top
  assert lips[:, :, :47, 0].max() == 50 and lips[:, :, 49:, 0].min() == 200


def test_crop_spec_validation():
  with pytest.raises(ValueError, match="crop method"):
    CropSpec("bogus")
  with pytest.raises(ValueError, match="inside the frame"):
    CropSpec("box", (0.6, 0.4, 0, 1))
  with pytest.raises(ValueError, match="takes no box"):
    CropSpec("haar", (0, 1, 0, 1))
  with pytest.raises(ValueError, match="fixed-box layouts"):
    crop_for_layout("raw", (0, 1, 0, 1))
  spec = CropSpec("landmarks", params=(("width_iod", 2.5),))
  assert CropSpec.from_dict(spec.to_dict()) == CropSpec.from_dict(spec.to_dict())
  assert spec.options["width_iod"] == 2.5 and spec.options["roll"] is True


@pytest.mark.parametrize("method", ["haar", "landmarks"])
def test_detectors_reject_faceless_frames(method):
  with pytest.raises(errors.NoFaceError, match="face found in"):
    crops.lip_crop(_noise_frames(30), CropSpec(method))


def test_no_face_is_a_feature_error_naming_the_file(tmp_path):
  import av
  path = tmp_path / "noface.mp4"
  frames = _noise_frames(40)
  with av.open(str(path), "w") as c:
    v = c.add_stream("libx264", rate=25)
    v.width = v.height = 200
    v.pix_fmt = "yuv420p"
    a = c.add_stream("aac", rate=16000, layout="mono")
    for f in frames:
      for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        c.mux(p)
    for p in v.encode():
      c.mux(p)
    tone = (0.1 * np.sin(np.arange(16000 * 2) / 10)).astype(np.float32)[None]
    for s in range(0, tone.shape[1], 1024):
      fr = av.AudioFrame.from_ndarray(tone[:, s:s + 1024], format="flt", layout="mono")
      fr.sample_rate = 16000
      for p in a.encode(fr):
        c.mux(p)
    for p in a.encode():
      c.mux(p)
  with pytest.raises(errors.FeatureError) as info:
    features.extract_clip(str(path), CropSpec("landmarks"))
  assert info.value.kind == "no_face" and str(path) in str(info.value)


def test_landmark_crop_on_a_real_clip(real_clips_dir):
  """A clip where the Haar cascade finds the face in only ~30% of frames (face_detectors.md)."""
  dec = media.decode(str(real_clips_dir / "lrs2_crop" / "00004.mp4"))
  geom = crops.face_geometry(dec.frames)
  found = ~np.isnan(geom[:, 0])
  assert found.mean() >= 0.99
  # The mouth sits in the lower middle of an LRS2 face crop, the eyes ~0.3 of the width apart.
  h, w = dec.frames.shape[1:3]
  assert np.all((geom[found, 0] > 0.3 * w) & (geom[found, 0] < 0.7 * w))
  assert np.all((geom[found, 1] > 0.5 * h) & (geom[found, 1] < 0.85 * h))
  assert np.all((geom[found, 2] > 0.15 * w) & (geom[found, 2] < 0.6 * w))
  lips = crops.lip_crop(dec.frames, CropSpec("landmarks"))
  assert lips.shape == (dec.frames.shape[0], 48, 96, 3)
  # Deterministic (a fresh tracker per clip) and it tracks a moving mouth.
  np.testing.assert_array_equal(lips, crops.lip_crop(dec.frames, CropSpec("landmarks")))
  assert 0 < np.abs(np.diff(lips.astype(np.int16), axis=0)).mean() < 40
  # The mouth is darker than the skin around it: the crop's centre row band is darker
  # than its top band (nose/cheeks), on average over the clip.
  grey = lips.astype(np.float32).mean(axis=(0, 3))
  assert grey[18:30, 30:66].mean() < grey[:8, 30:66].mean()


def test_roll_correction_levels_a_tilted_face(real_clips_dir):
  dec = media.decode(str(real_clips_dir / "vox2_crop" / "00067.mp4"))
  frames = dec.frames[:20]
  import cv2
  h, w = frames.shape[1:3]
  rot = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0)   # 15 degrees anticlockwise
  tilted = np.stack([cv2.warpAffine(f, rot, (w, h), borderMode=cv2.BORDER_REPLICATE)
                     for f in frames])
  g0, g1 = crops.face_geometry(frames), crops.face_geometry(tilted)
  # Image y points down, so an anticlockwise turn lowers the subject's left eye: roll -15.
  np.testing.assert_allclose(np.degrees(np.nanmedian(g1[:, 3] - g0[:, 3])), -15, atol=3)
  upright = crops.lip_crop(frames, CropSpec("landmarks"))
  levelled = crops.lip_crop(tilted, CropSpec("landmarks"))
  unlevelled = crops.lip_crop(tilted, CropSpec("landmarks", params=(("roll", False),)))
  err = lambda x: np.abs(x.astype(np.float32) - upright.astype(np.float32)).mean()  # noqa: E731
  assert err(levelled) < err(unlevelled)
