"""InfoNCE with the false-negative mask against a loop-by-loop NumPy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeformer_jax.model import losses


def reference(v, a, vclip, vtime, aclip, atime, scale, easy, tol):
  """Straightforward loops over videos and candidate windows, in float64."""
  v = np.asarray(v, np.float64)
  a = np.asarray(a, np.float64)
  v = v / np.linalg.norm(v, axis=-1, keepdims=True)
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  n, na, _ = a.shape
  out = {"loss": [], "pos": [], "neg": [], "correct": [], "nneg": []}
  for i in range(v.shape[0]):
    pos = float(v[i] @ a[i, 0])
    negs = []
    for k in (range(n) if easy else [i]):
      for j in range(na):
        if k == i and j == 0:
          continue
        if aclip[k] == vclip[i] and abs(int(atime[k, j]) - int(vtime[i])) <= tol:
          continue  # a false negative: same clip, within tolerance
        negs.append(float(v[i] @ a[k, j]))
    logits = np.array([pos] + negs) * scale
    m = logits.max()
    out["loss"].append(m + np.log(np.sum(np.exp(logits - m))) - pos * scale)
    out["pos"].append(pos)
    out["neg"].extend(negs)
    out["nneg"].append(len(negs))
    out["correct"].append(all(pos > s for s in negs))
  return {"loss": np.mean(out["loss"]), "pos_sim": np.mean(out["pos"]),
          "neg_sim": np.mean(out["neg"]) if out["neg"] else 0.0,
          "accuracy": np.mean(out["correct"]), "negatives_per_video": np.mean(out["nneg"])}


def stage2_batch(seed, n=12, a=4, d=16, clips=3):
  """Several entries per clip at nearby times, so many windows fall in the tolerance."""
  r = np.random.default_rng(seed)
  clip = r.integers(0, clips, n).astype(np.int32)
  vtime = r.integers(10, 16, n).astype(np.int32)
  shifts = r.integers(-3, 4, (n, a))
  shifts[:, 0] = 0
  atime = (vtime[:, None] + shifts).astype(np.int32)
  return (r.standard_normal((n, d)).astype(np.float32),
          r.standard_normal((n, a, d)).astype(np.float32), clip, vtime, clip, atime)


def _jax_loss(args, scale, easy, tol):
  v, a, vclip, vtime, aclip, atime = args
  return losses.info_nce(jnp.asarray(v), jnp.asarray(a), video_clip=vclip, video_time=vtime,
                         audio_clip=aclip, audio_time=atime, scale=scale,
                         easy_negatives=easy, tolerance=tol)


@pytest.mark.parametrize("easy", [True, False])
@pytest.mark.parametrize("seed,tol", [(0, 1), (1, 1), (2, 0), (3, 2)])
def test_matches_numpy_reference(easy, seed, tol):
  args = stage2_batch(seed)
  ref = reference(*args, scale=10.0, easy=easy, tol=tol)
  loss, metrics = _jax_loss(args, 10.0, easy, tol)
  n, a = args[1].shape[:2]
  full = (n * a - 1) if easy else (a - 1)
  # The batch must actually exercise the mask, or this test proves nothing about it.
  assert ref["negatives_per_video"] < full
  np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-5)
  for k in ("pos_sim", "neg_sim", "accuracy", "negatives_per_video"):
    np.testing.assert_allclose(float(metrics[k]), ref[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_stage1_batch_masks_nothing_across_clips():
  """Distinct clips and hard negatives 2+ frames away: no window is masked."""
  r = np.random.default_rng(5)
  n, a, d = 6, 3, 8
  vtime = np.full(n, 20, np.int32)
  atime = vtime[:, None] + np.array([0, 2, -3], np.int32)[None]
  args = (r.standard_normal((n, d)), r.standard_normal((n, a, d)), np.arange(n),
          vtime, np.arange(n), atime)
  _, metrics = _jax_loss(args, 10.0, True, 1)
  assert float(metrics["negatives_per_video"]) == n * a - 1
  ref = reference(*args, scale=10.0, easy=True, tol=1)
  np.testing.assert_allclose(float(_jax_loss(args, 10.0, True, 1)[0]), ref["loss"], rtol=1e-5)


def test_masked_windows_do_not_affect_the_loss():
  """Moving a false-negative window changes nothing; moving a real negative does."""
  v, a, vclip, vtime, aclip, atime = stage2_batch(7)
  r = np.random.default_rng(0)
  base = float(_jax_loss((v, a, vclip, vtime, aclip, atime), 10.0, True, 1)[0])
  # Mask of video 0's candidates, from the definition.
  same = (aclip[:, None] == vclip[0]) & (np.abs(atime - vtime[0]) <= 1)
  same[0, 0] = False
  masked = np.argwhere(same)
  unmasked = np.argwhere(~same & ~((np.arange(a.shape[0])[:, None] == 0) &
                                   (np.arange(a.shape[1])[None] == 0)))
  assert len(masked) and len(unmasked)

  def loss_after(k, j):
    a2 = a.copy()
    a2[k, j] = r.standard_normal(a.shape[-1])
    # Only video 0 scores this window unmasked or not; restrict to it.
    return float(_jax_loss((v[:1], a2, vclip[:1], vtime[:1], aclip, atime), 10.0, True, 1)[0])

  base0 = float(_jax_loss((v[:1], a, vclip[:1], vtime[:1], aclip, atime), 10.0, True, 1)[0])
  for k, j in masked:
    assert loss_after(k, j) == pytest.approx(base0, abs=1e-6)
  k, j = unmasked[0]
  assert abs(loss_after(k, j) - base0) > 1e-4
  assert np.isfinite(base)


def test_row_slices_sum_to_the_whole_batch():
  """What the sharded step does: per-slice terms with a row offset, summed, then divided."""
  v, a, vclip, vtime, aclip, atime = stage2_batch(11, n=12)
  kw = dict(audio_clip=jnp.asarray(aclip), audio_time=jnp.asarray(atime), scale=10.0,
            easy_negatives=True, tolerance=1)
  parts = [losses.contrastive_terms(jnp.asarray(v[s:s + 4]), jnp.asarray(a),
                                    video_clip=vclip[s:s + 4], video_time=vtime[s:s + 4],
                                    row_offset=s, **kw) for s in (0, 4, 8)]
  assert parts[0]["logits"].shape == (4, 12 * 4)
  summed = {k: sum(p[k] for p in parts) for k in parts[0] if k != "logits"}
  loss, metrics = losses.finalize_terms(summed)
  ref = reference(v, a, vclip, vtime, aclip, atime, scale=10.0, easy=True, tol=1)
  np.testing.assert_allclose(float(loss), ref["loss"], rtol=1e-5)
  np.testing.assert_allclose(float(metrics["neg_sim"]), ref["neg_sim"], rtol=1e-5)


def test_gradient_matches_finite_differences_of_reference():
  v, a, vclip, vtime, aclip, atime = stage2_batch(3, n=5, a=3, d=6)
  g = jax.grad(lambda vv: _jax_loss((vv, a, vclip, vtime, aclip, atime), 10.0, True, 1)[0])(
      jnp.asarray(v))
  eps = 1e-5
  num = np.zeros_like(v, np.float64)
  for idx in np.ndindex(*v.shape):
    vp, vm = v.astype(np.float64), v.astype(np.float64)
    vp[idx] += eps
    vm[idx] -= eps
    num[idx] = (reference(vp, a, vclip, vtime, aclip, atime, 10.0, True, 1)["loss"] -
                reference(vm, a, vclip, vtime, aclip, atime, 10.0, True, 1)["loss"]) / (2 * eps)
  np.testing.assert_allclose(np.asarray(g), num, rtol=1e-3, atol=1e-4)


def test_perfect_embeddings_give_full_accuracy():
  r = np.random.default_rng(2)
  n, a, d = 8, 3, 32
  audio = r.standard_normal((n, a, d)).astype(np.float32)
  video = audio[:, 0] * 3.0  # same direction as the positive; norm must not matter
  args = (video, audio, np.arange(n), np.full(n, 30), np.arange(n),
          30 + np.array([0, 4, -4])[None].repeat(n, 0))
  loss, m = _jax_loss(args, 10.0, True, 1)
  assert float(m["accuracy"]) == 1.0
  assert float(m["pos_sim"]) == pytest.approx(1.0, abs=1e-5)
  # Reversed videos each match another entry's positive, which is a negative for them.
  loss_bad, m_bad = _jax_loss((video[::-1].copy(),) + args[1:], 10.0, True, 1)
  assert float(m_bad["accuracy"]) == 0.0
  assert float(loss) < float(loss_bad)


def test_logit_scale_options():
  assert losses.logit_scale({}, {"tau": 0.1}) == pytest.approx(10.0)
  learned = losses.logit_scale({"log_tau": jnp.log(0.05)}, {"learn_tau": True})
  assert float(learned) == pytest.approx(20.0, rel=1e-5)
  # The floor at tau = 0.01 keeps a runaway temperature finite.
  assert float(losses.logit_scale({"log_tau": jnp.asarray(-20.0)}, {"learn_tau": True})) == \
      pytest.approx(100.0, rel=1e-4)
  with pytest.raises(ValueError, match="log_tau"):
    losses.logit_scale({}, {"learn_tau": True})
  with pytest.raises(ValueError, match="positive"):
    losses.logit_scale({}, {"tau": 0.0})
