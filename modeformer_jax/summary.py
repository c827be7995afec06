"""Parameter table and forward FLOPs of a model config, without allocating the model.

  python -m modeformer_jax.summary --config configs/modeformer.py:paper
  python -m modeformer_jax.summary --config configs/lrs.py:stage=2 --config.model.remat=True

Parameters come from ``jax.eval_shape`` of the initialiser; FLOPs per (video, audio) pair
come from XLA's cost analysis of the lowered (not executed) forward pass.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from modeformer_jax.model.models import ModEFormer, count_params
from modeformer_jax.training import config_utils


def param_table(params: Any, depth: int = 3) -> list[tuple[str, int]]:
  """Rows ``(module path, parameter count)`` for modules up to ``depth`` levels deep."""
  rows: dict[str, int] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    keys = [getattr(k, "key", str(k)) for k in path]
    n = int(np.prod(leaf.shape))
    for d in range(1, min(depth, len(keys) - 1) + 1):
      name = "/".join(keys[:d])
      rows[name] = rows.get(name, 0) + n
  return sorted(rows.items())


def forward_flops(model: ModEFormer, batch: int = 1) -> dict[str, float]:
  """XLA-estimated FLOPs of embedding ``batch`` audio windows and video clips."""
  params = jax.eval_shape(model.init, jax.random.key(0))
  mel = jax.ShapeDtypeStruct((batch, *model.audio_shape), jnp.float32)
  frames = jax.ShapeDtypeStruct((batch, *model.video_shape), jnp.float32)

  def flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else float("nan")

  fa = flops(model.embed_audio, params, mel)
  fv = flops(model.embed_video, params, frames)
  return {"audio": fa / batch, "video": fv / batch, "pair": (fa + fv) / batch}


def summarize(config: ml_collections.ConfigDict, depth: int = 3) -> str:
  """The printed report for the model of a config (anything with a ``model`` field)."""
  model = ModEFormer(config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))
  total = count_params(params)
  lines = [f"{'module':<48}{'params':>14}{'share':>8}"]
  for name, n in param_table(params, depth):
    indent = "  " * name.count("/")
    lines.append(f"{indent + name.split('/')[-1]:<48}{n:>14,}{100 * n / total:>7.1f}%")
  lines.append(f"{'total':<48}{total:>14,} ({total / 1e6:.2f}M)")
  f = forward_flops(model)
  lines.append(f"forward FLOPs per (video, audio) pair: {f['pair'] / 1e9:.3f} GFLOP "
               f"(video {f['video'] / 1e9:.3f}, audio {f['audio'] / 1e9:.3f})")
  return "\n".join(lines)


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("depth", 3, "Module depth of the table.", lower_bound=1, flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  """CLI entry point (``argv`` without the program name; default ``sys.argv``)."""
  fv = config_utils.parse_flags(argv, __doc__, _define_flags)
  print(f"config: {config_utils.describe(fv)}")
  print(summarize(fv.config, fv.depth))


if __name__ == "__main__":
  main()
