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

from modeformer_jax import checkpoints, detect, evaluation, train

STEPS = 150
SHIFTS = list(range(-7, 8))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
  """(synthetic dataset, training workdir) of a briefly trained tiny model."""
  from configs.synthetic import get_config
  from data_prep import prepare, synthetic
  src = tmp_path_factory.mktemp("det_synthetic")
  synthetic.generate_dataset(src, num_speakers=16, num_test_speakers=2, num_val_speakers=1,
                             clips_per_speaker=4, min_seconds=3.0, max_seconds=3.5, seed=1,
                             workers=2, progress=False)
  prepared = tmp_path_factory.mktemp("det_prepared")
  prepare.prepare("lrs2", str(src), str(prepared), workers=2, progress=False)
  # The demo's settings (batch 32, 4 hard negatives, lr 1e-3 cosine), just shorter: a
  # 100-step constant-rate run already detected 30/30 here; the cosine tail makes it steadier.
  config = get_config(f"steps={STEPS},batch=32,num_hard=4")
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
  model, params, _ = checkpoints.load_params(str(workdir), which="latest")
  embedder = evaluation.Embedder(model, params, chunk=128)
  test_ids = (src / "test.txt").read_text().split()
  assert len(test_ids) == 8  # 2 unseen speakers x 4 clips
  rows = []
  for clip_id in test_ids:
    path = src / "mvlrs_v1" / "main" / f"{clip_id}.mp4"
    for r in detect.detect_shifted(embedder, str(path), SHIFTS, layout="lrs2"):
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
  model, params, meta = checkpoints.load_params(out)
  assert meta["step"] == STEPS and meta["trained_on"] == "synthetic test speakers"
  assert meta["note"] == [1, 2]  # JSON-parsed
  # The synthetic data was prepared with the LRS2 crop layout; detect's 'auto' therefore
  # guesses from the frame size instead of forcing face detection.
  assert meta["input_layout"] == "lrs2"
  assert detect.trained_layout(out, meta) == "lrs2"
  assert detect.trained_layout(workdir, {}) == "lrs2"  # read from the workdir's manifest
  _, ref, _ = checkpoints.load_params(str(workdir), which="latest")
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resolve_layout(trained):
  src, _ = trained
  clip = next((src / "mvlrs_v1" / "main").rglob("*.mp4"))
  assert detect.resolve_layout(str(clip), "raw", "lrs2") == "raw"  # explicit wins
  assert detect.resolve_layout(str(clip), "auto", "raw") == "raw"  # model trained on faces
  assert detect.resolve_layout(str(clip), "auto", None) == detect.guess_layout(str(clip))
