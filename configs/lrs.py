"""LRS2 / LRS3 with the paper's settings: stage 1, then stage 2 from stage 1's parameters.

Prepare the data once (docs/data.md), then on a pod/cluster (one command per host)::

  python -m modeformer_jax.train --config configs/lrs.py:dataset=lrs2,stage=1 \\
      --workdir gs://bucket/lrs2_stage1 --config.data.dir=/data/lrs2_prepared
  python -m modeformer_jax.train --config configs/lrs.py:dataset=lrs2,stage=2 \\
      --workdir gs://bucket/lrs2_stage2 --config.data.dir=/data/lrs2_prepared \\
      --config.init_from=gs://bucket/lrs2_stage1

and the same with ``dataset=lrs3``. Stage 1: N_H=2, one entry per clip, 200k steps.
Stage 2: N_H=11 (the best batch/hard-negative trade-off; sweep it with
``python -m modeformer_jax.ablate``), 4 entries per clip, 100k steps. Global batch 2000,
bf16 compute.

Arguments: ``dataset`` (lrs2 | lrs3), ``stage`` (1 | 2), ``variant`` (model variant,
default paper), ``num_hard`` (default: the stage's), ``batch``, ``easy`` (stage 1 with the
gathered easy negatives too; the paper's stage 1 has none), ``runlocal`` (a CPU smoke run:
tiny model, batch 16, 20 steps), e.g. ``configs/lrs.py:dataset=lrs3,stage=2,runlocal``.
Stage 1: N_H = 2 hard negatives per entry and nothing else. Stage 2: N_H = 11 and every
other audio window of the global batch (easy negatives), 4 entries per clip.
``--config.microbatch=N`` trains with the cached two-pass step (same gradient, memory that
hardly grows with the batch; docs/training.md).
"""
import ml_collections

from modeformer_jax.training import config_utils

DATASETS = ("lrs2", "lrs3")
# Per stage: (hard negatives N_H, entries per clip, training steps).
STAGES = {1: (2, 1, 200000), 2: (11, 4, 100000)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for ``arg`` (see the module docstring)."""
  # num_hard=None: the stage's default; parse_arg then keeps a given value as a string.
  a = config_utils.parse_arg(arg, dataset="lrs2", stage=1, variant="paper", num_hard=None,
                       batch=2000, easy=False, runlocal=False)
  if a.dataset not in DATASETS:
    raise ValueError(f"unknown dataset {a.dataset!r}; known: {DATASETS}")
  if a.stage not in STAGES:
    raise ValueError(f"unknown stage {a.stage}; known: {sorted(STAGES)}")
  num_hard, entries_per_clip, steps = STAGES[a.stage]
  c = config_utils.training_config(
      variant=a.variant, data_dir=f"/data/{a.dataset}_prepared", batch_size=a.batch,
      num_hard=num_hard if a.num_hard is None else int(a.num_hard), total_steps=steps,
      entries_per_clip=entries_per_clip)
  # The default splits fit both: LRS3's 'train' is trainval minus the seeded 40% 'val'
  # that data_prep.layouts carves out.
  c.model.dtype = "bfloat16"
  # The paper's recipe: stage 1 scores each video against its own N_H = 2 hard negatives
  # only ("We do not use any easy negatives in this stage"); stage 2 adds every other audio
  # window of the gathered batch. `easy=1` keeps the easy negatives in stage 1 (the form
  # this project trained with before; e.g. configs/lrs.py:stage=1,easy=1).
  c.loss.easy_negatives = a.stage == 2 or bool(a.easy)
  c.data.workers = 8
  if a.runlocal:
    c.model = config_utils.model_config("tiny")
    c.batch_size, c.total_steps = 16, 20
    c.data.workers, c.log_every, c.eval_every, c.checkpoint_every = 0, 5, 10, 10
    c.data.entries_per_clip = min(c.data.entries_per_clip, 2)
  return c
