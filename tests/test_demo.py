"""The README's main job, shortened: generate -> prepare -> train a few steps -> eval -> detect."""
import json

import pytest

from modeformer_jax import demo

pytestmark = pytest.mark.slow   # the quick demo end to end (~1 min)


def test_quick_demo_end_to_end(tmp_path):
  summary = demo.run(str(tmp_path), quick=True, variant="micro")
  assert summary["steps"] == 4
  assert set(summary["accuracy"]) == {"5", "7", "9", "11", "13", "15"}
  assert all(0.0 <= v <= 1.0 for v in summary["accuracy"].values())
  assert summary["test_clips"] > 0
  for png in ("training_curve.png", "accuracy_by_length.png", "offset_example.png",
              "offset_error_histogram.png"):
    assert (tmp_path / png).stat().st_size > 1000, png
  assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 4
  assert (tmp_path / "eval_test" / "results.json").exists()
  # Running it again reuses the data and the finished run.
  again = demo.run(str(tmp_path), quick=True, variant="micro")
  assert again["accuracy"] == summary["accuracy"]
