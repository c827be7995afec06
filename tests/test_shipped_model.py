"""The detector shipped in modeformer_jax/weights/grid_s1 (skips when it or the data is absent)."""
import numpy as np
import pytest

from modeformer_jax.analysis import detectors

from modeformer_jax import analysis
from modeformer_jax.model import checkpoints, input_spec

SHIPPED = detectors.WEIGHTS / "grid_s1"


@pytest.fixture(scope="module")
def shipped():
  if not (SHIPPED / "model.json").is_file():
    pytest.skip(f"no shipped model at {SHIPPED}")
  det = detectors.load_detector(SHIPPED, chunk=128)
  return analysis.Analyzer(detector=det), det.meta


def test_shipped_model_states_what_it_was_trained_on(shipped):
  _, meta = shipped
  assert "GRID" in meta["trained_on"]
  # Trained on Haar face-detected crops: detect's 'auto' must use them everywhere.
  assert input_spec.from_model_meta(meta).crop == input_spec.CropSpec("haar")
  card = (SHIPPED / "MODEL_CARD.md").read_text()
  for words in ("one speaker", "val", "frames"):
    assert words in card


@pytest.mark.slow
def test_shipped_model_scores_a_real_clip_reproducibly(shipped, real_clips_dir):
  analyzer, meta = shipped
  clip = sorted((real_clips_dir / "lrs2_crop").rglob("*.mp4"))[0]
  first = analysis.detect_file(analyzer, str(clip))
  # A second, independent load must give the same numbers (no hidden state, no randomness).
  again = analysis.detect_file(analysis.Analyzer(
      detector=detectors.load_detector(SHIPPED, chunk=64)), str(clip))
  curve = np.asarray(first["mean_curve"], np.float64)
  assert np.isfinite(curve[np.isfinite(curve)]).all() and np.isfinite(curve).sum() >= 25
  assert np.isfinite(first["confidence"]) and -15 <= first["offset_frames"] <= 15
  assert again["offset_frames"] == first["offset_frames"]
  np.testing.assert_allclose(again["mean_curve"], first["mean_curve"], rtol=1e-5, atol=1e-6)


# A held-out utterance (the seed-0 validation split of configs/grid.py); the model never
# trained on it.
GRID_CLIP = "bbal6n.mp4"


def test_shipped_model_detects_an_injected_shift_on_grid(shipped, grid_dir):
  analyzer, _ = shipped
  path = grid_dir / "video" / GRID_CLIP
  if not path.is_file():
    pytest.skip(f"{path} not present")
  assert analyzer.crop == input_spec.CropSpec("haar")
  results = analysis.detect_shifted(analyzer, str(path), [-5, 0, 4])
  found = {r["injected"]: r["offset_frames"] for r in results}
  detail = [(r["injected"], r["offset_frames"], round(r["confidence"], 3)) for r in results]
  # GRID recordings are not all perfectly in sync (this one reads as audio 1 frame late
  # before any shift), so the unshifted estimate may be off by one frame; every injected
  # shift must then move the estimate by exactly that shift.
  assert abs(found[0]) <= 1, detail
  assert found[-5] - found[0] == -5 and found[4] - found[0] == 4, detail
  assert all(r["confidence"] > 0 for r in results), detail


# --------------------------------------------------------------------------------------
# The default detector (faces_v2): many speakers, landmark crops.
# --------------------------------------------------------------------------------------
FACES = detectors.WEIGHTS / "faces_v2"


def test_default_detector_is_the_multi_speaker_model():
  assert detectors.DEFAULT_MODEL == FACES and (FACES / "model.json").is_file()
  _, _, meta = checkpoints.load_model(FACES)
  assert input_spec.from_model_meta(meta).crop.method == "landmarks"
  card = (FACES / "MODEL_CARD.md").read_text()
  for words in ("LRC-AR", "licence", "research", "real_clips"):
    assert words in card


@pytest.mark.slow
def test_default_detector_finds_a_shift_on_a_person_it_never_saw(real_clips_dir):
  """A VoxCeleb2 clip: real_clips is never trained on. Shifts are checked relative to the
  clip's own unshifted estimate (the recording itself need not be perfectly in sync)."""
  analyzer = analysis.Analyzer(detector=detectors.load_detector(FACES, chunk=128))
  path = real_clips_dir / "vox2_crop" / "00015.mp4"
  results = analysis.detect_shifted(analyzer, str(path), [-5, 0, 4])
  found = {r["injected"]: r["offset_frames"] for r in results}
  detail = [(r["injected"], r["offset_frames"], round(r["confidence"], 3)) for r in results]
  assert abs(found[0]) <= 1, detail
  assert found[-5] - found[0] == -5 and found[4] - found[0] == 4, detail


# Clips the analysis refused before (issue 37), each for another reason: a face-following
# crop whose moving background read as cuts, speech loud throughout (no quiet floor), a
# 1.40 s clip whose every shift left less than 35 frames of overlap, a 1.16 s word clip.
ONCE_REFUSED = ["lrs2_crop/00009.mp4", "vox2_crop/681100216.mp4", "lrs2_crop/00002.mp4",
                "raw/lrw_word_sample1.mp4"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ONCE_REFUSED)
def test_default_detector_answers_clips_once_refused(real_clips_dir, name):
  analyzer = analysis.Analyzer(detector=detectors.load_detector(FACES, chunk=128))
  results = analysis.detect_shifted(analyzer, str(real_clips_dir / name), [-5, 0, 4])
  found = {r["injected"]: r["offset_frames"] for r in results}
  assert found[-5] - found[0] == -5 and found[4] - found[0] == 4, found
