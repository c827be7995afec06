"""A tiny model trained inside the test detects injected audio shifts on unseen speakers.

This is the issue's acceptance check for offset detection: train the tiny config briefly
on a small synthetic dataset, then shift the audio of held-out test-speaker clips by
-7..+7 frames (through ``features.extract_clip``, the code the detect CLI uses) and count
exact detections. An untrained model scores about 1/31 here, so the test can fail.
"""
import pathlib

import jax
import numpy as np
import pytest

from modeformer_jax import analysis, detect, train
from modeformer_jax.analysis import detectors
from modeformer_jax.data import records
from modeformer_jax.media import features
from modeformer_jax.model import checkpoints, input_spec

pytestmark = pytest.mark.slow   # trains a tiny model first (~4 min)

STEPS = 150
SHIFTS = list(range(-7, 8))
# The LRS2 window, passed explicitly: it must reach inference through the checkpoint
# (issue 13, bug 1; test_eval_detect checks a non-default box without training). A
# looser box (0.35, 0.74, 0.13, 0.87) made this 150-step model miss by one frame on a
# quarter of the shifts, so the detection threshold below assumes the standard window.
CROP_BOX = (0.37, 0.72, 0.15, 0.85)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(synthetic dataset, training workdir) of a briefly trained tiny model."""
  from modeformer_jax.training import config_utils
  from data_prep import prepare, synthetic
  src = tmp_path_factory.mktemp("det_synthetic")
  synthetic.generate_dataset(src, num_speakers=16, num_test_speakers=2, num_val_speakers=1,
                             clips_per_speaker=4, min_seconds=3.0, max_seconds=3.5, seed=1,
                             workers=2, progress=False)
  prepared = tmp_path_factory.mktemp("det_prepared")
  prepare.prepare("lrs2", str(src), str(prepared), workers=2, progress=False,
                  crop_box=CROP_BOX)
  # The demo's settings (batch 32, 4 hard negatives, lr 1e-3 cosine), just shorter: a
  # 100-step constant-rate run already detected 30/30 here; the cosine tail makes it steadier.
  config = config_utils.load_config(config_utils.config_file("synthetic.py") + f":steps={STEPS},batch=32,num_hard=4")
  config.data.dir = str(prepared)
  config.data.workers = 0
  config.data.val_clips = 4
  config.optim.warmup_steps = 10
  config.log_every, config.eval_every, config.checkpoint_every = 50, 10 ** 6, STEPS
  workdir = tmp_path_factory.mktemp("det_run")
  train.train_and_evaluate(config, str(workdir), progress=False)
  return src, workdir


def test_trained_tiny_model_detects_injected_shifts(trained):
  src, workdir = trained
  analyzer = analysis.Analyzer(detector=detectors.load_detector(str(workdir), which="latest"))
  test_ids = (src / "test.txt").read_text().split()
  assert len(test_ids) == 8  # 2 unseen speakers x 4 clips
  rows = []
  for clip_id in test_ids:
    path = src / "mvlrs_v1" / "main" / f"{clip_id}.mp4"
    for r in analysis.detect_shifted(analyzer, str(path), SHIFTS):
      rows.append((clip_id, r["injected"], r["offset_frames"]))
  exact = np.mean([k == d for _, k, d in rows])
  misses = [(c, k, d) for c, k, d in rows if k != d]
  assert exact >= 0.9, f"exact {exact:.0%} of {len(rows)}; misses (clip, injected, detected): {misses}"


def test_export_cli_records_step_card_and_training_layout(trained, tmp_path):
  from modeformer_jax import export
  _, workdir = trained
  out = tmp_path / "exported"
  export.main(["--checkpoint", str(workdir), "--which", "latest", "--out", str(out),
               "--set", "trained_on=synthetic test speakers", "--set", "note=[1, 2]"])
  model, params, meta = checkpoints.load_model(out)
  assert meta["step"] == STEPS and meta["trained_on"] == "synthetic test speakers"
  assert meta["note"] == [1, 2]  # JSON-parsed
  assert input_spec.from_model_meta(meta).crop == input_spec.CropSpec("box", CROP_BOX)
  _, ref, _ = checkpoints.load_model(str(workdir), which="latest")
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_detect_crops_exactly_as_the_training_data(trained, tmp_path, capsys):
  """Regression (issue 13, bug 1): detect --layout auto used the frame's lower half for
  models trained on face crops, and a prepare --crop_box never reached inference."""
  src, workdir = trained
  import json
  data_dir = json.loads((workdir / "config.json").read_text())["data"]["dir"]
  rec = records.decode_record(records.open_split(data_dir, "test")[0])
  path = src / rec["source"]
  _, _, meta = checkpoints.load_model(str(workdir), which="latest")
  spec = input_spec.from_model_meta(meta)
  assert spec.to_dict() == input_spec.read_dataset_spec(data_dir)
  crop = detectors.resolve_crop(spec, "auto")
  ours = features.extract_clip(str(path), crop).lips.astype(np.float32)
  stored = records.decode_lips(rec, 0, int(rec["num_frames"])).astype(np.float32)
  lower_half = features.extract_clip(str(path), input_spec.crop_for_layout("crop")).lips
  assert np.abs(ours - stored).mean() < 3          # JPEG noise only
  assert np.abs(lower_half.astype(np.float32) - stored).mean() > 10
  # The CLI picks the same crop: its result equals the library's with that crop.
  detect.main([str(path), "--checkpoint", str(workdir), "--out", str(tmp_path), "--json"])
  (r,) = json.loads(capsys.readouterr().out)
  assert r["crop"] == {"method": "box", "box": list(CROP_BOX)}
