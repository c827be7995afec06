"""Model tests: shapes, parameter count, modality independence, determinism, bf16, retrace."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fast_init

from modeformer_jax.model import models
from modeformer_jax.model.models import ModEFormer, ModelConfig, count_params
from modeformer_jax.training import config_utils


def _model(variant: str, **overrides) -> ModEFormer:
  return ModEFormer(models.model_config(variant, **overrides))


def _cnn_feature_shapes(model: ModEFormer, batch: int):
  """Shapes of the sown CNN features of both towers, computed abstractly."""
  params = jax.eval_shape(model.init, jax.random.key(0))
  mel = jax.ShapeDtypeStruct((batch, *model.audio_shape), jnp.float32)
  frames = jax.ShapeDtypeStruct((batch, *model.video_shape), jnp.float32)

  def run(net, p, x):
    out, state = net.apply({"params": p}, x, False, mutable=["intermediates"])
    return out, state["intermediates"]["cnn_features"][0]

  a = jax.eval_shape(lambda p, x: run(model.audio_net, p, x), params["audio"], mel)
  v = jax.eval_shape(lambda p, x: run(model.video_net, p, x), params["video"], frames)
  return a, v


@pytest.mark.parametrize("variant", ["paper", "syncnet3d", "tiny", "micro"])
def test_encoder_output_shapes(variant):
  model = _model(variant)
  (a_emb, a_feat), (v_emb, v_feat) = _cnn_feature_shapes(model, batch=3)
  c = model.config.cnn_widths[-1]
  assert a_feat.shape == (3, 16, c)   # time preserved, frequency pooled
  assert v_feat.shape == (3, 5, c)    # every frame keeps a feature
  d = model.config.embed_dim
  assert a_emb.shape == (3, d) and v_emb.shape == (3, d)
  if variant == "paper":
    assert c == 512 and d == 512


@pytest.mark.slow
def test_tiny_forward_real_shapes(tiny_model):
  model, params = tiny_model
  mel = jnp.ones((2, 80, 16))
  frames = jnp.zeros((2, 5, 48, 96, 3), jnp.uint8)
  a = model.embed_audio(params, mel)
  v = model.embed_video(params, frames)
  assert a.shape == v.shape == (2, 96)
  s = model.sync_score(a, v)
  assert s.shape == (2,) and bool(jnp.all(jnp.abs(s) <= 1.0 + 1e-5))


def test_paper_param_count_within_3_percent():
  config = config_utils.load_config(config_utils.config_file("modeformer.py") + ":paper")
  model = ModEFormer(config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))  # nothing allocated
  n = count_params(params)
  assert abs(n - 59.0e6) / 59.0e6 <= 0.03, n
  # The 3D-SyncNet ablation drops exactly the two transformers.
  s = count_params(jax.eval_shape(_model("syncnet3d").init, jax.random.key(0)))
  t = count_params(params["audio"]["transformer"]) + count_params(params["video"]["transformer"])
  assert s == n - t


@pytest.mark.slow
def test_modalities_are_independent(tiny_model):
  model, params = tiny_model
  assert set(params) == {"audio", "video"}
  ids_a = {id(x) for x in jax.tree.leaves(params["audio"])}
  assert not ids_a & {id(x) for x in jax.tree.leaves(params["video"])}
  # Structural: the audio path is a function of the audio half only. Passing a tree with
  # no video params at all must work, and vice versa.
  mel = jax.random.normal(jax.random.key(2), (2, 80, 16))
  frames = jax.random.randint(jax.random.key(3), (2, 5, 48, 96, 3), 0, 255).astype(jnp.uint8)
  # Jitted: op-by-op, the video tower's gradient took over a minute of the suite.
  embed_audio, embed_video = jax.jit(model.embed_audio), jax.jit(model.embed_video)
  a = embed_audio({"audio": params["audio"]}, mel)
  v = embed_video({"video": params["video"]}, frames)
  # Gradient of the audio embedding w.r.t. the video params is exactly zero, and the
  # jaxpr of embed_audio never reads a video-shaped input.
  g = jax.jit(jax.grad(lambda p: model.embed_audio(p, mel).sum()))(params)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["video"]))
  assert any(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(g["audio"]))
  g = jax.jit(jax.grad(lambda p: model.embed_video(p, frames).sum()))(params)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["audio"]))
  # Changing the other modality's batch partner changes nothing (no cross-example norm).
  a2 = embed_audio(params, jnp.concatenate([mel[:1], mel[1:] * 5.0]))
  np.testing.assert_allclose(np.asarray(a2[0]), np.asarray(a[0]), rtol=1e-5, atol=1e-6)
  assert v.shape == (2, 96)


@pytest.mark.slow
def test_jitted_tiny_forward_is_deterministic(tiny_model):
  model, params = tiny_model
  frames = jax.random.randint(jax.random.key(3), (4, 5, 48, 96, 3), 0, 255).astype(jnp.uint8)
  f = jax.jit(model.embed_video)
  a, b = f(params, frames), f(params, frames)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Same seed, same init.
  p2 = fast_init(model)
  assert all(bool(jnp.array_equal(x, y)) for x, y in
             zip(jax.tree.leaves(params), jax.tree.leaves(p2)))


@pytest.mark.slow
def test_bf16_compute_path_runs(tiny_model):
  model = _model("tiny", dtype="bfloat16")
  params = tiny_model[1]      # the same tree: compute dtype does not change the params
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))  # param_dtype
  mel = jax.random.normal(jax.random.key(2), (2, 80, 16))
  emb = jax.jit(model.embed_audio)(params, mel)
  assert emb.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(emb)))
  # The convolutions really run in bf16.
  jaxpr = str(jax.make_jaxpr(model.embed_audio)(params, mel))
  assert "bf16" in jaxpr
  ref = jax.jit(tiny_model[0].embed_audio)(params, mel)
  cos = np.asarray(models.cosine_similarity(emb, ref))
  assert np.all(cos > 0.98), cos


@pytest.mark.slow
def test_batchnorm_option_and_remat_train_path():
  model = _model("tiny", norm="batch", remat=True)
  variables = model.init_variables(jax.random.key(0), batch=2)
  assert "batch_stats" in variables
  mel = jax.random.normal(jax.random.key(2), (4, 80, 16))

  def loss(p):
    emb, stats = model.apply_audio(p, mel, train=True, rng=jax.random.key(1),
                                   batch_stats=variables["batch_stats"]["audio"])
    return jnp.sum(emb ** 2), stats

  (val, stats), g = jax.value_and_grad(loss, has_aux=True)(variables["params"]["audio"])
  assert np.isfinite(float(val))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats,
                         variables["batch_stats"]["audio"])
  assert any(jax.tree.leaves(changed))


def test_no_retrace_on_second_call(micro_model):
  model, params = micro_model
  traces = []

  @jax.jit
  def embed(p, mel):
    traces.append(1)
    return model.embed_audio(p, mel)

  embed(params, jnp.ones((2, 80, 16)))
  embed(params, jnp.zeros((2, 80, 16)))
  assert len(traces) == 1
  embed(params, jnp.zeros((3, 80, 16)))  # a new shape does retrace: the counter works
  assert len(traces) == 2


def test_unknown_model_key_rejected():
  with pytest.raises(ValueError, match="unknown model config keys"):
    ModelConfig.from_mapping({"widht": 3})
  with pytest.raises(ValueError, match="unknown model config keys"):
    models.model_config("tiny", widht=3)
  with pytest.raises(ValueError, match="unknown model variant"):
    models.model_config("huge")


@pytest.mark.parametrize("variant", sorted(models.MODEL_VARIANTS))
def test_config_files_take_variants_from_the_model(variant):
  """configs/ restate no model field: their model sub-config is the variant's ModelConfig."""
  assert ModelConfig.from_mapping(config_utils.model_config(variant)) == models.model_config(variant)
  assert models.model_config("paper") == ModelConfig()  # the defaults are the paper's model


@pytest.mark.parametrize("kernel,strides", [((3, 3, 3), (1, 1, 1)), ((3, 5, 5), (1, 4, 4)),
                                             ((3, 3, 3), (1, 2, 2)), ((1, 1, 1), (1, 2, 2)),
                                             ((7, 7), (2, 1))])
@pytest.mark.slow
def test_conv_matches_flax_conv_in_both_3d_forms(kernel, strides, monkeypatch):
  """``models.Conv`` (3D as a sum of 2D convs, or native) equals ``nn.Conv`` (SAME, no bias)
  with the same parameters, to float tolerance."""
  import flax.linen as nn

  from modeformer_jax.model import models
  shape = (2, 5, 12, 24, 6) if len(kernel) == 3 else (2, 20, 16, 6)
  x = jax.random.normal(jax.random.key(0), shape)
  ref_mod = nn.Conv(8, kernel, strides=strides, padding="SAME", use_bias=False)
  params = ref_mod.init(jax.random.key(1), x)
  ref = ref_mod.apply(params, x)
  for impl in ("native", "2d"):
    monkeypatch.setattr(models, "CONV3D_IMPL", impl)
    mine = models.Conv(8, kernel, strides=strides)
    assert jax.tree.structure(mine.init(jax.random.key(1), x)) == jax.tree.structure(params)
    np.testing.assert_allclose(mine.apply(params, x), ref, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_video(tiny_model):
  """The tiny model, its parameters (the session's) and 4 frame windows."""
  model, params = tiny_model
  frames = jax.random.randint(jax.random.key(1), (4, 5, 48, 96, 3), 0, 255).astype(jnp.uint8)
  return model, params, frames


@pytest.mark.slow
def test_video_tower_same_in_both_conv_forms(tiny_video, monkeypatch):
  model, params, frames = tiny_video
  out = {}
  for impl in ("native", "2d"):
    monkeypatch.setattr(models, "CONV3D_IMPL", impl)
    out[impl] = np.asarray(jax.jit(model.embed_video)(params, frames))
  np.testing.assert_allclose(out["2d"], out["native"], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_video_tower_gradients_same_with_auto_forms(tiny_video, monkeypatch):
  """Training's path: 'auto' mixes forms per layer and gradient; the gradients of the tiny
  video tower must be the native ones (relative to the largest gradient: some are exactly
  zero in theory, e.g. attention key biases, and only float noise in practice)."""
  model, params, frames = tiny_video
  grads = {}
  for impl in ("native", "auto"):
    monkeypatch.setattr(models, "CONV3D_IMPL", impl)
    grads[impl] = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.embed_video(p, frames)))))(
        params)["video"]
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads["native"]))
  for want, got in zip(jax.tree.leaves(grads["native"]), jax.tree.leaves(grads["auto"])):
    np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-5)


def test_auto_conv_form_is_chosen_per_layer():
  """'auto' takes the form measured fastest per layer (bench/conv3d_layers.py)."""
  from modeformer_jax.model import models
  forms = functools.partial(models.conv3d_forms, "auto")
  # (forward, input gradient, kernel gradient)
  assert forms((8, 5, 48, 96, 3), (1, 2, 2), 64) == ("2d", "matmul", "matmul")   # paper stem
  assert forms((32, 5, 48, 96, 3), (1, 4, 4), 16) == ("2d", "matmul", "2d")      # tiny stem
  assert forms((96, 5, 6, 12, 16), (1, 1, 1), 16) == ("2d",) * 3       # stride 1, maps >= 3x3
  assert forms((96, 5, 6, 12, 128), (1, 1, 1), 128) == ("2d", "2d", "native")   # ... wide
  assert forms((96, 5, 2, 3, 512), (1, 1, 1), 512) == ("native", "matmul", "matmul")  # tiny
  assert forms((96, 5, 12, 24, 64), (1, 2, 2), 128) == ("native", "matmul", "matmul")
  assert forms((32, 5, 6, 12, 16), (1, 2, 2), 32) == ("2d", "matmul", "matmul")
  assert models.conv3d_forms("2d", (1, 5, 2, 3, 512), (1, 1, 1), 8) == ("2d",) * 3
  assert models.conv3d_forms("native", (1, 5, 48, 96, 3), (1, 1, 1), 8) == ("native",) * 3
  with pytest.raises(ValueError, match="CONV3D_IMPL"):
    models.conv3d_forms("fast", (1, 5, 8, 8, 3), (1, 1, 1), 8)


@pytest.mark.parametrize("shape,kernel,strides", [
    ((2, 5, 12, 24, 6), (3, 3, 3), (1, 1, 1)), ((2, 5, 12, 24, 6), (3, 3, 3), (1, 2, 2)),
    ((2, 5, 11, 23, 3), (3, 7, 7), (1, 2, 2)), ((2, 5, 13, 22, 3), (3, 5, 5), (1, 4, 4)),
    ((2, 5, 2, 3, 8), (3, 3, 3), (1, 1, 1)), ((2, 5, 3, 6, 8), (3, 3, 3), (1, 2, 2))])
@pytest.mark.slow
def test_every_form_of_the_forward_and_gradients_is_the_native_conv(shape, kernel, strides):
  """Forward and both gradients in any mix of forms: values and gradients as native (odd
  map sizes: XLA's SAME padding is uneven there)."""
  from modeformer_jax.model import models
  x = jax.random.normal(jax.random.key(0), shape)
  k = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], 8)) * 0.1
  r = jax.random.normal(jax.random.key(2), models.conv3d_native(x, k, strides).shape)
  loss = lambda f: lambda a, b: jnp.vdot(f(a, b), r)  # noqa: E731
  ref = jax.value_and_grad(loss(lambda a, b: models.conv3d_native(a, b, strides)),
                           argnums=(0, 1))(x, k)
  # Each gradient form appears with each forward form (a full product is 18 compilations).
  for forms in (("native", "matmul", "matmul"), ("2d", "matmul", "2d"),
                ("native", "2d", "matmul"), ("2d", "native", "native")):
    got = jax.jit(jax.value_and_grad(
        loss(lambda a, b, f=forms: models.conv3d_mixed(a, b, strides, f)),
        argnums=(0, 1)))(x, k)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-4)
    for g, want in zip(got[1], ref[1]):
      np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4, err_msg=str(forms))


@pytest.mark.slow
def test_split_grads_benchmark_marks_the_auto_forms(capsys):
  """bench.conv3d_layers --split_grads: one line per layer, every form timed, auto's marked."""
  from bench import conv3d_layers
  conv3d_layers.main(["--split_grads", "--variant", "micro", "--windows", "1", "--repeats", "1"])
  from modeformer_jax.model import models
  lines = capsys.readouterr().out.splitlines()[1:]
  assert len(lines) == len(conv3d_layers.layer_shapes(models.model_config("micro"), 1))
  assert all(line.count("*") == 3 and "matmul" in line for line in lines)
