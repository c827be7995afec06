"""The sharded train step: sharded == single device, B=2000, multi-host, no retrace, planner.

Tolerances: sharded vs single-device loss rtol 1e-5; gradients rtol 1e-4 with atol 1e-5 of
the largest gradient entry (f32; only the summation order differs between the two).
"""
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from modeformer_jax import plan
from modeformer_jax.model import losses
from modeformer_jax.model.models import ModEFormer
from modeformer_jax.training import config_utils, mesh as mesh_lib, train_step as ts

REPO = pathlib.Path(__file__).resolve().parents[1]
LOSS = {"tau": 0.1, "learn_tau": False, "easy_negatives": True, "tolerance": 1}


def micro(**overrides) -> ModEFormer:
  return ModEFormer(dict(config_utils.model_config("micro"), **overrides))


def reference_loss(model, params, batch, loss_cfg):
  """Single device, no mesh, no shard_map: both towers on the whole batch, then the loss."""
  b, a = batch["audio"].shape[:2]
  v, _ = model.apply_video(params["video"], batch["video"], train=True)
  au, _ = model.apply_audio(params["audio"], batch["audio"].reshape(b * a, 80, 16), train=True)
  return losses.info_nce(v, au.reshape(b, a, -1), video_clip=batch["clip"],
                         video_time=batch["video_time"], audio_clip=batch["clip"],
                         audio_time=batch["audio_time"],
                         scale=losses.logit_scale(params, loss_cfg),
                         easy_negatives=loss_cfg["easy_negatives"],
                         tolerance=loss_cfg["tolerance"])


def assert_trees_close(got, want, rtol=1e-4, atol_frac=1e-5):
  scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(want))
  jax.tree.map(lambda g, w: np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol,
                                                       atol=atol_frac * scale), got, want)


# ------------------------------------------------------------------ optimizer
def test_schedules():
  const = ts.make_schedule({"lr": 1e-4, "schedule": "constant"})
  assert float(const(0)) == pytest.approx(1e-4) and float(const(10**6)) == pytest.approx(1e-4)
  warm = ts.make_schedule({"lr": 1e-3, "schedule": "cosine", "warmup_steps": 10,
                           "total_steps": 110})
  assert float(warm(0)) == 0.0
  assert float(warm(5)) == pytest.approx(5e-4)
  assert float(warm(10)) == pytest.approx(1e-3)
  assert float(warm(60)) == pytest.approx(5e-4, rel=1e-4)   # half-way down the cosine
  assert float(warm(110)) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ValueError, match="total_steps"):
    ts.make_schedule({"schedule": "cosine", "warmup_steps": 10, "total_steps": 10})
  with pytest.raises(ValueError, match="schedule"):
    ts.make_schedule({"schedule": "linear"})


def test_optimizer_clips_and_decays():
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  grads = {"w": jnp.full((2, 2), 100.0), "b": jnp.zeros((2,))}
  for clip, want_mu in ((1.0, 0.1 * 0.5), (0.0, 0.1 * 100.0)):
    tx, _ = ts.make_optimizer({"lr": 0.1, "grad_clip": clip})
    upd, st = tx.update(grads, tx.init(params), params)
    # Adam's first moment sees the clipped gradient: global norm 200 -> 1, i.e. 0.5 each.
    mu = optax.tree_utils.tree_get(st, "mu")
    np.testing.assert_allclose(np.asarray(mu["w"]), want_mu, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["w"]), -0.1, rtol=1e-4)  # Adam's first step
    np.testing.assert_allclose(np.asarray(upd["b"]), 0.0)
  txw, _ = ts.make_optimizer({"lr": 0.1, "grad_clip": 0.0, "weight_decay": 0.5})
  upd, _ = txw.update({"w": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}, txw.init(params), params)
  # Decay only touches matrices.
  np.testing.assert_allclose(np.asarray(upd["w"]), -0.1 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(upd["b"]), 0.0)


# ------------------------------------------------------------------ sharded == single device
@pytest.fixture(scope="module")
def params():
  """Micro-model parameters as host arrays (initialised once; a compile costs ~10 s)."""
  return jax.tree.map(np.asarray, jax.jit(micro().init)(jax.random.key(0)))


def fresh_state(params, tx, mesh, **extra_params):
  """A replicated state on ``mesh`` with buffers of its own (the step donates them).

  Every leaf is placed on the mesh, as ``jit(create_train_state, out_shardings=...)``
  does; a leaf left on a single device would have another type and cost one retrace.
  """
  p = dict(jax.tree.map(np.array, params), **extra_params)
  return jax.device_put({"params": p, "opt_state": tx.init(p),
                         "step": np.zeros((), np.int32)}, mesh_lib.replicated(mesh))


# Stage-2-like: 16 entries from 4 clips at nearby times, so the mask is exercised.
BATCH16 = dict(batch_size=16, num_hard=2, seed=3, num_clips=4, max_time=24)


@pytest.fixture(scope="module")
def reference16(params):
  """Single-device (no mesh, no shard_map) loss, metrics and gradients on BATCH16."""
  model, batch = micro(), ts.random_batch(**BATCH16)
  (loss, m), grads = jax.jit(jax.value_and_grad(
      lambda p: reference_loss(model, p, batch, LOSS), has_aux=True))(params)
  return loss, m, grads


def _check_sharded(model, params, loss_cfg, want_loss, want_m, want_grads):
  batch = ts.random_batch(**BATCH16)
  mesh8 = mesh_lib.make_mesh(jax.devices()[:8])
  grads8, m8, _ = jax.jit(ts.make_grad_fn(model, mesh8, loss_cfg))(params, None, batch,
                                                                   jax.random.key(1))
  np.testing.assert_allclose(float(m8["loss"]), float(want_loss), rtol=1e-5)
  for k in ("pos_sim", "neg_sim", "accuracy", "negatives_per_video"):
    np.testing.assert_allclose(float(m8[k]), float(want_m[k]), rtol=1e-5, atol=1e-6, err_msg=k)
  assert_trees_close(grads8, want_grads)
  assert float(optax.global_norm(want_grads)) > 0
  return m8


@pytest.mark.slow
def test_sharded_equals_single_device_easy(params, reference16):
  m8 = _check_sharded(micro(), params, LOSS, *reference16)
  assert float(m8["negatives_per_video"]) < 16 * 3 - 1  # some windows were masked


@pytest.mark.slow
def test_sharded_equals_single_device_hard_only(params):
  model, cfg = micro(), dict(LOSS, easy_negatives=False)
  batch = ts.random_batch(**BATCH16)
  (loss, m), grads = jax.jit(jax.value_and_grad(
      lambda p: reference_loss(model, p, batch, cfg), has_aux=True))(params)
  m8 = _check_sharded(model, params, cfg, loss, m, grads)
  assert float(m8["negatives_per_video"]) == 2.0


@pytest.mark.slow
def test_batchnorm_sharded_equals_single_device():
  """BatchNorm synchronised over 'data' gives the same step on 8 devices as on 1."""
  model = micro(norm="batch", bn_axis_name=mesh_lib.AXIS)
  variables = jax.eval_shape(model.init_variables, jax.random.key(0))
  r = np.random.default_rng(0)
  # Random parameters are enough here and avoid another init compile.
  variables = jax.tree.map(lambda x: (0.3 * r.standard_normal(x.shape)).astype(x.dtype)
                           + (1.0 if x.ndim == 1 else 0.0), variables)
  batch = ts.random_batch(16, 1, seed=4)
  out = {}
  for n in (1, 8):
    fn = jax.jit(ts.make_grad_fn(model, mesh_lib.make_mesh(jax.devices()[:n]), LOSS))
    out[n] = fn(variables["params"], variables["batch_stats"], batch, jax.random.key(1))
  np.testing.assert_allclose(float(out[8][1]["loss"]), float(out[1][1]["loss"]), rtol=1e-5)
  assert_trees_close(out[8][0], out[1][0])
  assert_trees_close(out[8][2], out[1][2])
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         out[8][2], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # the running statistics were updated


# ------------------------------------------------------------------ cached two-pass step
# Tolerance: the cached step against the one-pass step on 4 devices, f32, no dropout, no
# BatchNorm: loss rtol 1e-5; gradients rtol 1e-4 with atol 1e-5 of the largest entry (only
# the summation order differs: per chunk, then summed), as sharded vs single device above.
@pytest.mark.slow
@pytest.mark.parametrize("easy", [True, False], ids=["stage2", "stage1"])
def test_cached_step_equals_one_pass(params, easy):
  model = micro()
  cfg = dict(LOSS, easy_negatives=easy, learn_tau=True)
  p = dict(params, log_tau=np.float32(np.log(0.07)))     # the learned temperature too
  batch = ts.random_batch(**BATCH16)
  mesh4 = mesh_lib.make_mesh(jax.devices()[:4])
  out = {}
  for mb in (0, 2):   # per device 4 entries: 0 = one pass, 2 = two chunks of 2
    fn = jax.jit(ts.make_grad_fn(model, mesh4, cfg, microbatch=mb, with_logits=True))
    out[mb] = fn(p, None, batch, jax.random.key(1))
  # The same with lips and mel in pinned host memory, copied to the chip chunk by chunk.
  placed = mesh_lib.to_global(batch, mesh4, host_inputs=True)
  assert placed["video"].sharding.memory_kind == "pinned_host"
  np.testing.assert_array_equal(np.asarray(placed["video"]).astype(np.uint8), batch["video"])
  assert placed["clip"].sharding.memory_kind != "pinned_host"
  fn = jax.jit(ts.make_grad_fn(model, mesh4, cfg, microbatch=2, with_logits=True,
                               host_inputs=True))
  out["host"] = fn(p, None, placed, jax.random.key(1))
  (g0, m0, _, l0) = out[0]
  for key in (2, "host"):
    g2, m2, _, l2 = out[key]
    np.testing.assert_allclose(float(m2["loss"]), float(m0["loss"]), rtol=1e-5)
    np.testing.assert_array_equal(np.isfinite(np.asarray(l2)), np.isfinite(np.asarray(l0)))
    assert_trees_close(g2, g0)
    assert set(g2) == set(g0)
  assert float(np.abs(g0["log_tau"])) > 0


@pytest.mark.slow
def test_cached_step_dropout_masks_and_errors(params):
  """With dropout the two passes draw the same masks: the cached gradient equals the
  gradient of the loss of embeddings computed with the same per-chunk keys."""
  model = micro(dropout=0.3)
  batch = ts.random_batch(8, 1, seed=5)
  mesh1 = mesh_lib.make_mesh(jax.devices()[:1])
  rng = jax.random.key(7)
  grads, m, _ = jax.jit(ts.make_grad_fn(model, mesh1, LOSS, microbatch=4))(
      params, None, batch, rng)

  def chunked_loss(p):   # the same keys the cached step derives (device 0, 2 chunks)
    rv, ra = jax.random.split(jax.random.fold_in(rng, 0))
    kv, ka = jax.random.split(rv, 2), jax.random.split(ra, 2)
    v = jnp.concatenate([model.apply_video(p["video"], batch["video"][i * 4:(i + 1) * 4],
                                           train=True, rng=kv[i])[0] for i in range(2)])
    mel = batch["audio"].reshape(16, 80, 16)
    au = jnp.concatenate([model.apply_audio(p["audio"], mel[i * 8:(i + 1) * 8], train=True,
                                            rng=ka[i])[0] for i in range(2)])
    return losses.info_nce(v, au.reshape(8, 2, -1), video_clip=batch["clip"],
                           video_time=batch["video_time"], audio_clip=batch["clip"],
                           audio_time=batch["audio_time"], scale=10.0, easy_negatives=True,
                           tolerance=1)[0]
  loss, want = jax.jit(jax.value_and_grad(chunked_loss))(params)
  np.testing.assert_allclose(float(m["loss"]), float(loss), rtol=1e-5)
  assert_trees_close(grads, want)
  one_pass = jax.jit(ts.make_grad_fn(model, mesh1, LOSS))(params, None, batch, rng)
  assert abs(float(one_pass[1]["loss"]) - float(loss)) > 1e-4   # other masks: other loss
  with pytest.raises(ValueError, match="does not divide by microbatch 3"):
    jax.jit(ts.make_grad_fn(model, mesh1, LOSS, microbatch=3))(params, None, batch, rng)


def test_host_inputs_need_the_cached_step():
  with pytest.raises(ValueError, match="host_inputs needs the cached step"):
    ts.make_grad_fn(micro(), mesh_lib.make_mesh(jax.devices()[:1]), LOSS, host_inputs=True)


@pytest.mark.slow
def test_cached_step_batchnorm_statistics_per_chunk():
  model = micro(norm="batch")
  variables = jax.eval_shape(model.init_variables, jax.random.key(0))
  r = np.random.default_rng(0)
  variables = jax.tree.map(lambda x: (0.3 * r.standard_normal(x.shape)).astype(x.dtype)
                           + (1.0 if x.ndim == 1 else 0.0), variables)
  batch = ts.random_batch(8, 1, seed=4)
  mesh1 = mesh_lib.make_mesh(jax.devices()[:1])
  grads, _, stats = jax.jit(ts.make_grad_fn(model, mesh1, LOSS, microbatch=4))(
      variables["params"], variables["batch_stats"], batch, jax.random.key(1))
  # Running statistics: the mean of each chunk's own update.
  halves = []
  for i in range(2):
    part = {k: v[i * 4:(i + 1) * 4] for k, v in batch.items()}
    _, vs = model.apply_video(variables["params"]["video"], part["video"], train=True,
                              batch_stats=variables["batch_stats"]["video"])
    halves.append(vs)
  want = jax.tree.map(lambda a, b: (a + b) / 2, *halves)
  assert_trees_close(stats["video"], want)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(grads))


@pytest.mark.slow
def test_bf16_remat_step_tracks_f32(params, reference16):
  """bfloat16 compute with remat runs through the step and stays near the f32 numbers."""
  want_loss, _, want_grads = reference16
  model16 = micro(dtype="bfloat16", remat=True)
  mesh = mesh_lib.make_mesh(jax.devices()[:8])
  tx, _ = ts.make_optimizer({"lr": 1e-4, "grad_clip": 1.0})
  state, m16 = ts.make_train_step(model16, tx, mesh, LOSS)(
      fresh_state(params, tx, mesh), ts.random_batch(**BATCH16), jax.random.key(1))
  assert np.isfinite(float(m16["loss"]))
  np.testing.assert_allclose(float(m16["loss"]), float(want_loss), rtol=2e-2)
  np.testing.assert_allclose(float(m16["grad_norm"]), float(optax.global_norm(want_grads)),
                             rtol=0.1)
  assert int(state["step"]) == 1


# ------------------------------------------------------------------ the step itself
class CountingModel(ModEFormer):
  """Counts how often the step's Python body runs, i.e. how often it is traced."""
  traces = 0

  def apply_video(self, *args, **kwargs):
    CountingModel.traces += 1
    return super().apply_video(*args, **kwargs)


def test_create_train_state_with_learned_tau():
  model = micro()
  tx, _ = ts.make_optimizer({"lr": 1e-4})
  st = jax.eval_shape(lambda r: ts.create_train_state(model, tx, r, dict(LOSS, learn_tau=True)),
                      jax.random.key(0))
  assert st["params"]["log_tau"].shape == () and set(st) == {"params", "opt_state", "step"}
  assert "log_tau" not in jax.eval_shape(lambda r: ts.create_train_state(model, tx, r, LOSS),
                                         jax.random.key(0))["params"]
  bn = jax.eval_shape(lambda r: ts.create_train_state(micro(norm="batch"), tx, r),
                      jax.random.key(0))
  assert set(bn["batch_stats"]) == {"audio", "video"}


@pytest.mark.slow
def test_step_no_retrace_donation_and_learned_tau(params):
  model = CountingModel(config_utils.model_config("micro"))
  loss_cfg = dict(LOSS, learn_tau=True)
  tx, _ = ts.make_optimizer({"lr": 1e-2, "grad_clip": 1.0})
  mesh = mesh_lib.make_mesh()
  state = fresh_state(params, tx, mesh, log_tau=np.log(np.float32(0.1)))
  step = ts.make_train_step(model, tx, mesh, loss_cfg)
  CountingModel.traces = 0
  first = state
  taus = []
  for i in range(3):
    batch = ts.random_batch(16, 2, seed=20 + i)
    state, metrics = step(state, batch, jax.random.key(7))
    taus.append(float(metrics["tau"]))
    assert set(metrics) >= {"loss", "pos_sim", "neg_sim", "accuracy", "grad_norm", "tau"}
  assert CountingModel.traces == 1
  assert step._cache_size() == 1
  assert int(state["step"]) == 3
  assert taus[0] == pytest.approx(0.1, rel=1e-5) and taus[2] != taus[0]  # tau is learned
  # The input state was donated: its buffers were handed to the new state.
  assert all(x.is_deleted() for x in jax.tree.leaves(first["params"]))


def test_batch_errors_are_clear():
  mesh = mesh_lib.make_mesh()
  with pytest.raises(ValueError, match="multiple of the 8 devices"):
    mesh_lib.check_batch_size(12, mesh)
  with pytest.raises(ValueError, match="divide by the 3 processes"):
    mesh_lib.check_batch_size(16, mesh, process_count=3)
  model = micro()
  params = jax.eval_shape(model.init, jax.random.key(0))
  fn = ts.make_grad_fn(model, mesh, LOSS)
  bad = ts.abstract_batch(12, 2)
  with pytest.raises(ValueError, match="does not divide by the 8 devices"):
    jax.eval_shape(fn, params, None, bad, jax.random.key(0))
  missing = dict(ts.abstract_batch(16, 2))
  del missing["audio_time"]
  with pytest.raises(ValueError, match="audio_time"):
    jax.eval_shape(fn, params, None, missing, jax.random.key(0))
  wrong = dict(ts.abstract_batch(16, 2), audio=jax.ShapeDtypeStruct((16, 3, 80, 15), jnp.float32))
  with pytest.raises(ValueError, match="audio"):
    jax.eval_shape(fn, params, None, wrong, jax.random.key(0))


@pytest.mark.slow
def test_global_batch_2000_on_8_devices(params):
  """B=2000, N_H=2: each device scores its 250 videos against all 6000 audio windows."""
  model = micro()
  batch = ts.random_batch(2000, 2, seed=9)
  ref_loss, ref_m = jax.jit(lambda p: reference_loss(model, p, batch, LOSS))(params)
  mesh = mesh_lib.make_mesh(jax.devices()[:8])
  tx, _ = ts.make_optimizer({"lr": 1e-4, "grad_clip": 1.0})
  state = fresh_state(params, tx, mesh)
  gbatch = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
  step = ts.make_train_step(model, tx, mesh, LOSS)
  # The per-device program (shard_map body) holds [250, 6000] logits and never [2000, 6000].
  hlo = step.lower(state, gbatch, jax.random.key(1)).as_text()
  assert "tensor<250x6000xf32>" in hlo and "x6000xf32>" not in hlo.replace(
      "tensor<250x6000xf32>", "")
  assert "tensor<2000x3x8xf32>" in hlo  # the gathered audio embeddings: B x A x D
  state, m = step(state, gbatch, jax.random.key(1))
  assert int(state["step"]) == 1
  np.testing.assert_allclose(float(m["loss"]), float(ref_loss), rtol=1e-5)
  np.testing.assert_allclose(float(m["negatives_per_video"]), 5999.0)
  np.testing.assert_allclose(float(m["pos_sim"]), float(ref_m["pos_sim"]), rtol=1e-5)
  # The loss over 6000 candidates starts near log(6000) for an untrained model.
  assert abs(float(m["loss"]) - np.log(6000)) < 2.0


# ------------------------------------------------------------------ multi-host
@pytest.mark.slow
def test_two_processes_match_single_process(tmp_path, params):
  import _multihost_worker as worker
  leaves = jax.tree.leaves(params)
  np.savez(tmp_path / "p0.npz", **{f"leaf_{i:03d}": x for i, x in enumerate(leaves)})
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  port = worker.free_port()
  out = tmp_path / "mh.npz"
  commands = [[sys.executable, str(REPO / "tests" / "_multihost_worker.py"), "--process_id",
               str(i), "--num_processes", "2", "--port", str(port), "--params",
               str(tmp_path / "p0.npz"), "--out", str(out)] for i in range(2)]
  # The single-process result on as many devices, computed while the workers run.
  want, _ = worker.run_processes(commands, lambda: worker.run(jax.devices()[:4], leaves),
                                 cwd=REPO, env=env, timeout=300)
  got = dict(np.load(out, allow_pickle=False))
  assert int(got.pop("process_count")) == 2 and int(got.pop("device_count")) == 4
  assert set(got) == set(want)
  for k in ("loss", "grad_norm", "accuracy", "neg_sim"):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
  # SGD: the parameter change is -lr * gradient, so this compares the gradients.
  names = sorted(k for k in want if k.startswith("param_"))
  delta = lambda d: [d[k] - p for k, p in zip(names, leaves)]  # noqa: E731
  assert_trees_close(delta(got), delta(want))
  assert max(float(np.max(np.abs(x))) for x in delta(want)) > 1e-3  # the params moved


# ------------------------------------------------------------------ planner
def test_parse_bytes():
  assert plan.parse_bytes("80GiB") == 80 * 2**30
  assert plan.parse_bytes("16GB") == 16 * 10**9
  assert plan.parse_bytes("512 MiB") == 512 * 2**20
  assert plan.parse_bytes("1000") == 1000
  with pytest.raises(ValueError, match="memory size"):
    plan.parse_bytes("80 gigs")


class _FakePlanner(plan.Planner):
  """The search logic alone: peak = fixed + per-sample bytes, with a bump past a knee."""

  def __init__(self, n, fixed, per_sample, knee=None):
    self.n, self.cache = n, {}
    self.fixed, self.per_sample, self.knee = fixed, per_sample, knee

  def measure(self, batch_size, num_hard, remat):
    key = (batch_size, num_hard, remat)
    if key not in self.cache:
      peak = self.fixed + self.per_sample * (1 + num_hard) * batch_size
      if self.knee and batch_size > self.knee:
        peak += 3 * self.per_sample * (batch_size - self.knee)
      self.cache[key] = {"B": batch_size, "N_H": num_hard, "remat": remat, "peak": peak,
                         "per_device": batch_size // self.n, "temp": 0, "argument": 0,
                         "residuals": 0, "compile_s": 0.0}
    return self.cache[key]


def test_conv3d_form_switches_and_restores():
  from modeformer_jax.model import models
  before = models.CONV3D_IMPL
  with plan.conv3d_form("native"):
    assert models.CONV3D_IMPL == "native"
    with plan.conv3d_form("2d"):   # re-entrant: a planner inside a planner's trace
      assert models.CONV3D_IMPL == "2d"
    assert models.CONV3D_IMPL == "native"
  assert models.CONV3D_IMPL == before
  with pytest.raises(RuntimeError), plan.conv3d_form("native"):
    raise RuntimeError
  assert models.CONV3D_IMPL == before


@pytest.mark.parametrize("knee", [None, 3000])
def test_planner_search_finds_the_largest_fitting_batch(knee):
  budget = 10**9
  fake = _FakePlanner(8, fixed=10**8, per_sample=10**5, knee=knee)
  best = fake.largest_batch(2, False, budget, multiple=8, max_batch=10**6, log=lambda s: None)
  compiles = len(fake.cache)
  g = 64
  brute = max(b for b in range(g, 10**5, g) if fake.measure(b, 2, False)["peak"] <= budget)
  assert best["B"] == brute
  assert compiles <= 12  # far fewer compiles than a scan
  assert fake.largest_batch(2, False, 10**7, 8, 10**6, log=lambda s: None) is None
  # Started at a prediction (bench/frontier.py): the same answer, from above or below.
  for guess in (brute - 5 * g, brute + 7 * g, 3 * brute):
    again = _FakePlanner(8, fixed=10**8, per_sample=10**5, knee=knee)
    got = again.largest_batch(2, False, budget, multiple=8, max_batch=10**6,
                              log=lambda s: None, guess=guess)
    assert got["B"] == brute, guess
    assert (brute + g, 2, False) in again.cache   # confirmed by the step above: over


@pytest.mark.slow
def test_plan_cli_compiles_micro(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  res = subprocess.run(
      [sys.executable, "-m", "modeformer_jax.plan", "--config", "configs/modeformer.py:micro",
       "--devices", "2", "--memory_per_device", "1GiB", "--num_hard", "2", "--stages", "2",
       "--batch_sizes", "16,64", "--remat", "off", "--nosearch"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  assert res.returncode == 0, res.stderr[-3000:]
  rows = [line for line in res.stdout.splitlines() if line.strip().startswith("B=")]
  assert len(rows) == 2, res.stdout
  peaks = [float(r.split("peak GiB")[1].split()[0]) for r in rows]
  assert "per-device=     8" in rows[0] and "per-device=    32" in rows[1]
  assert peaks[1] > peaks[0] > 0
  assert "2 x cpu" in res.stdout


@pytest.mark.slow
def test_cached_step_peak_does_not_grow_with_the_batch():
  """The issue's growth test, compiled by XLA:CPU for one device (micro model, N_H = 2):
  B = 64 -> 512, the one-pass step's peak grows ~8x; the cached step's (batch in host
  memory) < 1.5x, and its host bytes are exactly the batch's lips and mel."""
  mesh1 = mesh_lib.make_mesh(jax.devices()[:1])
  cfg = {"model": config_utils.model_config("micro"), "loss": LOSS}
  one_pass = plan.Planner(cfg, mesh1)
  cached = plan.Planner(dict(cfg, microbatch=16, host_inputs=True), mesh1)
  on_chip = plan.Planner(dict(cfg, microbatch=16, host_inputs=False), mesh1)
  growth = {}
  for name, pl in (("one", one_pass), ("cached", cached), ("on_chip", on_chip)):
    small, big = (pl.measure(b, 2, False) for b in (64, 512))
    growth[name] = big["peak"] / small["peak"]
    if name == "cached":
      batch = ts.random_batch(512, 2)
      # Lips in host memory are float32 (mesh.HOST_VIDEO_DTYPE): 4x the uint8 bytes.
      assert big["host_argument"] == 4 * batch["video"].nbytes + batch["audio"].nbytes
  assert growth["one"] > 6 and growth["cached"] < 1.5, growth
  assert growth["on_chip"] > growth["cached"]   # the batch itself, held on the chip
