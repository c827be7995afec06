"""Train CLI: a real few-step run, exact resume after kill -9, NaN handling, config checks."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.synthetic import get_config
from modeformer_jax import checkpoints, train

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(prepared_dir, steps=6):
  c = get_config(f"variant=micro,steps={steps},runlocal")
  c.data.dir = str(prepared_dir)
  c.checkpoint_every = 2
  return c


def _params(workdir, which="latest"):
  _, params, meta = checkpoints.load_params(workdir, which=which)
  return params, meta


def test_train_runs_and_writes_everything(prepared_dir, tmp_path):
  out = train.train_and_evaluate(_config(prepared_dir, steps=4), str(tmp_path), progress=False)
  assert out["step"] == 4 and 0.0 <= out["val_acc5"] <= 1.0
  hist = train.read_history(tmp_path)
  assert {"loss", "lr", "examples_per_s", "val_acc5", "pos_sim"} <= set(hist)
  assert all(np.isfinite(v) for _, v in hist["loss"])
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  params, meta = _params(tmp_path)
  assert meta["step"] == 4
  # Nothing pickled: orbax writes array stores and JSON only.
  for f in (tmp_path / "checkpoints").rglob("*"):
    if f.is_file():
      assert not f.read_bytes()[:2] == b"\x80\x04", f


def test_resume_equals_uninterrupted(prepared_dir, tmp_path):
  full = tmp_path / "full"
  train.train_and_evaluate(_config(prepared_dir, steps=6), str(full), progress=False)
  part = tmp_path / "part"
  train.train_and_evaluate(_config(prepared_dir, steps=4), str(part), progress=False)
  # Same run continued to 6 steps: restores params, optimizer, step and data position.
  train.train_and_evaluate(_config(prepared_dir, steps=6), str(part), progress=False)
  a, _ = _params(full)
  b, _ = _params(part)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  la = dict(train.read_history(full)["loss"])
  lb = dict(train.read_history(part)["loss"])
  assert la[6] == pytest.approx(lb[6], rel=1e-5)


@pytest.mark.slow
def test_kill_9_then_resume_matches(prepared_dir, tmp_path):
  """A subprocess is SIGKILLed after its first checkpoint; the rerun ends where a clean run does."""
  steps = 8
  args = [sys.executable, "-m", "modeformer_jax.train",
          f"--config={REPO}/configs/synthetic.py:variant=micro,steps={steps},runlocal",
          f"--config.data.dir={prepared_dir}", "--config.checkpoint_every=2", "--no_progress"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  killed = tmp_path / "killed"
  p = subprocess.Popen(args + [f"--workdir={killed}"], cwd=REPO, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while time.time() < deadline and p.poll() is None:
    done = [d for d in (killed / "checkpoints").glob("*") if d.name.isdigit()]
    if done:
      break
    time.sleep(0.2)
  assert p.poll() is None, "training finished before it could be killed"
  p.send_signal(signal.SIGKILL)
  p.wait()
  subprocess.run(args + [f"--workdir={killed}"], cwd=REPO, env=env, check=True,
                 capture_output=True)
  clean = tmp_path / "clean"
  subprocess.run(args + [f"--workdir={clean}"], cwd=REPO, env=env, check=True,
                 capture_output=True)
  a, ma = _params(killed)
  b, mb = _params(clean)
  assert ma["step"] == mb["step"] == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_nonfinite_loss_stops_and_keeps_last_good(prepared_dir, tmp_path):
  c = _config(prepared_dir, steps=4)
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  good, _ = _params(tmp_path)
  c = _config(prepared_dir, steps=8)
  c.optim.lr = float("nan")  # NaN updates: step 5 makes NaN params, step 6 a NaN loss
  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint"):
    train.train_and_evaluate(c, str(tmp_path), progress=False)
  after, meta = _params(tmp_path)
  assert meta["step"] == 4
  for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_from_other_model_is_a_clear_error(prepared_dir, tmp_path):
  train.train_and_evaluate(_config(prepared_dir, steps=2), str(tmp_path), progress=False)
  c = _config(prepared_dir, steps=4)
  c.model.width = 64
  with pytest.raises(checkpoints.CheckpointMismatchError, match="width"):
    train.train_and_evaluate(c, str(tmp_path), progress=False)


def test_init_from_loads_stage1_params(prepared_dir, tmp_path):
  s1 = tmp_path / "s1"
  train.train_and_evaluate(_config(prepared_dir, steps=2), str(s1), progress=False)
  c = _config(prepared_dir, steps=1)
  c.init_from = str(s1)
  c.optim.lr = 0.0
  train.train_and_evaluate(c, str(tmp_path / "s2"), progress=False)
  a, _ = _params(s1)
  b, _ = _params(tmp_path / "s2")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=0)
