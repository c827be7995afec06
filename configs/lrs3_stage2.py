"""LRS3 stage 2: the paper's settings (global batch 2000, N_H=11, 4 entries per clip).

Prepare the data once (see README), then on a pod/cluster (one command per host)::

  python -m modeformer_jax.train --config configs/lrs3_stage2.py \
      --workdir gs://bucket/lrs3_stage2 --config.data.dir=/data/lrs3_prepared \\
      --config.init_from=gs://bucket/lrs3_stage1

Arguments: variant (model variant, default paper), num_hard, batch, runlocal
(a CPU smoke run: tiny model, batch 16, 20 steps), e.g. configs/lrs3_stage2.py:runlocal.
Stage 2 uses N_H=11 by default, the best batch/hard-negative trade-off; sweep it with
python -m modeformer_jax.ablate.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the LRS3 stage-2 config."""
  a = common.parse_arg(arg, variant="paper", num_hard=11, batch=2000, runlocal=False)
  c = common.training_config(variant=a.variant, data_dir="/data/lrs3_prepared",
                             batch_size=a.batch, num_hard=a.num_hard, stage=2,
                             total_steps=100000, clips_per_entry=4)
  c.data.train_split = "train"  # trainval minus the seeded 40% val (data_prep.layouts)
  c.data.val_split = "val"
  c.model.dtype = "bfloat16"
  c.data.workers = 8
  if a.runlocal:
    c.model = common.model_config("tiny")
    c.batch_size, c.total_steps = 16, 20
    c.data.workers, c.log_every, c.eval_every, c.checkpoint_every = 0, 5, 10, 10
    c.data.clips_per_entry = min(c.data.clips_per_entry, 2)
  return c
