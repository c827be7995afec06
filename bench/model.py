"""Forward+backward throughput of the ModEFormer encoders, and FLOP/s against a matmul peak.

  python -m bench.model                      # tiny (batch 32) and paper (batch 8)
  python -m bench.model --variants tiny --batch 64

One step = embed a batch of (5-frame video, mel window) pairs, a cosine loss over the
matched pairs, and its gradient with respect to all parameters. FLOPs come from XLA's
cost analysis of the compiled step; the peak is a large f32 matmul timed in the same run.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from bench.common import compiled_flops, machine, matmul_peak, time_fn
from modeformer_jax import cli
from modeformer_jax.model.models import MODEL_VARIANTS, ModEFormer, ModelConfig, count_params


def bench_variant(variant: str, batch: int, dtype: str) -> dict:
  model = ModEFormer(ModelConfig.from_mapping(dict(MODEL_VARIANTS[variant],
                                                   dtype=dtype, dropout=0.0)))
  params = model.init(jax.random.key(0))
  mel = jax.random.normal(jax.random.key(1), (batch, 80, 16))
  frames = jax.random.randint(jax.random.key(2), (batch, 5, 48, 96, 3), 0, 255,
                              dtype=jnp.int32).astype(jnp.uint8)

  def loss(p):
    a = model.embed_audio(p, mel)
    v = model.embed_video(p, frames)
    return -jnp.mean(model.sync_score(a, v))

  step = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  sec = time_fn(lambda: step(params), warmup=1, min_seconds=3.0, min_iters=2)
  flops = compiled_flops(step)
  return dict(variant=variant, batch=batch, params=count_params(params), sec=sec,
              samples_per_s=batch / sec, flops_per_s=flops / sec)


def main() -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--variants", default="tiny,paper")
  parser.add_argument("--batch", type=int, default=0, help="0 = tiny 32, paper 8")
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()
  print("machine:", machine())
  peak = matmul_peak()
  print(f"matmul peak (2048^2 f32): {peak / 1e9:.1f} GFLOP/s")
  print(f"{'variant':<10}{'params':>10}{'batch':>7}{'step s':>9}{'samples/s':>11}"
        f"{'GFLOP/s':>10}{'of peak':>9}")
  for v in args.variants.split(","):
    batch = args.batch or (32 if v in ("tiny", "micro") else 8)
    r = bench_variant(v, batch, args.dtype)
    print(f"{v:<10}{r['params'] / 1e6:>9.2f}M{batch:>7}{r['sec']:>9.3f}"
          f"{r['samples_per_s']:>11.1f}{r['flops_per_s'] / 1e9:>10.1f}"
          f"{100 * r['flops_per_s'] / peak:>8.1f}%")


if __name__ == "__main__":
  main()
