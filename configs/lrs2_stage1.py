"""LRS2 stage 1: the paper's settings (global batch 2000, N_H=2).

Prepare the data once (see README), then on a pod/cluster (one command per host)::

  python -m modeformer_jax.train --config configs/lrs2_stage1.py \
      --workdir gs://bucket/lrs2_stage1 --config.data.dir=/data/lrs2_prepared

Arguments: variant (model variant, default paper), num_hard, batch, runlocal
(a CPU smoke run: tiny model, batch 16, 20 steps), e.g. configs/lrs2_stage1.py:runlocal.
Stage 2 uses N_H=11 by default, the best batch/hard-negative trade-off; sweep it with
python -m modeformer_jax.ablate.
"""
import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the LRS2 stage-1 config."""
  return common.paper_config("lrs2", 1, arg)
