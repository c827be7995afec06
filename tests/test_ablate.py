"""The ablation CLI end to end at micro scale: every row trained, evaluated, tabled, plotted."""
import json
import math

import pytest

from modeformer_jax import ablate


@pytest.mark.slow
def test_ablation_runs_end_to_end_and_resumes(mock_prepared_dir, tmp_path, capsys):
  out = tmp_path / "ablate"
  argv = ["--config", "configs/synthetic.py:variant=micro,runlocal=True,steps=4",
          "--data_dir", str(mock_prepared_dir), "--num_hard", "1,2", "--windows_per_step", "48",
          "--extras", "syncnet3d,stage2", "--eval_split", "test", "--max_clips", "2",
          "--out", str(out)]
  ablate.main(argv)
  rows = json.loads((out / "results.json").read_text())
  names = [r["name"] for r in rows]
  assert len(rows) == 4, names
  assert [r["num_hard"] for r in rows] == [1, 2, 1, 1]
  # A fixed number of audio windows per step: more hard negatives, fewer clips.
  assert rows[0]["batch_size"] > rows[1]["batch_size"]
  assert all(r["batch_size"] * (1 + r["num_hard"]) <= 48 for r in rows)
  assert names[2].startswith("3D-SyncNet") and "stage 2" in names[3]
  for r in rows:
    assert r["steps"] == 4 and r["num_clips"] == 2 and r["train_seconds"] > 0
    assert set(r["accuracy"]) == {"5", "7", "9", "11", "13", "15"}
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in r["accuracy"].values())
  table = (out / "table.md").read_text()
  assert all(n in table for n in names) and "15 frames" in table
  assert (out / "accuracy_vs_num_hard.png").stat().st_size > 0
  # Started again, every run resumes finished: same accuracies, and the reported training
  # time is the accumulated cost, not the seconds of the second invocation.
  capsys.readouterr()
  ablate.main(argv)
  again = json.loads((out / "results.json").read_text())
  for a, b in zip(rows, again):
    assert a["accuracy"] == b["accuracy"]
    assert b["train_seconds"] >= a["train_seconds"]


@pytest.mark.slow
def test_memory_budget_picks_the_batch_with_the_planner(tmp_path, monkeypatch):
  """--memory_per_device: the planner's largest fitting batch is each run's batch.

  Only the batch choice is under test, so the runs are stubbed (training and evaluation
  are covered above); the planner compiles the micro step for B=8 and B=16.
  """
  runs = []

  def run_one(config, workdir, eval_split, max_clips, name):
    runs.append((int(config.batch_size), int(config.num_hard)))
    return {"name": name, "batch_size": int(config.batch_size),
            "num_hard": int(config.num_hard), "accuracy": {5: 0.5, 15: 0.75}}

  monkeypatch.setattr(ablate, "run_one", run_one)
  argv = ["--config", "configs/synthetic.py:variant=micro,runlocal=True,steps=1",
          "--num_hard", "1", "--eval_split", "test"]
  # 8 devices: the search measures B=8 and B=16 (capped by --max_batch); both fit 1 GiB.
  ablate.main(argv + ["--memory_per_device", "1GiB", "--max_batch", "16",
                      "--out", str(tmp_path / "fits")])
  assert runs == [(16, 1)]
  assert json.loads((tmp_path / "fits" / "results.json").read_text())[0]["batch_size"] == 16
  with pytest.raises(ValueError, match="not even a batch of 8"):
    ablate.main(argv + ["--memory_per_device", "1MiB", "--out", str(tmp_path / "none")])
  assert len(runs) == 1


@pytest.mark.slow
def test_fixed_batch_grid_with_the_cached_step(mock_prepared_dir, tmp_path):
  """--batch_size with --config.microbatch: the paper's grid (one B for every N_H) trained
  with the cached two-pass step, each run's config saying so; the batches go through
  train.py's loop in host memory (--config.host_inputs)."""
  out = tmp_path / "grid"
  ablate.main(["--config", "configs/synthetic.py:variant=micro,runlocal=True,steps=2",
               "--config.microbatch=1", "--config.host_inputs=True",
               "--data_dir", str(mock_prepared_dir),
               "--num_hard", "1,3", "--batch_size", "16", "--eval_split", "test",
               "--max_clips", "2", "--out", str(out)])
  rows = json.loads((out / "results.json").read_text())
  assert [(r["batch_size"], r["num_hard"]) for r in rows] == [(16, 1), (16, 3)]
  for r, nh in zip(rows, (1, 3)):
    assert r["steps"] == 2
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in r["accuracy"].values())
    saved = json.loads((out / f"nh{nh}" / "config.json").read_text())
    assert saved["microbatch"] == 1 and saved["batch_size"] == 16 and saved["host_inputs"]
  with pytest.raises(ValueError, match="does not divide by 8 devices"):
    ablate.main(["--config", "configs/synthetic.py:variant=micro,runlocal=True,steps=1",
                 "--num_hard", "1", "--batch_size", "12", "--out", str(tmp_path / "bad")])
