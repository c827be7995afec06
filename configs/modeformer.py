"""ModEFormer model configs: the paper's model, the 3D-SyncNet ablation, and tiny/micro.

Variants are chosen with the string form ``configs/modeformer.py:<variant>``::

  python -m modeformer_jax.summary --config configs/modeformer.py:paper
  python -m modeformer_jax.summary --config configs/modeformer.py:syncnet3d
  python -m modeformer_jax.summary --config configs/modeformer.py:tiny

Arguments: ``variant`` (paper | syncnet3d | tiny | micro), ``bf16`` (bfloat16 compute),
``remat`` (rematerialise every block), e.g. ``configs/modeformer.py:variant=paper,bf16``.
"""
import ml_collections

from modeformer_jax.training import config_utils


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config for ``arg`` (see the module docstring)."""
  a = config_utils.parse_arg(arg, variant="paper", bf16=False, remat=False)
  config = ml_collections.ConfigDict()
  config.model = config_utils.model_config(a.variant)
  if a.bf16:
    config.model.dtype = "bfloat16"
  config.model.remat = a.remat
  # The planner compiles the cached two-pass step for --config.microbatch=N (0: one pass).
  config.microbatch = 0
  # --config.host_inputs=True: lips and mel stay in host memory and move to the chip a
  # chunk at a time (config_utils.training_config says why it is off by default).
  config.host_inputs = False
  return config
