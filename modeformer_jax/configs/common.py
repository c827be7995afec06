"""Helpers shared by the config files: string-argument parsing and the training config.

The model variants live with the model (``modeformer_jax.models.MODEL_VARIANTS``).
"""
from __future__ import annotations

from typing import Any

import ml_collections

from modeformer_jax import models
from modeformer_jax.models import MODEL_VARIANTS  # noqa: F401  (re-export: common.MODEL_VARIANTS)


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``"variant=paper,runlocal"`` style config arguments.

  A bare word that names a boolean default sets it True; a bare word otherwise is taken
  as the value of the first default (usually ``variant``). Values are cast to the type
  of their default.
  """
  out = dict(defaults)
  first = next(iter(defaults)) if defaults else None
  for part in filter(None, (p.strip() for p in (arg or "").split(","))):
    if "=" in part:
      key, value = part.split("=", 1)
    elif isinstance(defaults.get(part), bool):
      key, value = part, "True"
    else:
      key, value = first, part
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes", "y")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return ml_collections.ConfigDict(out)


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The model sub-config of a named variant (``models.MODEL_VARIANTS``), every field set."""
  cfg = models.model_config(variant).to_dict()
  # bn_axis_name is None in every variant; declare its type so overrides can set it.
  cfg["bn_axis_name"] = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict(cfg)


def training_config(*, variant: str, data_dir: str, batch_size: int, num_hard: int,
                    total_steps: int, entries_per_clip: int = 1) -> ml_collections.ConfigDict:
  """The full training config shared by the dataset config files.

  ``variant`` names the model (``models.MODEL_VARIANTS``). Every field has a comment; the
  dataset files only change what differs.
  """
  c = ml_collections.ConfigDict()
  c.model = model_config(variant)
  c.seed = 0                          # params init, data order and dropout all derive from it
  c.batch_size = batch_size           # GLOBAL batch B (entries), divisible by devices/processes
  c.num_hard = num_hard               # N_H hard negatives (time-shifted audio) per entry

  c.data = ml_collections.ConfigDict()
  c.data.dir = data_dir               # output of `python -m modeformer_jax.data_prep.prepare`
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.min_shift = 2                # |delta| >= 2: never inside the eval's +-1 tolerance
  c.data.max_shift = 15               # the evaluation searches -15..+15
  # Entries (start frames) cut from each clip of a batch: 1 in stage 1; K > 1 in stage 2,
  # which puts same-clip easy negatives in the batch.
  c.data.entries_per_clip = entries_per_clip
  c.data.brightness = 0.0             # augmentation: max additive brightness (pixel values)
  c.data.contrast = 0.0               # augmentation: max relative contrast change
  c.data.max_crop_shift = 0           # augmentation: max lip-crop translation (pixels)
  c.data.color = 0.0                  # augmentation: max relative gain per colour channel
  c.data.scale = 0.0                  # augmentation: max relative zoom (0.1 = 0.9x..1.1x)
  c.data.rotation = 0.0               # augmentation: max in-plane rotation (degrees)
  c.data.flip = False                 # augmentation: mirror left-right half of the time
  c.data.audio_gain_db = 0.0          # augmentation: max +- gain per mel window (dB)
  c.data.noise_snr_db = 0.0           # augmentation: > 0 adds noise at SNR in [x, x+20] dB
  c.data.workers = 2                  # grain prefetch processes per host (0 = in-process)
  c.data.val_clips = 200              # fixed validation subset for the in-training accuracy

  c.loss = ml_collections.ConfigDict()
  c.loss.tau = 0.1                    # InfoNCE temperature
  c.loss.learn_tau = False            # learn log(1/tau) instead of fixing it
  # Easy negatives = every other audio window of the global batch. Used in both stages:
  # the paper's point is one video against B*(1+N_H) audio windows.
  c.loss.easy_negatives = True
  c.loss.tolerance = 1                # same-clip windows within +-1 frame are not negatives

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4                   # Adam, as in the paper
  c.optim.schedule = "constant"       # 'constant' | 'cosine'
  c.optim.warmup_steps = 0
  c.optim.total_steps = 0             # cosine decay length; 0 = the run's total_steps
  c.optim.grad_clip = 1.0             # global-norm clipping (0 = off)
  c.optim.weight_decay = 0.0

  c.total_steps = total_steps
  c.log_every = 50                    # console + TensorBoard scalars
  c.eval_every = 1000                 # validation sync accuracy on data.val_clips clips
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3              # latest K; the best-by-val-accuracy is kept as well
  c.init_from = ""                    # checkpoint dir/step to start from (stage 2 <- stage 1)
  return c
