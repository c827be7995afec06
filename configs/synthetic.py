"""The demo: the tiny model on the synthetic talking-mouth dataset, on CPU.

  python -m data_prep.synthetic --out demo_out/synthetic
  python -m data_prep.prepare --layout lrs2 --src demo_out/synthetic --out demo_out/prepared
  python -m modeformer_jax.train --config configs/synthetic.py \\
      --workdir demo_out/run --config.data.dir=demo_out/prepared

Arguments: ``variant`` (default tiny), ``steps``, ``batch``, ``num_hard``, ``runlocal`` (a
few-step smoke run: batch 8, no worker processes), e.g. ``configs/synthetic.py:steps=6,runlocal``.
"""
import ml_collections

from modeformer_jax.training import config_utils


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the synthetic-data config."""
  a = config_utils.parse_arg(arg, variant="tiny", steps=1100, batch=32, num_hard=4, runlocal=False)
  c = config_utils.training_config(variant=a.variant, data_dir="demo_out/prepared",
                             batch_size=a.batch, num_hard=a.num_hard,
                             total_steps=a.steps)
  c.optim.lr = 1e-3            # the tiny model on easy data learns faster with a larger step
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 20
  c.data.workers = 1
  c.data.brightness, c.data.contrast, c.data.max_crop_shift = 10.0, 0.1, 2
  c.data.val_clips = 40
  c.log_every, c.eval_every, c.checkpoint_every = 25, 500, 250
  if a.runlocal:
    c.batch_size = 8
    c.total_steps = a.steps
    c.optim.schedule, c.optim.warmup_steps = "constant", 0
    c.log_every, c.eval_every, c.checkpoint_every = 2, 3, 3
    c.data.workers = 0
    c.data.val_clips = 4
  return c
