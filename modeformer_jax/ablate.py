"""The paper's Fig. 3 ablation: hard negatives N_H against batch size, plus 3D-SyncNet and stages.

  # tiny scale on a CPU (synthetic data, a fixed number of audio windows per step):
  python -m modeformer_jax.ablate --config configs/synthetic.py --data_dir demo_out/prepared \\
      --num_hard 2,5,11 --windows_per_step 96 --steps 150 --extras syncnet3d,stage2 \\
      --out runs/ablate
  # a pod, paper model: the batch per N_H is the largest that fits the memory budget
  python -m modeformer_jax.ablate --config configs/lrs2_stage2.py --data_dir /data/lrs2 \\
      --num_hard 2,5,8,11,15,20,25 --memory-per-device 80GiB --steps 20000 --out gs://.../ablate

For every N_H the global batch is either ``windows_per_step // (1 + N_H)`` (each step sees
the same number of audio windows, so more hard negatives mean fewer clips per batch) or the
largest batch whose compiled train step fits ``--memory-per-device`` (``modeformer_jax.plan``).
Each setting is trained from scratch with the training CLI's library function, evaluated
at clip lengths 5..15 on ``--eval_split``, and the table (paper's Table 1 layout) and the
plot of accuracy against N_H are written to ``--out``. ``--extras`` adds the 3D-SyncNet
ablation (same CNNs, no transformers; at the first N_H) and stage 2 (K entries per clip,
started from the first N_H's stage-1 run). Every run resumes if its workdir exists.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import jax

from modeformer_jax import eval as eval_lib
from modeformer_jax import plots, sync_eval, train
from modeformer_jax.config_utils import load_config


def _batch_for(config: Any, num_hard: int, windows: int | None, budget: int | None,
               devices: int) -> int:
  if budget is not None:
    from modeformer_jax import plan
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    b = plan.Planner(config, mesh).largest_batch(num_hard, bool(config.model.remat), budget,
                                                 multiple=1)
    if not b:
      raise ValueError(f"N_H={num_hard}: not even the smallest batch fits the budget")
    return int(b)
  b = windows // (1 + num_hard)
  b -= b % devices
  if b < devices:
    raise ValueError(f"{windows} windows per step leave no batch for N_H={num_hard}")
  return b


def run_one(config: Any, workdir: pathlib.Path, eval_split: str, max_clips: int | None,
            name: str) -> dict:
  # Training time accumulates over invocations (a resumed run reports its whole cost, not
  # the few seconds of the invocation that found it finished).
  timing = workdir / "train_seconds.json"
  before = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
  t0 = time.perf_counter()
  final = train.train_and_evaluate(config, str(workdir))
  train_s = before + time.perf_counter() - t0
  if jax.process_index() == 0:
    timing.write_text(json.dumps({"seconds": train_s}))
  res = eval_lib.run_eval(str(workdir), config.data.dir, eval_split, which="latest",
                          max_clips=max_clips, name=name, out=str(workdir / "eval"))
  return {"name": name, "batch_size": int(config.batch_size), "num_hard": int(config.num_hard),
          "windows_per_step": int(config.batch_size) * (1 + int(config.num_hard)),
          "steps": final["step"], "train_seconds": round(train_s, 1),
          "accuracy": res["accuracy"], "pooled_accuracy": res["pooled_accuracy"],
          "num_clips": res["num_clips"]}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True)
  parser.add_argument("--data_dir", default=None, help="overrides config.data.dir")
  parser.add_argument("--num_hard", default="2,5,11")
  parser.add_argument("--windows_per_step", type=int, default=None,
                      help="fixed audio windows per step (B = this // (1 + N_H))")
  parser.add_argument("--memory-per-device", dest="memory", default=None,
                      help="instead: the largest B whose step fits, e.g. 80GiB")
  parser.add_argument("--steps", type=int, default=None, help="training steps per run")
  parser.add_argument("--extras", default="", help="comma list: syncnet3d, stage2")
  parser.add_argument("--eval_split", default="test")
  parser.add_argument("--max_clips", type=int, default=None)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  if (args.windows_per_step is None) == (args.memory is None):
    parser.error("give exactly one of --windows_per_step and --memory-per-device")
  budget = None
  if args.memory:
    from modeformer_jax.plan import parse_bytes
    budget = parse_bytes(args.memory)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  base = load_config(args.config)
  if args.data_dir:
    base.data.dir = args.data_dir
  if args.steps:
    base.total_steps = args.steps
  devices = jax.device_count()
  rows: list[dict] = []

  def configured(num_hard: int, **changes) -> Any:
    c = base.copy_and_resolve_references()
    c.num_hard = num_hard
    c.batch_size = _batch_for(c, num_hard, args.windows_per_step, budget, devices)
    for k, v in changes.items():
      node = c
      *parents, leaf = k.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = v
    return c

  hards = [int(x) for x in args.num_hard.split(",")]
  for nh in hards:
    c = configured(nh)
    print(f"\n=== N_H={nh}: global batch {c.batch_size} ===", flush=True)
    rows.append(run_one(c, out / f"nh{nh}", args.eval_split, args.max_clips,
                        f"ModEFormer N_H={nh} B={c.batch_size}"))
  extras = [e for e in args.extras.split(",") if e]
  for extra in extras:
    nh = hards[0]
    if extra == "syncnet3d":
      c = configured(nh, **{"model.use_transformer": False})
      name = f"3D-SyncNet N_H={nh} B={c.batch_size}"
    elif extra == "stage2":
      k = 2
      c = configured(nh, **{"init_from": str((out / f"nh{nh}").absolute()),
                            "data.clips_per_entry": k, "stage": 2})
      c.batch_size -= c.batch_size % (k * devices)
      name = f"ModEFormer stage 2 (K={k}) N_H={nh} B={c.batch_size}"
    else:
      raise ValueError(f"unknown extra {extra!r}; known: syncnet3d, stage2")
    print(f"\n=== {name} ===", flush=True)
    rows.append(run_one(c, out / extra, args.eval_split, args.max_clips, name))

  table = plots.format_table({r["name"]: r["accuracy"] for r in rows})
  print("\n" + table)
  (out / "table.md").write_text(table + "\n")
  (out / "results.json").write_text(json.dumps(sync_eval.jsonable(rows), indent=1))
  sweep = {r["num_hard"]: r["accuracy"] for r in rows if r["name"].startswith("ModEFormer N_H")}
  plots.plot_ablation(sweep, out / "accuracy_vs_num_hard.png")
  print(f"results in {out}")


if __name__ == "__main__":
  main()
