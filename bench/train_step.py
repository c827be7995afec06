"""Throughput of the full contrastive train step, and FLOP/s against a matmul peak.

  python -m bench.train_step                       # tiny (B=32) and paper (B=8), N_H=2
  python -m bench.train_step --variants paper --batch 16 --num_hard 11 --dtype bfloat16
  python -m bench.train_step --variants tiny --batch 64 --microbatch 0,8   # cached vs one pass

One step = ``train_step.make_train_step`` on a mesh of all local devices: embed B videos
and B*(1+N_H) mel windows, InfoNCE against every gathered audio window (easy negatives
on), gradients, global-norm clipping and an Adam update, with the state donated. FLOPs
come from XLA's cost analysis of the compiled step; the peak is a large f32 matmul timed
in the same run. ``--microbatch 0,N`` times the one-pass step and the cached two-pass step
(``config.microbatch``) at the same batch in one run, with each one's peak bytes from
XLA:CPU's memory_analysis, and prints their ratios.
"""
from __future__ import annotations

import time

import jax

from bench.common import compiled_flops, machine, matmul_peak
from modeformer_jax import cli
from modeformer_jax.model.models import MODEL_VARIANTS, ModEFormer, ModelConfig, count_params
from modeformer_jax.training import mesh as mesh_lib, train_step as ts


def bench_variant(variant: str, batch: int, num_hard: int, dtype: str, remat: bool,
                  min_seconds: float, microbatch: int = 0) -> dict:
  """Compiles the step once, then times donated steps until ``min_seconds`` have passed."""
  model = ModEFormer(ModelConfig.from_mapping(dict(MODEL_VARIANTS[variant],
                                                   dtype=dtype, remat=remat)))
  mesh = mesh_lib.make_mesh()
  tx, _ = ts.make_optimizer({"lr": 1e-4, "grad_clip": 1.0})
  loss_cfg = {"tau": 0.1, "easy_negatives": True, "tolerance": 1}
  rep = mesh_lib.replicated(mesh)
  state = jax.jit(lambda r: ts.create_train_state(model, tx, r), out_shardings=rep)(
      jax.random.key(0))
  batch = jax.device_put(ts.random_batch(batch, num_hard, seed=1),
                         mesh_lib.batch_sharding(mesh))
  rng = jax.random.key(2)
  t0 = time.perf_counter()
  step = ts.make_train_step(model, tx, mesh, loss_cfg, microbatch=microbatch).lower(
      state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  mem = step.memory_analysis()
  peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes)
  flops = compiled_flops(step)
  state, m = step(state, batch, rng)   # warm-up
  jax.block_until_ready(m)
  n, start = 0, time.perf_counter()
  while n < 2 or time.perf_counter() - start < min_seconds:
    state, m = step(state, batch, rng)
    jax.block_until_ready(m)
    n += 1
  sec = (time.perf_counter() - start) / n
  return dict(params=count_params(state["params"]), sec=sec, compile_s=compile_s,
              samples_per_s=batch["video"].shape[0] / sec, flops=flops,
              flops_per_s=flops / sec, loss=float(m["loss"]), peak=peak)


def main() -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--variants", default="tiny,paper")
  parser.add_argument("--batch", type=int, default=0, help="global batch; 0 = tiny 32, paper 8")
  parser.add_argument("--num_hard", type=int, default=2)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--min_seconds", type=float, default=5.0)
  parser.add_argument("--microbatch", default="0",
                      help="comma list: 0 = one-pass step, N = cached two-pass step")
  args = parser.parse_args()
  print("machine:", machine())
  peak = matmul_peak()
  print(f"matmul peak (2048^2 f32): {peak / 1e9:.1f} GFLOP/s")
  print(f"train step: N_H={args.num_hard}, easy negatives, dtype={args.dtype}, "
        f"remat={args.remat}, {len(jax.devices())} device(s)")
  print(f"{'variant':<8}{'params':>9}{'batch':>7}{'windows':>9}{'step s':>9}{'samples/s':>11}"
        f"{'GFLOP/step':>12}{'GFLOP/s':>10}{'of peak':>9}{'compile s':>11}{'micro':>7}"
        f"{'peak MiB':>10}")
  for v in args.variants.split(","):
    b = args.batch or (32 if v in ("tiny", "micro") else 8)
    base = None
    for mb in (int(x) for x in args.microbatch.split(",")):
      r = bench_variant(v, b, args.num_hard, args.dtype, args.remat, args.min_seconds, mb)
      print(f"{v:<8}{r['params'] / 1e6:>8.2f}M{b:>7}{b * (1 + args.num_hard):>9}"
            f"{r['sec']:>9.3f}{r['samples_per_s']:>11.1f}{r['flops'] / 1e9:>12.2f}"
            f"{r['flops_per_s'] / 1e9:>10.1f}{100 * r['flops_per_s'] / peak:>8.1f}%"
            f"{r['compile_s']:>11.1f}{mb:>7}{r['peak'] / 2**20:>10.1f}", flush=True)
      if base is None:
        base = r
      else:
        print(f"  microbatch {mb} against the first row: step time x{r['sec'] / base['sec']:.2f}, "
              f"peak x{r['peak'] / base['peak']:.2f}", flush=True)


if __name__ == "__main__":
  main()
