"""The README's main job (``make demo``): synthetic data -> shards -> train -> eval -> detect.

  python -m modeformer_jax.demo --out demo_out            # the full demo (~15 min, 2 cores)
  python -m modeformer_jax.demo --out /tmp/d --quick      # a few steps, for the test suite

1. ``data_prep.synthetic`` writes h264/aac mp4 files of synthetic talking mouths in the LRS2
   layout (test speakers never appear in training).
2. ``data_prep.prepare`` turns them into ArrayRecord shards (lip crops + mel).
3. ``modeformer_jax.train`` trains the tiny model (``configs/synthetic.py``).
4. ``modeformer_jax.eval`` scores the held-out test speakers with the standard protocol.
5. ``modeformer_jax.detect`` finds known injected audio offsets in test clips.
6. Plots: training curve, accuracy by clip length, offset histogram.

Every step resumes: running the demo again reuses what is already there.
"""
from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from modeformer_jax import cli


def _phase(name: str, timings: dict):
  class _Timer:
    def __enter__(self):
      print(f"\n=== {name} ===", flush=True)
      self.t = time.perf_counter()

    def __exit__(self, *exc):
      timings[name] = round(time.perf_counter() - self.t, 1)
      print(f"--- {name}: {timings[name]} s", flush=True)
  return _Timer()


def run(out: str, quick: bool = False, steps: int | None = None, seed: int = 0,
        workers: int = 2, variant: str = "tiny") -> dict:
  """Runs the whole demo into ``out``; returns the summary it also writes as JSON."""
  from modeformer_jax import eval as eval_lib, train
  from modeformer_jax.evaluation import plots
  from modeformer_jax.training import config_utils
  from data_prep import prepare, synthetic

  out_p = pathlib.Path(out).absolute()
  out_p.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()
  src, prepared, workdir = out_p / "synthetic", out_p / "prepared", out_p / "run"

  with _phase("1. generate the synthetic dataset", timings):
    if (src / "speakers.json").exists():
      print(f"reusing {src}")
    else:
      kw = dict(num_speakers=4, num_test_speakers=2, num_val_speakers=1, clips_per_speaker=2,
                min_seconds=2.0, max_seconds=2.5) if quick else {}
      synthetic.generate_dataset(str(src), seed=seed, workers=workers, **kw)

  with _phase("2. prepare ArrayRecord shards", timings):
    report = prepare.prepare("lrs2", str(src), str(prepared), workers=workers)
    print(f"prepared {report['written']} clips of {report['inputs']} inputs; "
          f"skipped {sum(report['skipped'].values()) if report['skipped'] else 0}")

  with _phase("3. train the tiny model", timings):
    arg = f"variant={variant}"
    arg += f",steps={steps}" if steps else (",steps=4" if quick else "")
    arg += ",runlocal" if quick else ""
    config = config_utils.load_config(f"{config_utils.config_file('synthetic.py')}:{arg}")
    config.data.dir = str(prepared)
    final = train.train_and_evaluate(config, str(workdir))
    print(f"finished at step {final['step']}: " +
          ", ".join(f"{k}={v:.3f}" for k, v in final.items() if k != "step"))

  with _phase("4. evaluate on unseen test speakers", timings):
    res = eval_lib.run_eval(str(workdir), str(prepared), "test", which="latest",
                            name="tiny, synthetic", out=str(out_p / "eval_test"))
    print(plots.format_table({res["name"]: res["accuracy"]}))

  with _phase("5. detect injected offsets on test clips", timings):
    from modeformer_jax import analysis
    analyzer = analysis.Analyzer(detector=analysis.load_detector(workdir, which="latest"))
    test_list = (src / "test.txt").read_text().split()
    files = [src / "mvlrs_v1" / "main" / f"{line}.mp4" for line in test_list]
    shifts = [-7, -4, -2, 0, 3, 5, 7] if not quick else [3]
    rows = []
    for i, k in enumerate(shifts):
      f = files[i % len(files)]
      r = analysis.detect_file(analyzer, str(f), audio_shift_frames=k)
      rows.append({"file": str(f.relative_to(src)), "injected": k,
                   "detected": r["offset_frames"], "confidence": r["confidence"]})
      print(f"{f.name}: injected {k:+d}, detected {r['offset_frames']:+d} "
            f"(confidence {r['confidence']:.3f})")
      if i == 0:
        plots.plot_offset(r, out_p / "offset_example.png",
                          title=f"{f.name}, audio shifted by {k:+d} frames")
    exact = float(np.mean([r["injected"] == r["detected"] for r in rows]))
    errors = [r["detected"] - r["injected"] for r in rows]
    plots.plot_offset_histogram(errors, out_p / "offset_error_histogram.png")
    print(f"exact detections: {exact:.0%} of {len(rows)}")

  with _phase("6. plots", timings):
    plots.plot_training_curves(train.read_history(workdir), out_p / "training_curve.png")
    plots.plot_accuracy_by_length({res["name"]: res["accuracy"]},
                                  out_p / "accuracy_by_length.png")

  summary = {
      "accuracy": {str(k): v for k, v in res["accuracy"].items()},
      "pooled_accuracy": {str(k): v for k, v in res["pooled_accuracy"].items()},
      "test_clips": res["num_clips"], "test_clips_skipped": res["num_skipped"],
      "detection": rows, "detection_exact": exact, "steps": final["step"],
      "seconds": timings, "total_seconds": round(time.perf_counter() - t_start, 1),
  }
  (out_p / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"\nDemo finished in {summary['total_seconds']} s. Sync accuracy on unseen synthetic "
        f"test speakers: {100 * res['accuracy'][5]:.1f}% (5 frames), "
        f"{100 * res['accuracy'][15]:.1f}% (15 frames); chance is about 10%.")
  print(f"Plots and results in {out_p}")
  return summary


def main(argv: list[str] | None = None) -> None:
  parser = cli.parser(__name__, __doc__)
  parser.add_argument("--out", default="demo_out")
  parser.add_argument("--quick", action="store_true", help="a few steps on a tiny dataset")
  parser.add_argument("--steps", type=int, default=None, help="training steps override")
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--variant", default="tiny", help="model variant (models.MODEL_VARIANTS)")
  args = parser.parse_args(argv)
  from absl import flags
  if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
    flags.FLAGS.mark_as_parsed()
  run(args.out, quick=args.quick, steps=args.steps, workers=args.workers,
      variant=args.variant)


if __name__ == "__main__":
  main()
