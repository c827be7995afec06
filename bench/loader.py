"""Input pipeline throughput: training examples/s from prepared shards, per host.

  python -m bench.loader --data_dir /work/data/grid_s1_prepared --num_hard 2,11 --workers 2

Reads batches through ``input_pipeline.train_iterator`` (grain, multiprocess prefetch) and
reports examples/s and audio windows/s after a warm-up. Compare with what the train step
consumes (bench/train_step.py) and with the per-host rate a pod needs:
B / (hosts x step seconds).
"""
from __future__ import annotations

import time

from absl import flags

from bench.common import machine
from modeformer_jax import cli
from modeformer_jax.data import input_pipeline as ip


def main() -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--split", default="train")
  parser.add_argument("--num_hard", default="2,11")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--batches", type=int, default=30)
  args = parser.parse_args()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  print("machine:", machine())
  print(f"{'N_H':>4}{'batch':>7}{'workers':>9}{'examples/s':>12}{'windows/s':>11}")
  for nh in (int(x) for x in args.num_hard.split(",")):
    spec = ip.ExampleSpec(num_hard=nh, brightness=10, contrast=0.1, max_crop_shift=2)
    it = ip.train_iterator(args.data_dir, args.split, global_batch=args.batch, spec=spec,
                           seed=0, augment=True, workers=args.workers)
    for _ in range(3):  # warm-up: worker start and first prefetch
      next(it)
    t = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    rate = args.batches * args.batch / (time.perf_counter() - t)
    print(f"{nh:>4}{args.batch:>7}{args.workers:>9}{rate:>12.0f}{rate * (1 + nh):>11.0f}")
    del it


if __name__ == "__main__":
  main()
