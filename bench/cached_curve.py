"""Training with the cached two-pass step against the one-pass step: same seed, same data.

  python -m bench.cached_curve                       # tiny model on the demo's synthetic data
  python -m bench.cached_curve --steps 60 --microbatch 8 --data_dir demo_out/prepared

Two runs train ``configs/synthetic.py`` (tiny model: GroupNorm, no dropout, so the two
steps compute the same gradient up to float rounding) for ``--steps`` steps from one seed,
logging the loss every ``--log_every`` steps; a third, the control, trains the one-pass
step on 2 simulated devices (the same gradient summed in another order). The report is the two loss curves, their
largest difference, the validation accuracy each reaches and the wall time per step of
each (a CPU ratio; bench/RESULTS.md says why XLA:CPU runs the cached step slowly).
Writes ``bench/cached_curve.json`` and ``docs/cached_step_curve.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]


def _data(out: pathlib.Path, seed: int) -> pathlib.Path:
  """The demo's synthetic dataset, prepared (quick size), made once under ``out``."""
  from data_prep import prepare, synthetic
  src, prepared = out / "synthetic", out / "prepared"
  if not (src / "speakers.json").exists():
    synthetic.generate_dataset(str(src), seed=seed, workers=2, num_speakers=6,
                               num_test_speakers=2, num_val_speakers=1, clips_per_speaker=3,
                               min_seconds=2.0, max_seconds=3.0)
  if not (prepared / "train").exists():
    prepare.prepare("lrs2", str(src), str(prepared), workers=2)
  return prepared


def run(data_dir: str, steps: int, microbatch: int, batch: int, num_hard: int,
        log_every: int, out: pathlib.Path) -> dict:
  """Trains both forms into ``out``; returns the comparison."""
  from modeformer_jax import train
  from modeformer_jax.training import config_utils
  runs = {}
  for mb in (0, microbatch):
    workdir = out / f"run_mb{mb}"
    config = config_utils.load_config(
        f"{config_utils.config_file('synthetic.py')}:variant=tiny,steps={steps},batch={batch},"
        f"num_hard={num_hard}")
    config.data.dir = data_dir
    config.microbatch = mb
    config.log_every, config.eval_every, config.checkpoint_every = log_every, steps, steps
    # A finished run is reused (the bench resumes): its wall time was recorded when it ran.
    timing = workdir / "bench_wall.json"
    if timing.exists():
      final, wall = json.loads(timing.read_text()).values()
    else:
      t0 = time.perf_counter()
      final = train.train_and_evaluate(config, str(workdir))
      wall = time.perf_counter() - t0
      timing.write_text(json.dumps({"final": {k: float(v) for k, v in final.items()},
                                    "wall_s": wall}))
    hist = train.read_history(workdir)
    runs[mb] = {"final": {k: float(v) for k, v in final.items()}, "wall_s": round(wall, 1),
                "loss": hist.get("train_loss") or hist.get("loss")}
    print(f"microbatch {mb}: {wall:.0f} s, final {final}", flush=True)
  # The control: the same one-pass training on 2 simulated devices, in a process of its
  # own. Its gradient is the same sum in another order, so it differs from the 1-device run
  # by float rounding only: how far two runs drift from rounding alone (Adam's normalised
  # updates magnify tiny differences in near-zero gradients).
  control = out / "run_control_2dev"
  cmd = [sys.executable, "-m", "modeformer_jax.train", "--config",
         f"{config_utils.config_file('synthetic.py')}:variant=tiny,steps={steps},"
         f"batch={batch},num_hard={num_hard}", f"--config.data.dir={data_dir}",
         f"--config.log_every={log_every}", f"--config.eval_every={steps}",
         f"--config.checkpoint_every={steps}", "--workdir", str(control), "--no_progress"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  subprocess.run(cmd, check=True, env=env, cwd=REPO, capture_output=True)
  hist = train.read_history(control)
  runs["control"] = {"loss": hist.get("train_loss") or hist.get("loss")}
  a = runs[0]["loss"]

  def diff(key: str) -> list[float]:
    return [abs(x[1] - y[1]) for x, y in zip(a, runs[key]["loss"])]

  return {"machine": f"{platform.node()} ({platform.machine()}), CPU",
          "steps": steps, "batch": batch, "num_hard": num_hard, "microbatch": microbatch,
          "one_pass": runs[0], "cached": runs[microbatch], "control_2dev": runs["control"],
          "max_abs_loss_diff": max(diff(microbatch)),
          "max_rel_loss_diff": max(d / max(abs(x[1]), 1e-9) for d, x in zip(diff(microbatch), a)),
          "control_max_abs_loss_diff": max(diff("control")),
          "wall_ratio": runs[microbatch]["wall_s"] / runs[0]["wall_s"]}


def plot(res: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
  for key, style, label in (("one_pass", "-", "one pass"),
                            ("cached", "--", f"cached, microbatch {res['microbatch']}")):
    s, v = zip(*res[key]["loss"])
    ax.plot(s, v, style, label=label)
  ax.set_xlabel("step"), ax.set_ylabel("InfoNCE loss"), ax.legend(), ax.grid(alpha=0.3)
  s, a = zip(*res["one_pass"]["loss"])
  for key, label in (("cached", "cached vs one pass"),
                     ("control_2dev", "control: one pass on 2 devices vs 1")):
    _, b = zip(*res[key]["loss"])
    ax2.semilogy(s, [abs(x - y) + 1e-12 for x, y in zip(a, b)], label=label)
  ax2.set_xlabel("step"), ax2.set_ylabel("|loss difference|"), ax2.grid(alpha=0.3)
  ax2.legend(fontsize=7)
  fig.suptitle(f"tiny model, B = {res['batch']}, N_H = {res['num_hard']}, same seed "
               "(CPU)", fontsize=9)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  ap = argparse.ArgumentParser(prog="python -m bench.cached_curve",
                               description=__doc__.split("\n\n")[0])
  ap.add_argument("--data_dir", default=None, help="prepared shards (default: make the "
                  "demo's synthetic set under --out)")
  ap.add_argument("--out", default="/tmp/cached_curve")
  ap.add_argument("--steps", type=int, default=60)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--num_hard", type=int, default=4)
  ap.add_argument("--microbatch", type=int, default=8)
  ap.add_argument("--log_every", type=int, default=5)
  args = ap.parse_args(argv)
  from absl import flags
  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl's flags
    flags.FLAGS.mark_as_parsed()
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  data = args.data_dir or str(_data(out, seed=0))
  res = run(data, args.steps, args.microbatch, args.batch, args.num_hard, args.log_every, out)
  res["command"] = "python -m bench.cached_curve " + " ".join(argv or sys.argv[1:])
  (REPO / "bench" / "cached_curve.json").write_text(json.dumps(res, indent=1))
  plot(res, REPO / "docs" / "cached_step_curve.png")
  print(f"largest loss difference {res['max_abs_loss_diff']:.2e} "
        f"({100 * res['max_rel_loss_diff']:.4f}% of the loss; the 2-device control's "
        f"{res['control_max_abs_loss_diff']:.2e}); wall time cached / one pass "
        f"x{res['wall_ratio']:.1f} (CPU); validation: one pass "
        f"{res['one_pass']['final']}, cached {res['cached']['final']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
