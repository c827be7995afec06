"""Lip-sync accuracy benchmark: ``python -m modeformer_jax.eval``.

  python -m modeformer_jax.eval --checkpoint runs/lrs2_s2 --data_dir /data/lrs2_prepared \\
      --split test [--audio_shift 1] [--name "ModEFormer (ours)"]

The standard LRS2 protocol (VocaLiST's test script, followed by the paper): every 5-frame
window position of every test clip is scored against the audio windows at offsets
-15..+15; for clip lengths K = 5..15 the score rows of the K-5+1 positions around it are
averaged; a position is correct when the best offset is within +-1 of zero. The accuracy is
the mean over clips (the pooled mean over positions is reported as well). Each clip's
windows are embedded once; all offsets are dot products.

Writes ``results.json`` (per-clip results), ``table.md`` (the paper's Table 1 layout) and
``accuracy_by_length.png`` into ``--out`` (default ``<checkpoint>/eval_<split>``).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

from modeformer_jax import checkpoints, evaluation, plots, records, sync_eval


def run_eval(checkpoint: str, data_dir: str, split: str = "test", *, audio_shift: int = 0,
             max_clips: int | None = None, which: str = "best", name: str | None = None,
             out: str | None = None, progress: bool = True) -> dict:
  """Evaluates a checkpoint on a prepared split; writes and returns the results."""
  model, params, meta = checkpoints.load_params(checkpoint, which=which)
  n = len(records.open_split(data_dir, split))
  total = n if max_clips is None else min(n, max_clips)
  t0 = time.perf_counter()
  result = evaluation.evaluate(model, params,
                               evaluation.record_clips(data_dir, split, max_clips=max_clips),
                               audio_shift=audio_shift, progress=progress, total=total)
  seconds = time.perf_counter() - t0
  name = name or f"{pathlib.Path(checkpoint).name} (step {meta.get('step', '?')})"
  result.update(checkpoint=str(checkpoint), step=meta.get("step"), data_dir=str(data_dir),
                split=split, audio_shift=audio_shift, seconds=seconds,
                clips_per_s=result["num_clips"] / max(seconds, 1e-9), name=name)
  out_dir = pathlib.Path(out or pathlib.Path(checkpoint) / f"eval_{split}")
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "results.json").write_text(json.dumps(sync_eval.jsonable(result), indent=1))
  table = plots.format_table({name: result["accuracy"]})
  (out_dir / "table.md").write_text(table + "\n")
  plots.plot_accuracy_by_length({name: result["accuracy"]}, out_dir / "accuracy_by_length.png")
  result["out_dir"] = str(out_dir)
  return result


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True,
                      help="training workdir, <workdir>/checkpoints/<step>, or exported model dir")
  parser.add_argument("--data_dir", help="prepared dataset (data_prep.prepare output)")
  parser.add_argument("--config", help="take --data_dir from this config's data.dir")
  parser.add_argument("--split", default="test")
  parser.add_argument("--audio_shift", type=int, default=0,
                      help="shift all audio by k frames before scoring")
  parser.add_argument("--max_clips", type=int, default=None)
  parser.add_argument("--which", choices=("best", "latest"), default="best")
  parser.add_argument("--name", default=None, help="row name in the table")
  parser.add_argument("--out", default=None)
  parser.add_argument("--no_progress", action="store_true")
  args = parser.parse_args(argv)
  data_dir = args.data_dir
  if data_dir is None and args.config:
    from modeformer_jax.config_utils import load_config
    data_dir = load_config(args.config).data.dir
  if data_dir is None:
    parser.error("give --data_dir or --config")
  r = run_eval(args.checkpoint, data_dir, args.split, audio_shift=args.audio_shift,
               max_clips=args.max_clips, which=args.which, name=args.name, out=args.out,
               progress=not args.no_progress)
  print(plots.format_table({r["name"]: r["accuracy"]}))
  pooled = ", ".join(f"{k}: {100 * v:.2f}" for k, v in r["pooled_accuracy"].items())
  print(f"pooled over positions: {pooled}")
  print(f"{r['num_clips']} clips scored, {r['num_skipped']} skipped "
        f"({r['clips_per_s']:.1f} clips/s); results in {r['out_dir']}")
  for s in r["skipped"][:10]:
    print(f"  skipped: {s['reason']}")


if __name__ == "__main__":
  main()
