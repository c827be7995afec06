"""Fine-tuning on a user's own folder of videos: prepare ../shared/data/real_clips, train a few steps."""
import json

import numpy as np
import pytest

from modeformer_jax import train
from modeformer_jax.training import config_utils
from data_prep import prepare

pytestmark = pytest.mark.slow   # prepares and trains on real clips


def test_prepare_and_train_on_real_clips(real_clips_dir, tmp_path):
  out = tmp_path / "prepared"
  report = prepare.prepare("raw", str(real_clips_dir), str(out), workers=2, progress=False)
  n_inputs = len([p for p in real_clips_dir.rglob("*") if p.suffix in (".mp4", ".mov", ".avi")])
  assert report["inputs"] == n_inputs
  assert report["written"] + sum(report["skipped"].values()) == n_inputs
  # The 0.9 s LRS2 clip and the 1.2 s LRW word clips are too short for the +-15 protocol.
  assert report["skipped"].get("too_short", 0) >= 1
  assert report["written"] >= 8
  c = config_utils.load_config(config_utils.config_file("synthetic.py") + ":variant=micro,steps=3,runlocal")
  c.data.dir = str(out)
  c.data.val_split = "val"  # absent in this folder: validation is skipped with a warning
  final = train.train_and_evaluate(c, str(tmp_path / "run"), progress=False)
  assert final["step"] == 3
  hist = train.read_history(tmp_path / "run")
  assert hist["loss"] and all(np.isfinite(v) for _, v in hist["loss"])
  assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["num_clips"] >= 8
