"""Train CLI: a real few-step run, exact resume after kill -9, NaN handling, config checks,
fine-tuning with a learned temperature, and two processes through the CLI."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import _multihost_worker as worker
import jax
import numpy as np
import pytest

from modeformer_jax import errors, train
from modeformer_jax.model import checkpoints, input_spec
from modeformer_jax.training import config_utils, mesh as mesh_lib

pytestmark = pytest.mark.slow   # training runs (minutes on 2 cores)

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(mock_prepared_dir, steps=6):
  c = config_utils.load_config(config_utils.config_file("synthetic.py") + f":variant=micro,steps={steps},runlocal")
  c.data.dir = str(mock_prepared_dir)
  c.checkpoint_every = 2
  return c


def _params(workdir, which="latest"):
  _, params, meta = checkpoints.load_model(workdir, which=which)
  return params, meta


def test_train_runs_and_writes_everything(mock_prepared_dir, tmp_path):
  out = train.train_and_evaluate(_config(mock_prepared_dir, steps=4), str(tmp_path), progress=False)
  assert out["step"] == 4 and 0.0 <= out["val_acc5"] <= 1.0
  hist = train.read_history(tmp_path)
  assert {"loss", "lr", "examples_per_s", "val_acc5", "pos_sim"} <= set(hist)
  assert all(np.isfinite(v) for _, v in hist["loss"])
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  params, meta = _params(tmp_path)
  assert meta["step"] == 4
  # Every checkpoint says what input the model was trained on.
  assert meta["input_spec"] == input_spec.read_dataset_spec(mock_prepared_dir)
  # Nothing pickled: orbax writes array stores and JSON only.
  for f in (tmp_path / "checkpoints").rglob("*"):
    if f.is_file():
      assert not f.read_bytes()[:2] == b"\x80\x04", f


def test_resume_equals_uninterrupted(mock_prepared_dir, tmp_path):
  full = tmp_path / "full"
  train.train_and_evaluate(_config(mock_prepared_dir, steps=6), str(full), progress=False)
  part = tmp_path / "part"
  train.train_and_evaluate(_config(mock_prepared_dir, steps=4), str(part), progress=False)
  # Same run continued to 6 steps: restores params, optimizer, step and data position.
  train.train_and_evaluate(_config(mock_prepared_dir, steps=6), str(part), progress=False)
  a, _ = _params(full)
  b, _ = _params(part)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  la = dict(train.read_history(full)["loss"])
  lb = dict(train.read_history(part)["loss"])
  assert la[6] == pytest.approx(lb[6], rel=1e-5)


@pytest.mark.slow
def test_kill_9_then_resume_matches(mock_prepared_dir, tmp_path):
  """A subprocess is SIGKILLed after its first checkpoint; the rerun ends where a clean run does."""
  steps = 8
  args = [sys.executable, "-m", "modeformer_jax.train",
          f"--config={REPO}/configs/synthetic.py:variant=micro,steps={steps},runlocal",
          f"--config.data.dir={mock_prepared_dir}", "--config.checkpoint_every=2", "--no_progress"]
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


def test_nonfinite_loss_stops_and_keeps_last_good(mock_prepared_dir, tmp_path):
  c = _config(mock_prepared_dir, steps=4)
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  good, _ = _params(tmp_path)
  c = _config(mock_prepared_dir, steps=8)
  c.optim.lr = float("nan")  # NaN updates: step 5 makes NaN params, step 6 a NaN loss
  # Losses are checked at log steps (every 2), so the error names the window 5-6.
  with pytest.raises(errors.NonFiniteLossError,
                     match=r"steps 5-6; stopping\. The last good checkpoint is .*checkpoints/4"):
    train.train_and_evaluate(c, str(tmp_path), progress=False)
  after, meta = _params(tmp_path)
  assert meta["step"] == 4
  for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_from_other_model_or_input_is_a_clear_error(mock_prepared_dir, tmp_path,
                                                               monkeypatch):
  train.train_and_evaluate(_config(mock_prepared_dir, steps=2), str(tmp_path), progress=False)
  c = _config(mock_prepared_dir, steps=4)
  c.model.width = 64
  with pytest.raises(errors.CheckpointMismatchError, match="width"):
    train.train_and_evaluate(c, str(tmp_path), progress=False)
  # Resuming on data prepared with other features (here: another frame rate).
  spec = dict(input_spec.read_dataset_spec(mock_prepared_dir), fps=30)
  monkeypatch.setattr(input_spec, "read_dataset_spec", lambda d: spec)
  with pytest.raises(errors.CheckpointMismatchError, match="trained on input"):
    train.train_and_evaluate(_config(mock_prepared_dir, steps=4), str(tmp_path), progress=False)


def test_init_from_loads_stage1_towers_and_a_fresh_temperature(mock_prepared_dir, tmp_path):
  """learn_tau + init_from: the towers come from stage 1, tau restarts at config.loss.tau."""
  s1, s2 = tmp_path / "s1", tmp_path / "s2"
  c = _config(mock_prepared_dir, steps=2)
  c.loss.learn_tau, c.eval_every = True, 0   # stage 1's checkpoint holds a learned log_tau
  train.train_and_evaluate(c, str(s1), progress=False)
  c = _config(mock_prepared_dir, steps=1)
  c.init_from, c.loss.learn_tau, c.eval_every, c.optim.lr = str(s1), True, 0, 0.0
  train.train_and_evaluate(c, str(s2), progress=False)
  a, _ = _params(s1)
  b, _ = _params(s2)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Stage 1 moved its tau off 0.1 (Adam, lr 1e-3); stage 2's first step used 0.1 again.
  assert dict(train.read_history(s1)["tau"])[2] != pytest.approx(0.1, rel=1e-6)
  assert dict(train.read_history(s2)["tau"])[1] == pytest.approx(0.1, rel=1e-6)


def test_metrics_are_read_only_at_log_and_checkpoint_steps(mock_prepared_dir, tmp_path,
                                                           monkeypatch):
  """No per-step host sync: the summed metrics are fetched once per log/checkpoint step
  (steps 2 and 4 of 4). Off CPU the transfer guard also forbids any implicit read such
  as ``float(metrics['loss'])``; CPU reads are zero-copy and pass the guard."""
  c = _config(mock_prepared_dir, steps=4)
  c.log_every, c.checkpoint_every, c.eval_every = 2, 4, 0
  reads = []
  device_get = jax.device_get

  def spy(x):
    if isinstance(x, dict) and "loss" in x:
      reads.append(sorted(x))
    return device_get(x)

  monkeypatch.setattr(jax, "device_get", spy)
  with jax.transfer_guard_device_to_host("disallow"):
    out = train.train_and_evaluate(c, str(tmp_path), progress=False)
  assert out["step"] == 4 and len(reads) == 2
  assert [s for s, _ in train.read_history(tmp_path)["loss"]] == [2, 4]


# ------------------------------------------------------------------ multi-process
@pytest.mark.parametrize("env, want", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, None),     # a stray address alone: one process
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "1",
      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
      "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, {}),   # jax reads the rest itself
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, {}),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
])
def test_distributed_starts_only_for_several_processes(env, want):
  assert mesh_lib.distributed_args(env=env) == want


def test_distributed_flags():
  assert mesh_lib.distributed_args("h:1", 1, 0, env={}) is None
  assert mesh_lib.distributed_args("h:1", 2, 0, env={}) == {
      "coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
  assert mesh_lib.distributed_args("h:1", 2, 0, mode="off", env={}) is None
  assert mesh_lib.distributed_args(mode="on", env={}) == {}
  with pytest.raises(ValueError, match="process_id"):
    mesh_lib.distributed_args("h:1", 2, env={})


@pytest.mark.slow
def test_two_processes_through_the_cli_match_one(mock_prepared_dir, tmp_path):
  """``python -m modeformer_jax.train`` on 2 processes x 2 CPU devices == 1 process x 8."""
  steps = 2
  work = tmp_path / "two"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  args = [sys.executable, "-m", "modeformer_jax.train",
          f"--config={REPO}/configs/synthetic.py:variant=micro,steps={steps},runlocal",
          f"--config.data.dir={mock_prepared_dir}", "--config.eval_every=0", "--no_progress",
          f"--workdir={work}", f"--coordinator_address=127.0.0.1:{worker.free_port()}",
          "--num_processes=2"]

  c = _config(mock_prepared_dir, steps=steps)
  c.eval_every = 0
  # The same run in this process (8 devices), while the two processes work.
  one, logs = worker.run_processes(
      [args + [f"--process_id={i}"] for i in range(2)],
      lambda: train.train_and_evaluate(c, str(tmp_path / "one"), progress=False),
      cwd=REPO, env=env)
  finished = []
  for i, text in enumerate(logs):
    assert f"process {i} of 2" in text, text[-3000:]
    m = re.search(rf"finished \(process {i}\): (.*)", text)
    assert m, text[-3000:]
    finished.append(json.loads(m.group(1)))
  # Both processes hold the same replicated result, and it is the one-process result.
  assert finished[0] == finished[1]
  assert finished[0]["step"] == steps
  assert finished[0]["loss"] == pytest.approx(one["loss"], rel=1e-5)
  # Process 0 alone wrote the logs: one TensorBoard writer, metrics at the log step.
  assert len(list((work / "tensorboard").glob("events.out.tfevents.*"))) == 1
  got, want = train.read_history(work), train.read_history(tmp_path / "one")
  for k in ("loss", "pos_sim", "neg_sim", "accuracy", "grad_norm", "tau"):
    assert [s for s, _ in got[k]] == [steps], k
    assert got[k][0][1] == pytest.approx(want[k][0][1], rel=1e-4), k
  # The checkpoint (both processes took part) restores in one process. Adam turns the
  # rounding noise of zero-in-theory gradients (conv biases before GroupNorm) into
  # updates of up to ~lr, so parameters agree to lr; the metrics above pin the gradients.
  a, meta = _params(work)
  b, _ = _params(tmp_path / "one")
  assert meta["step"] == steps and meta["input_spec"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=c.optim.lr)
