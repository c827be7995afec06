"""Helpers shared by the config files: string-argument parsing and the model variants."""
from __future__ import annotations

from typing import Any

import ml_collections


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


# The paper's model. ResNet18 trunks: 2D audio (11.2M), 3D video with 3x3x3 kernels
# (33.2M); two 4-layer pre-LN transformers of width 512 with 8 heads and an MLP of 768
# (7.35M each). Total 59.1M, within 0.2% of the paper's 59.0M. A ViT-Base MLP ratio of 4
# (mlp_dim=2048) would give 69.6M, so the paper's "lighter ViT-Base" must be narrower.
_PAPER = dict(
    cnn_widths=(64, 128, 256, 512), cnn_blocks=(2, 2, 2, 2), video_stem_kernel=(3, 7, 7),
    video_stem_strides=(1, 2, 2), video_channels=3, norm="group", norm_groups=32,
    use_transformer=True,
    width=512, depth=4, heads=8, mlp_dim=768, dropout=0.1, attention_dropout=0.0,
    dtype="float32", param_dtype="float32", remat=False)

MODEL_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": _PAPER,
    # 3D-SyncNet ablation: the same CNNs, no transformers, time-pooled CNN features.
    "syncnet3d": dict(_PAPER, use_transformer=False),
    # Small enough to train on 2 CPU cores in minutes. The stride-4 video stem cuts the
    # video trunk (80% of a CPU step at stride 2) by 4x: 0.30 s vs 1.15 s fwd+bwd for 32 clips.
    "tiny": dict(_PAPER, cnn_widths=(16, 32, 64, 96), cnn_blocks=(1, 1, 1, 1),
                 video_stem_kernel=(3, 5, 5), video_stem_strides=(1, 4, 4), norm_groups=8,
                 width=96, depth=2, heads=4, mlp_dim=192, dropout=0.0),
    # Smallest model that still has every part; for scale tests (B=2000 on CPU).
    "micro": dict(_PAPER, cnn_widths=(4, 4, 8, 8), cnn_blocks=(1, 1, 1, 1),
                  video_stem_kernel=(1, 3, 3), norm_groups=4, width=8, depth=1, heads=2,
                  mlp_dim=16, dropout=0.0),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The model sub-config of a named variant."""
  if variant not in MODEL_VARIANTS:
    raise ValueError(f"unknown model variant {variant!r}; known: {sorted(MODEL_VARIANTS)}")
  cfg = dict(MODEL_VARIANTS[variant])
  # bn_axis_name is None in every variant; declare its type so overrides can set it.
  cfg["bn_axis_name"] = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict(cfg)


def training_config(*, variant: str, data_dir: str, batch_size: int, num_hard: int,
                    stage: int, total_steps: int, clips_per_entry: int = 1) -> ml_collections.ConfigDict:
  """The full training config shared by the dataset/stage config files.

  Every field has a comment; the dataset files only change what differs.
  """
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.model = model_config(variant)
  c.seed = 0                          # params init, data order and dropout all derive from it
  c.stage = stage                     # 1: one entry per clip; 2: clips_per_entry per clip
  c.batch_size = batch_size           # GLOBAL batch B (entries), divisible by devices/processes
  c.num_hard = num_hard               # N_H hard negatives (time-shifted audio) per entry

  c.data = ml_collections.ConfigDict()
  c.data.dir = data_dir               # output of `python -m data_prep.prepare`
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.min_shift = 2                # |delta| >= 2: never inside the eval's +-1 tolerance
  c.data.max_shift = 15               # the evaluation searches -15..+15
  c.data.clips_per_entry = clips_per_entry
  c.data.brightness = 0.0             # augmentation: max additive brightness (pixel values)
  c.data.contrast = 0.0               # augmentation: max relative contrast change
  c.data.max_crop_shift = 0           # augmentation: max lip-crop translation (pixels)
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


def paper_config(dataset: str, stage: int, arg: str | None) -> ml_collections.ConfigDict:
  """The paper's LRS2/LRS3 training settings (shared by configs/{lrs2,lrs3}_stage{1,2}.py).

  Stage 1: N_H=2, one entry per clip. Stage 2: N_H=11 (the best batch/hard-negative
  trade-off by default), 4 entries per clip. Global batch 2000, bf16 compute.
  """
  stage1 = stage == 1
  a = parse_arg(arg, variant="paper", num_hard=2 if stage1 else 11, batch=2000,
                runlocal=False)
  c = training_config(variant=a.variant, data_dir=f"/data/{dataset}_prepared",
                      batch_size=a.batch, num_hard=a.num_hard, stage=stage,
                      total_steps=200000 if stage1 else 100000,
                      clips_per_entry=1 if stage1 else 4)
  # LRS3's 'train' is trainval minus the seeded 40% 'val' (data_prep.layouts).
  c.data.train_split, c.data.val_split = "train", "val"
  c.model.dtype = "bfloat16"
  c.data.workers = 8
  if a.runlocal:
    c.model = model_config("tiny")
    c.batch_size, c.total_steps = 16, 20
    c.data.workers, c.log_every, c.eval_every, c.checkpoint_every = 0, 5, 10, 10
    c.data.clips_per_entry = min(c.data.clips_per_entry, 2)
  return c
