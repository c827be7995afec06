"""Real faces: GRID speaker s1 (800 utterances, 700 train / 100 held out), on a CPU.

  python -m data_prep.prepare --layout raw --src ../shared/data/grid_s1/video \\
      --out data/grid_s1_prepared --val_fraction 0.125 --seed 0 --name grid_s1
  python -m modeformer_jax.train --config configs/grid.py --workdir runs/grid_s1 \\
      --config.data.dir=data/grid_s1_prepared
  python -m modeformer_jax.eval --checkpoint runs/grid_s1 --which latest \\
      --data_dir data/grid_s1_prepared --split val

Arguments: ``variant`` (default tiny), ``steps``, ``batch``, ``num_hard``. The held-out
utterances ('val') are only used for the reported evaluation and the in-training curve;
report the LATEST checkpoint (``--which latest``) so no model selection touches them.
"""
import ml_collections

from modeformer_jax.training import config_utils


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the GRID config."""
  a = config_utils.parse_arg(arg, variant="tiny", steps=2000, batch=32, num_hard=4)
  c = config_utils.training_config(variant=a.variant, data_dir="data/grid_s1_prepared",
                             batch_size=a.batch, num_hard=a.num_hard,
                             total_steps=a.steps)
  c.optim.lr = 1e-3
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 30
  c.data.workers = 1
  c.data.brightness, c.data.contrast, c.data.max_crop_shift = 10.0, 0.1, 3
  c.data.val_clips = 30
  c.log_every, c.eval_every, c.checkpoint_every = 25, 500, 250
  return c
