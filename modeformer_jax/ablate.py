"""The paper's Fig. 3 ablation: hard negatives N_H against batch size, plus 3D-SyncNet and stages.

  # tiny scale on a CPU (synthetic data, a fixed number of audio windows per step):
  python -m modeformer_jax.ablate --config configs/synthetic.py --data_dir demo_out/prepared \\
      --num_hard 2,5,11 --windows_per_step 96 --steps 150 --extras syncnet3d,stage2 \\
      --out runs/ablate
  # the paper's grid at one B: the cached two-pass step keeps memory flat in B
  python -m modeformer_jax.ablate --config configs/lrs.py:stage=2 --data_dir /data/lrs2 \\
      --num_hard 2,5,11,25 --batch_size 2000 --config.microbatch=40 --steps 20000 --out ...
  # a pod, paper model: the batch per N_H is the largest that fits the memory budget
  python -m modeformer_jax.ablate --config configs/lrs.py:stage=2 --data_dir /data/lrs2 \\
      --num_hard 2,5,8,11,15,20,25 --memory_per_device 80GiB --steps 20000 --out gs://.../ablate

For every N_H the global batch is ``--batch_size`` (the same for all, the paper's grid; with
``--config.microbatch`` the cached two-pass step holds one chunk's activations, so N_H = 25
at B = 2000 compiles within a 16-GiB chip), or ``windows_per_step // (1 + N_H)`` (each step
sees the same number of audio windows, so more hard negatives mean fewer clips per batch),
or the largest batch whose compiled train step fits ``--memory_per_device``
(``modeformer_jax.plan``).
Each setting is trained from scratch with the training CLI's library function, evaluated
at clip lengths 5..15 on ``--eval_split``, and the table (paper's Table 1 layout) and the
plot of accuracy against N_H are written to ``--out``. ``--extras`` adds the 3D-SyncNet
ablation (same CNNs, no transformers; at the first N_H) and stage 2 (K entries per clip,
started from the first N_H's stage-1 run). Every run resumes if its workdir exists.
"""
from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Sequence

import jax
from absl import flags

from modeformer_jax import eval as eval_lib, jsonio, plan, train
from modeformer_jax.evaluation import plots
from modeformer_jax.training import config_utils, mesh as mesh_lib


def _batch_for(config: Any, num_hard: int, windows: int | None, budget: int | None,
               devices: int, max_batch: int = plan.MAX_BATCH,
               batch_size: int | None = None) -> int:
  """The global batch of one run: fixed (``batch_size``, for the cached two-pass step, whose
  memory does not grow with it), a fixed window count, or the largest that fits ``budget``."""
  if batch_size is not None:
    if batch_size % devices:
      raise ValueError(f"--batch_size {batch_size} does not divide by {devices} devices")
    return batch_size
  if budget is not None:
    planner = plan.Planner(config, mesh_lib.make_mesh(jax.devices()[:devices]))
    best = planner.largest_batch(num_hard, bool(config.model.remat), budget, multiple=1,
                                 max_batch=max_batch)
    if best is None:
      raise ValueError(f"N_H={num_hard}: not even a batch of {devices} (one per device) "
                       f"fits {budget} bytes per device")
    return int(best["B"])
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


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("data_dir", None, "Overrides config.data.dir.", flag_values=fv)
  flags.DEFINE_string("num_hard", "2,5,11", "N_H values (comma list).", flag_values=fv)
  flags.DEFINE_integer("windows_per_step", None, "Fixed audio windows per step "
                       "(B = this // (1 + N_H)).", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("memory_per_device", None, "Instead: the largest B whose step fits, "
                      "e.g. 80GiB.", flag_values=fv)
  flags.DEFINE_integer("batch_size", None, "Instead: the same global B for every N_H (the "
                       "paper's grid); with --config.microbatch=M (the cached two-pass step) "
                       "memory does not grow with B.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_batch", plan.MAX_BATCH, "With --memory_per_device: the largest "
                       "global batch considered.", flag_values=fv)
  flags.DEFINE_integer("steps", None, "Training steps per run.", flag_values=fv)
  flags.DEFINE_string("extras", "", "Comma list: syncnet3d, stage2.", flag_values=fv)
  flags.DEFINE_string("eval_split", "test", "Split the runs are evaluated on.", flag_values=fv)
  flags.DEFINE_integer("max_clips", None, "Evaluate at most this many clips.", flag_values=fv)
  flags.DEFINE_string("out", None, "Folder for the runs, table and plot.", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)
  flags.register_multi_flags_validator(
      ["windows_per_step", "memory_per_device", "batch_size"],
      lambda f: sum(f[k] is not None for k in f) == 1,
      "give exactly one of --windows_per_step, --memory_per_device and --batch_size",
      flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  """CLI entry point (``argv`` without the program name)."""
  args = config_utils.parse_flags(argv, __doc__, _define_flags)
  budget = None
  if args.memory_per_device:
    budget = plan.parse_bytes(args.memory_per_device)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  base = args.config
  if args.data_dir:
    base.data.dir = args.data_dir
  if args.steps:
    base.total_steps = args.steps
  devices = jax.device_count()
  rows: list[dict] = []

  def configured(num_hard: int, **changes) -> Any:
    c = base.copy_and_resolve_references()
    c.num_hard = num_hard
    c.batch_size = _batch_for(c, num_hard, args.windows_per_step, budget, devices,
                              args.max_batch, args.batch_size)
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
                            "data.entries_per_clip": k})
      c.batch_size -= c.batch_size % (k * devices)
      name = f"ModEFormer stage 2 (K={k}) N_H={nh} B={c.batch_size}"
    else:
      raise ValueError(f"unknown extra {extra!r}; known: syncnet3d, stage2")
    print(f"\n=== {name} ===", flush=True)
    rows.append(run_one(c, out / extra, args.eval_split, args.max_clips, name))

  table = plots.format_table({r["name"]: r["accuracy"] for r in rows})
  print("\n" + table)
  (out / "table.md").write_text(table + "\n")
  (out / "results.json").write_text(json.dumps(jsonio.jsonable(rows), indent=1))
  sweep = {r["num_hard"]: r["accuracy"] for r in rows if r["name"].startswith("ModEFormer N_H")}
  plots.plot_ablation(sweep, out / "accuracy_vs_num_hard.png")
  print(f"results in {out}")


if __name__ == "__main__":
  main()
