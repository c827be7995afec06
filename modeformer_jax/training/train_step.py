"""The sharded contrastive train step: optimizer, train state and one jitted update.

Layout: the 1-D mesh of ``modeformer_jax.training.mesh`` (axis ``'data'``) over every device of
every process. The batch is sharded on it; params and optimizer state are replicated.
Inside ``jax.shard_map`` each device embeds only its local videos and audio windows; in
the easy-negative mode the AUDIO embeddings (plus their clip ids and start frames) are
all-gathered, never the inputs, and each device scores its ``B/n`` videos against all
``B*A`` windows (the cheap form: local rows x global columns). Each device differentiates
its share of the global loss; the all-gather transposes to a reduce-scatter, so the
gradient that reaches each audio embedding includes every device's logits, and one
``psum`` of the per-device gradients gives the exact single-device gradient.

State is a plain dict: ``{'params', 'opt_state', 'step'}`` plus ``'batch_stats'`` when the
model uses BatchNorm. ``params`` is the model's ``{'audio', 'video'}`` tree, plus
``'log_tau'`` when the temperature is learned.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from modeformer_jax.model import losses
from modeformer_jax.model.models import ModEFormer, NUM_MEL
from modeformer_jax.model.windows import MEL_WINDOW
from modeformer_jax.training import mesh as mesh_lib
from modeformer_jax.training.mesh import AXIS

PyTree = Any
BATCH_KEYS = ("video", "audio", "clip", "video_time", "audio_time")


# ------------------------------------------------------------------ optimizer
def step_options(config: Mapping[str, Any]) -> dict[str, Any]:
  """The step's form from a training config: ``microbatch`` (0 = one pass) and
  ``host_inputs`` (only with the cached step; see ``config_utils.training_config``)."""
  microbatch = int(config.get("microbatch", 0) or 0)
  return {"microbatch": microbatch,
          "host_inputs": bool(config.get("host_inputs", False)) and microbatch > 0}


def make_schedule(optim_cfg: Mapping[str, Any]) -> optax.Schedule:
  """Learning rate per step: linear warmup from 0, then constant or cosine decay to 0."""
  lr = float(optim_cfg.get("lr", 1e-4))
  kind = optim_cfg.get("schedule", "constant")
  warmup = int(optim_cfg.get("warmup_steps", 0))
  if warmup < 0:
    raise ValueError(f"optim.warmup_steps must be >= 0, got {warmup}")
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "cosine":
    total = int(optim_cfg.get("total_steps", 0))
    if total <= warmup:
      raise ValueError(f"cosine schedule needs optim.total_steps ({total}) > "
                       f"optim.warmup_steps ({warmup})")
    main = optax.cosine_decay_schedule(lr, decay_steps=total - warmup, alpha=0.0)
  else:
    raise ValueError(f"unknown optim.schedule {kind!r}; expected 'constant' or 'cosine'")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(optim_cfg: Mapping[str, Any]) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  """Adam (AdamW when ``weight_decay`` > 0) with optional global-norm clipping.

  Returns ``(tx, schedule)``; the schedule is returned for logging the learning rate.
  Weight decay only touches matrices/kernels (ndim >= 2), never norms, biases or tau.
  """
  schedule = make_schedule(optim_cfg)
  clip = float(optim_cfg.get("grad_clip", 0.0) or 0.0)
  wd = float(optim_cfg.get("weight_decay", 0.0) or 0.0)
  parts = []
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if wd > 0:
    mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)  # noqa: E731
    parts.append(optax.adamw(schedule, weight_decay=wd, mask=mask))
  else:
    parts.append(optax.adam(schedule))
  return optax.chain(*parts), schedule


def create_train_state(model: ModEFormer, tx: optax.GradientTransformation, rng: jax.Array,
                       loss_cfg: Mapping[str, Any] | None = None) -> dict[str, PyTree]:
  """Fresh state; pass ``loss_cfg`` so a learned temperature gets its ``log_tau`` param."""
  variables = model.init_variables(rng)
  params = dict(variables["params"])
  if loss_cfg is not None and loss_cfg.get("learn_tau", False):
    params["log_tau"] = jnp.asarray(math.log(float(loss_cfg.get("tau", 0.1))), jnp.float32)
  state = {"params": params, "opt_state": tx.init(params),
           "step": jnp.zeros((), jnp.int32)}
  if "batch_stats" in variables:
    state["batch_stats"] = variables["batch_stats"]
  return state


# ------------------------------------------------------------------ batch checks
def _check_batch(batch: Mapping[str, Any], n_dev: int) -> tuple[int, int]:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch is missing {missing}; expected keys {list(BATCH_KEYS)}")
  b, a = batch["audio"].shape[:2]
  want = {"video": (b, 5, 48, 96), "audio": (b, a, NUM_MEL, MEL_WINDOW), "clip": (b,),
          "video_time": (b,), "audio_time": (b, a)}
  for k, shape in want.items():
    if tuple(batch[k].shape[:len(shape)]) != shape or batch[k].ndim != len(shape) + (
        k == "video"):
      raise ValueError(f"batch[{k!r}] has shape {tuple(batch[k].shape)}; expected "
                       f"{shape}{' + (C,)' if k == 'video' else ''}")
  if b % n_dev:
    raise ValueError(f"global batch {b} does not divide by the {n_dev} devices of the "
                     f"'{AXIS}' mesh axis")
  return b, a


# ------------------------------------------------------------------ loss and gradient
def make_grad_fn(model: ModEFormer, mesh: Mesh, loss_cfg: Mapping[str, Any], *,
                 train: bool = True, with_logits: bool = False,
                 microbatch: int = 0, host_inputs: bool = False) -> Callable:
  """Unjitted ``(params, batch_stats, batch, rng) -> (grads, metrics, batch_stats[, logits])``.

  ``rng`` is the step's key; each device folds in its mesh index, so devices draw different
  dropout masks (with one shared key, the examples at the same local position on every
  device would get the same mask). The masks therefore depend on the device count: with
  dropout, n devices match 1 device only in distribution. Gradients and metrics are
  global (summed over devices, then divided by the global batch) and replicated.
  ``with_logits`` also returns the masked logits, sharded on ``'data'``, so tests can see
  each device's ``[B/n, B*A]`` block.

  ``microbatch`` > 0 computes the same gradient in the cached two-pass form (gradient
  caching, Gao et al. 2021): each device embeds its videos and audio windows
  ``microbatch`` entries at a time without keeping activations; the loss and its gradient
  with respect to the EMBEDDINGS are taken over the whole (gathered) batch; then each chunk
  is embedded again with the same dropout keys and its embedding gradient is pulled back
  through that chunk's ``vjp``, summing parameter gradients. The program holds one chunk's
  activations plus the embeddings, so its peak hardly grows with B; the price is a second
  forward pass. Dropout keys are per chunk (so masks differ from the one-pass step's, but
  both passes draw the same ones); BatchNorm statistics are per chunk (running averages:
  the mean of the chunks' updates).

  ``host_inputs`` (cached form only): the batch's lips and mel arrive in pinned host memory
  (``mesh.input_sharding``) and each chunk is copied to the chip when it is embedded, in
  both passes, so chip memory holds no whole batch, only chunks and embeddings.
  """
  easy = bool(loss_cfg.get("easy_negatives", True))
  tol = int(loss_cfg.get("tolerance", 1))
  n_dev = mesh.shape[AXIS]
  microbatch = int(microbatch or 0)
  if microbatch < 0:
    raise ValueError(f"microbatch must be >= 0 (0 = the one-pass step), got {microbatch}")
  if host_inputs and not microbatch:
    raise ValueError("host_inputs needs the cached step (microbatch > 0): the one-pass step "
                     "holds the whole batch's activations on the chip anyway")

  def body(params, batch_stats, video, audio, clip, vtime, atime, rng):
    b, a = audio.shape[:2]
    idx = jax.lax.axis_index(AXIS)
    # Per-device dropout stream (see the docstring); the step index was folded in already.
    rv, ra = jax.random.split(jax.random.fold_in(rng, idx))
    stats = batch_stats or {}

    def loss_from(p, v, au):
      """This device's share of the GLOBAL mean loss from its embeddings (au: [b, a, D])."""
      if easy:
        # Only embeddings (and their metadata) cross devices; tiled => global entry order.
        au = jax.lax.all_gather(au, AXIS, tiled=True)
        aclip = jax.lax.all_gather(clip, AXIS, tiled=True)
        at = jax.lax.all_gather(atime, AXIS, tiled=True)
        offset = idx * b
      else:
        aclip, at, offset = clip, atime, 0
      terms = losses.contrastive_terms(
          v, au, video_clip=clip, video_time=vtime, audio_clip=aclip, audio_time=at,
          row_offset=offset, scale=losses.logit_scale(p, loss_cfg), easy_negatives=easy,
          tolerance=tol)
      # The psum below completes the global mean.
      return terms["loss_sum"] / (b * n_dev), terms

    def embed_video(pv, x, key):
      return model.apply_video(pv, x, train=train, rng=key, batch_stats=stats.get("video"))

    def embed_audio(pa, x, key):
      return model.apply_audio(pa, x, train=train, rng=key, batch_stats=stats.get("audio"))

    if not microbatch:
      mel = audio.reshape(b * a, *audio.shape[2:])

      def local_loss(p):
        v, vs = embed_video(p["video"], video, rv)
        au, as_ = embed_audio(p["audio"], mel, ra)
        share, terms = loss_from(p, v, au.reshape(b, a, -1))
        new_stats = {"video": vs, "audio": as_} if batch_stats is not None else None
        return share, (terms, new_stats)

      grads, (terms, new_stats) = jax.grad(local_loss, has_aux=True)(params)
    else:
      grads, terms, new_stats = cached_grads(params, embed_video, embed_audio, loss_from,
                                             video, audio, b, a, rv, ra)
      if batch_stats is None:
        new_stats = None
    logits = terms.pop("logits")
    grads = jax.lax.psum(grads, AXIS)
    terms = jax.lax.psum(terms, AXIS)
    _, metrics = losses.finalize_terms(terms)
    if new_stats is not None:
      # Identical already when BatchNorm syncs over 'data'; averages them otherwise.
      new_stats = jax.lax.pmean(new_stats, AXIS)
    out = (grads, metrics, new_stats)
    return out + (logits,) if with_logits else out

  def cached_grads(params, embed_video, embed_audio, loss_from, video, audio, b, a, rv, ra):
    if b % microbatch:
      raise ValueError(f"the per-device batch {b} does not divide by microbatch "
                       f"{microbatch}; choose a divisor of batch_size / devices")
    nc = b // microbatch
    chunks = jnp.arange(nc)
    # A chunk is sliced from the arguments by index (not a reshaped copy), and copied to the
    # chip only then when the batch lives in host memory.
    to_chip = ((lambda x: jax.device_put(x, jax.memory.Space.Device)) if host_inputs
               else (lambda x: x))

    def video_chunk(i):
      x = to_chip(jax.lax.dynamic_slice_in_dim(video, i * microbatch, microbatch))
      return x.astype(jnp.uint8) if host_inputs else x   # mesh.HOST_VIDEO_DTYPE says why

    def audio_chunk(i):
      x = to_chip(jax.lax.dynamic_slice_in_dim(audio, i * microbatch, microbatch))
      return x.reshape(microbatch * a, *x.shape[2:])

    kv, ka = jax.random.split(rv, nc), jax.random.split(ra, nc)
    # Pass 1: embeddings only; nothing is differentiated, so no activation is kept.
    v, vs = jax.lax.map(lambda ik: embed_video(params["video"], video_chunk(ik[0]), ik[1]),
                        (chunks, kv))
    au, as_ = jax.lax.map(lambda ik: embed_audio(params["audio"], audio_chunk(ik[0]), ik[1]),
                          (chunks, ka))
    v, au = v.reshape(b, -1), au.reshape(b, a, -1)
    rest = {k: x for k, x in params.items() if k not in ("video", "audio")}
    (gv, ga, grest), terms = jax.grad(lambda v_, a_, r_: loss_from(r_, v_, a_),
                                      argnums=(0, 1, 2), has_aux=True)(v, au, rest)

    # Pass 2: each chunk again, same keys, its embedding gradient through its vjp.
    def pull_back(embed, p, chunk, keys, g):
      def one(total, inp):
        i, key, gi = inp
        x = chunk(i)
        _, vjp = jax.vjp(lambda q: embed(q, x, key)[0], p)
        return jax.tree.map(jnp.add, total, vjp(gi)[0]), None
      # A rolled loop: the program holds one chunk's activations by construction. (On
      # XLA:CPU a convolution's gradient inside a loop runs off its fast path, ~50x
      # slower; unrolling the loop there kept every chunk's activations alive instead.)
      return jax.lax.scan(one, jax.tree.map(jnp.zeros_like, p), (chunks, keys, g))[0]

    grads = dict(grest,
                 video=pull_back(embed_video, params["video"], video_chunk, kv,
                                 gv.reshape(nc, microbatch, -1)),
                 audio=pull_back(embed_audio, params["audio"], audio_chunk, ka,
                                 ga.reshape(nc, microbatch * a, -1)))
    mean = lambda t: jax.tree.map(lambda x: jnp.mean(x, axis=0), t)  # noqa: E731
    new_stats = {"video": mean(vs), "audio": mean(as_)}
    return grads, terms, new_stats

  out_specs = (P(), P(), P()) + ((P(AXIS),) if with_logits else ())
  sharded = jax.shard_map(
      body, mesh=mesh,
      in_specs=(P(), P(), P(AXIS), P(AXIS), P(AXIS), P(AXIS), P(AXIS), P()),
      out_specs=out_specs, check_vma=False)

  def grad_fn(params, batch_stats, batch, rng):
    _check_batch(batch, n_dev)
    return sharded(params, batch_stats, batch["video"], batch["audio"], batch["clip"],
                   batch["video_time"], batch["audio_time"], rng)

  return grad_fn


def make_train_step(model: ModEFormer, tx: optax.GradientTransformation, mesh: Mesh,
                    loss_cfg: Mapping[str, Any], *, donate: bool = True,
                    microbatch: int = 0, host_inputs: bool = False) -> Callable:
  """Jitted ``step(state, batch, rng) -> (state, metrics)``; the input state is donated.

  ``batch`` holds global arrays sharded on ``'data'`` (``mesh.to_global`` on every process)
  or host arrays, which jit shards. ``rng`` is the run's base key, the same every step: the
  step folds ``state['step']`` into it (once; callers must not fold the step themselves),
  so a resumed run draws the masks an uninterrupted one would.
  Metrics: ``loss``, ``pos_sim``, ``neg_sim``, ``accuracy``, ``negatives_per_video``,
  ``grad_norm`` (before clipping), ``tau``. ``microbatch`` > 0: the cached two-pass
  gradient (``make_grad_fn``); with ``host_inputs`` it takes lips and mel in pinned host
  memory (place batches with ``mesh.to_global(..., host_inputs=True)``).
  """
  grad_fn = make_grad_fn(model, mesh, loss_cfg, microbatch=microbatch,
                         host_inputs=host_inputs)
  rep = mesh_lib.replicated(mesh)
  data = {k: mesh_lib.input_sharding(mesh, k, host_inputs) for k in BATCH_KEYS}

  def step(state, batch, rng):
    rng = jax.random.fold_in(rng, state["step"])
    grads, metrics, new_stats = grad_fn(state["params"], state.get("batch_stats"), batch,
                                        rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, grad_norm=optax.global_norm(grads),
                   tau=1.0 / jnp.asarray(losses.logit_scale(state["params"], loss_cfg)))
    new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    if new_stats is not None:
      new["batch_stats"] = new_stats
    return new, metrics

  return jax.jit(step, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def abstract_batch(batch_size: int, num_hard: int, mesh: Mesh | None = None,
                   video_channels: int = 3,
                   host_inputs: bool = False) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a global batch (sharded on ``'data'`` when a mesh is given, lips and mel in
  host memory with ``host_inputs``), for lowering."""
  a = 1 + num_hard
  spec = {"video": ((batch_size, 5, 48, 96, video_channels),
                    mesh_lib.HOST_VIDEO_DTYPE if host_inputs else jnp.uint8),
          "audio": ((batch_size, a, NUM_MEL, MEL_WINDOW), jnp.float32),
          "clip": ((batch_size,), jnp.int32), "video_time": ((batch_size,), jnp.int32),
          "audio_time": ((batch_size, a), jnp.int32)}

  def sharding(k: str) -> Any:
    return None if mesh is None else mesh_lib.input_sharding(mesh, k, host_inputs)

  return {k: jax.ShapeDtypeStruct(s, d, sharding=sharding(k)) for k, (s, d) in spec.items()}


def random_batch(batch_size: int, num_hard: int, *, seed: int = 0, num_clips: int | None = None,
                 max_time: int = 100, video_channels: int = 3) -> dict[str, np.ndarray]:
  """A synthetic batch in the pipeline's layout (tests and benchmarks).

  ``num_clips < batch_size`` puts several entries of a clip in the batch, as stage 2
  does, so some windows fall inside the false-negative tolerance.
  """
  r = np.random.default_rng(seed)
  a = 1 + num_hard
  num_clips = num_clips or batch_size
  clip = r.integers(0, num_clips, batch_size).astype(np.int32)
  if num_clips >= batch_size:
    clip = r.permutation(batch_size).astype(np.int32)
  vt = r.integers(16, max_time, batch_size).astype(np.int32)
  shift = r.integers(2, 6, (batch_size, a)) * r.choice([-1, 1], (batch_size, a))
  shift[:, 0] = 0
  return {
      "video": r.integers(0, 256, (batch_size, 5, 48, 96, video_channels), dtype=np.uint8),
      "audio": r.standard_normal((batch_size, a, NUM_MEL, MEL_WINDOW)).astype(np.float32),
      "clip": clip, "video_time": vt, "audio_time": (vt[:, None] + shift).astype(np.int32),
  }
