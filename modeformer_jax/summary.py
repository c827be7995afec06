"""Parameter table and forward FLOPs of a model config, without allocating the model.

  python -m modeformer_jax.summary --config configs/modeformer.py:paper

Parameters come from ``jax.eval_shape`` of the initialiser; FLOPs per (video, audio) pair
come from XLA's cost analysis of the lowered (not executed) forward pass.
"""
from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeformer_jax.config_utils import load_config
from modeformer_jax.models import ModEFormer, count_params


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


def summarize(config_spec: str, depth: int = 3) -> str:
  """The printed report for one config."""
  config = load_config(config_spec)
  model = ModEFormer(config.model)
  params = jax.eval_shape(model.init, jax.random.key(0))
  total = count_params(params)
  lines = [f"config: {config_spec}", f"{'module':<48}{'params':>14}{'share':>8}"]
  for name, n in param_table(params, depth):
    indent = "  " * name.count("/")
    lines.append(f"{indent + name.split('/')[-1]:<48}{n:>14,}{100 * n / total:>7.1f}%")
  lines.append(f"{'total':<48}{total:>14,} ({total / 1e6:.2f}M)")
  f = forward_flops(model)
  lines.append(f"forward FLOPs per (video, audio) pair: {f['pair'] / 1e9:.3f} GFLOP "
               f"(video {f['video'] / 1e9:.3f}, audio {f['audio'] / 1e9:.3f})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="e.g. configs/modeformer.py:paper")
  parser.add_argument("--depth", type=int, default=3, help="module depth of the table")
  args = parser.parse_args(argv)
  print(summarize(args.config, args.depth))


if __name__ == "__main__":
  main()
