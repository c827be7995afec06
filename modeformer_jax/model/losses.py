"""InfoNCE over local videos x (globally gathered) audio windows, with a false-negative mask.

Every batch entry ``k`` carries ``A = 1 + N_H`` audio windows: window 0 is the positive
(aligned with the entry's video at start frame ``video_time[k]``), windows 1.. are hard
negatives from the same clip at ``video_time[k] + delta``. A video ``i`` is scored against

* ``easy_negatives=False``: its own ``A`` windows only (hard negatives);
* ``easy_negatives=True``: all ``N * A`` windows of the global batch, i.e. additionally
  ``(N - 1) * A`` easy negatives from the other entries.

A window that comes from the same clip as video ``i`` and starts within ``tolerance``
frames of it is not a negative (stage 2 puts several entries of one clip in a batch, and
the evaluation accepts +-1 frame as in sync), so it is removed from the softmax. Video
``i``'s own positive is never removed.

The functions are pure and work on any slice of the batch: the sharded train step calls
:func:`contrastive_terms` with its local videos and the gathered audio, sums the terms over
devices and only then divides (:func:`finalize_terms`), so the sharded loss and metrics are
exactly the global ones.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

Array = jax.Array

# Masked logits are set to this rather than -inf: exp underflows to exactly 0 in f32 all
# the same, and no inf - inf can appear in a gradient.
_MASKED = -1e9


def l2_normalize(x: Array, eps: float = 1e-6) -> Array:
  """Unit-length rows; ``eps`` keeps an all-zero embedding finite."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def negative_mask(video_clip: Array, video_time: Array, audio_clip: Array,
                  audio_time: Array, positive_index: Array, tolerance: int) -> Array:
  """``[b, N * A]`` bool: True where a candidate audio window is a valid negative.

  ``video_clip``/``video_time``: ``[b]`` of the scored videos. ``audio_clip``: ``[N]``,
  ``audio_time``: ``[N, A]`` of the candidate entries. ``positive_index``: ``[b]`` flat
  column of each video's own positive.
  """
  n, a = audio_time.shape
  same_clip = video_clip[:, None, None] == audio_clip[None, :, None]          # [b, N, 1]
  near = jnp.abs(audio_time[None, :, :] - video_time[:, None, None]) <= tolerance
  false_neg = (same_clip & near).reshape(video_clip.shape[0], n * a)
  is_pos = jnp.arange(n * a)[None, :] == positive_index[:, None]
  return ~(false_neg | is_pos)


def contrastive_terms(video_emb: Array, audio_emb: Array, *, video_clip: Array,
                      video_time: Array, audio_clip: Array, audio_time: Array,
                      row_offset: Array | int, scale: Array | float,
                      easy_negatives: bool, tolerance: int = 1) -> dict[str, Array]:
  """Summed loss and metric terms of the videos in ``video_emb`` (sum over its rows).

  Args:
    video_emb: ``[b, D]`` video embeddings (any norm; normalised here).
    audio_emb: ``[N, A, D]`` audio embeddings of the candidate entries (window 0 = positive).
    video_clip, video_time: ``[b]`` int clip ids and start frames of the videos.
    audio_clip: ``[N]`` clip ids; audio_time: ``[N, A]`` start frames of every window.
    row_offset: index into the ``N`` entries of video 0's own entry (``device * b`` when
      the audio is the gathered global batch; 0 when it is the local batch).
    scale: ``1 / tau``.
    easy_negatives: score against all ``N * A`` windows, else only the own ``A`` windows.
    tolerance: same-clip windows within this many frames are not negatives.

  Returns:
    ``loss_sum`` (summed cross-entropy), ``pos_sim_sum``, ``neg_sim_sum``, ``neg_count``,
    ``correct`` (positive strictly above every negative), ``count`` (rows), and
    ``logits`` (``[b, N*A]`` or ``[b, A]``, masked, for shape checks; not a sum).
  """
  b = video_emb.shape[0]
  n, a, d = audio_emb.shape
  v = l2_normalize(video_emb.astype(jnp.float32))
  au = l2_normalize(audio_emb.astype(jnp.float32))
  own = row_offset + jnp.arange(b)
  hi = jax.lax.Precision.HIGHEST  # cos/tau amplifies matmul rounding by 10x
  if easy_negatives:
    sim = jnp.einsum("id,cd->ic", v, au.reshape(n * a, d), precision=hi)   # [b, N*A]
    pos_col = own * a
    valid = negative_mask(video_clip, video_time, audio_clip, audio_time, pos_col, tolerance)
  else:
    mine = jnp.take(au, own, axis=0)                                       # [b, A, D]
    sim = jnp.einsum("id,iad->ia", v, mine, precision=hi)                  # [b, A]
    pos_col = jnp.zeros((b,), jnp.int32)
    same = jnp.abs(jnp.take(audio_time, own, axis=0) - video_time[:, None]) <= tolerance
    # Own windows share the clip, so only the time test decides; column 0 is the positive.
    valid = ~same & (jnp.arange(a) > 0)[None, :]
  pos_sim = jnp.take_along_axis(sim, pos_col[:, None], axis=1)[:, 0]
  logits = jnp.where(valid, sim * scale, _MASKED)
  logits = logits.at[jnp.arange(b), pos_col].set(pos_sim * scale)
  lse = jax.nn.logsumexp(logits, axis=1)
  loss = lse - pos_sim * scale
  validf = valid.astype(jnp.float32)
  hardest = jnp.max(jnp.where(valid, sim, -jnp.inf), axis=1)
  return {
      "loss_sum": jnp.sum(loss),
      "pos_sim_sum": jnp.sum(pos_sim),
      "neg_sim_sum": jnp.sum(jnp.where(valid, sim, 0.0)),
      "neg_count": jnp.sum(validf),
      "correct": jnp.sum((pos_sim > hardest).astype(jnp.float32)),
      "count": jnp.asarray(b, jnp.float32),
      "logits": logits,
  }


def finalize_terms(terms: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
  """Summed terms (possibly summed over devices) -> ``(loss, metrics)`` means."""
  count = terms["count"]
  loss = terms["loss_sum"] / count
  metrics = {
      "loss": loss,
      "pos_sim": terms["pos_sim_sum"] / count,
      "neg_sim": terms["neg_sim_sum"] / jnp.maximum(terms["neg_count"], 1.0),
      "accuracy": terms["correct"] / count,
      "negatives_per_video": terms["neg_count"] / count,
  }
  return loss, metrics


def info_nce(video_emb: Array, audio_emb: Array, *, video_clip: Array, video_time: Array,
             audio_clip: Array, audio_time: Array, scale: Array | float = 10.0,
             easy_negatives: bool = True, tolerance: int = 1) -> tuple[Array, dict[str, Array]]:
  """Single-device InfoNCE of a whole batch: ``video_emb [B, D]``, ``audio_emb [B, A, D]``.

  Returns ``(mean loss, metrics)`` with metrics ``loss``, ``pos_sim`` (mean cosine of the
  positives), ``neg_sim`` (mean cosine over unmasked negatives), ``accuracy`` (top-1 of
  the positive among its candidates) and ``negatives_per_video``.
  """
  terms = contrastive_terms(video_emb, audio_emb, video_clip=video_clip,
                            video_time=video_time, audio_clip=audio_clip,
                            audio_time=audio_time, row_offset=0, scale=scale,
                            easy_negatives=easy_negatives, tolerance=tolerance)
  return finalize_terms(terms)


def logit_scale(params: Mapping[str, Any], loss_cfg: Mapping[str, Any]) -> Array | float:
  """``1 / tau``: fixed from ``loss_cfg.tau``, or ``exp(-params['log_tau'])`` if learned.

  A learned tau is floored at 0.01 (the usual guard against a collapsing temperature).
  """
  if loss_cfg.get("learn_tau", False):
    if "log_tau" not in params:
      raise ValueError("loss.learn_tau is set but the params have no 'log_tau'; build the "
                       "state with create_train_state(..., loss_cfg=config.loss)")
    return jnp.exp(-jnp.maximum(params["log_tau"], jnp.log(0.01)))
  tau = float(loss_cfg.get("tau", 0.1))
  if tau <= 0:
    raise ValueError(f"loss.tau must be positive, got {tau}")
  return 1.0 / tau
