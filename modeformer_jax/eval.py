"""Lip-sync accuracy benchmark: ``python -m modeformer_jax.eval``.

  python -m modeformer_jax.eval --checkpoint runs/lrs2_s2 --data_dir /data/lrs2_prepared \\
      --split test [--audio_shift 1] [--name "ModEFormer (ours)"]

The standard LRS2 protocol (VocaLiST's test script, followed by the paper; the rule is in
``modeformer_jax.evaluation.protocol``): every 5-frame window position of every test clip is scored
against the audio windows at offsets -15..+15; for clip lengths K = 5..15 the score rows of
the K-5+1 positions around it are averaged (clipped at the clip's ends; an offset whose
audio is missing in any averaged row is out; ties go to the first maximum); a position is
correct when the best offset is within +-1 of zero. The accuracy is the mean over clips
(the pooled mean over positions is reported as well). Each clip's windows are embedded
once; all offsets are dot products. ``--rule available`` gives the stricter variant that
averages each offset over the rows where it exists; ``--max_offset`` narrows the search
for datasets of short clips (say so when you report such numbers).

Writes ``results.json`` (per-clip results), ``table.md`` (the paper's Table 1 layout) and
``accuracy_by_length.png`` into ``--out`` (default ``<checkpoint>/eval_<split>``).
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Sequence

from absl import flags

from modeformer_jax import jsonio
from modeformer_jax.data import records
from modeformer_jax.evaluation import embedding, plots, protocol
from modeformer_jax.model import checkpoints, input_spec
from modeformer_jax.training import config_utils

log = logging.getLogger("modeformer_jax.eval")


def _check_input_spec(meta: dict, data_dir: str, where: str) -> None:
  """Warns when the prepared data's features differ from the model's training input."""
  if not meta.get("input_spec"):
    log.warning("%s records no input spec; cannot check that %s matches its training "
                "features", where, data_dir)
    return
  model_spec = input_spec.from_model_meta(meta, where)
  data_spec = input_spec.InputSpec.from_dict(input_spec.read_dataset_spec(data_dir))
  if data_spec != model_spec:
    log.warning("%s was prepared with %s, but the model was trained on %s: accuracy on "
                "other features is not the model's", data_dir, data_spec.describe(),
                model_spec.describe())


def run_eval(checkpoint: str, data_dir: str, split: str = "test", *, audio_shift: int = 0,
             max_clips: int | None = None, which: str = "best", name: str | None = None,
             out: str | None = None, progress: bool = True,
             max_offset: int = protocol.MAX_OFFSET,
             rule: str = protocol.DEFAULT_RULE) -> dict:
  """Evaluates a checkpoint on a prepared split; writes and returns the results."""
  model, params, meta = checkpoints.load_model(checkpoint, which=which)
  _check_input_spec(meta, data_dir, str(checkpoint))
  n = len(records.open_split(data_dir, split))
  total = n if max_clips is None else min(n, max_clips)
  t0 = time.perf_counter()
  result = embedding.evaluate(model, params,
                               embedding.record_clips(data_dir, split, max_clips=max_clips),
                               audio_shift=audio_shift, progress=progress, total=total,
                               max_offset=max_offset, rule=rule)
  seconds = time.perf_counter() - t0
  name = name or f"{pathlib.Path(checkpoint).name} (step {meta.get('step', '?')})"
  result.update(checkpoint=str(checkpoint), step=meta.get("step"), data_dir=str(data_dir),
                split=split, audio_shift=audio_shift, max_offset=max_offset, seconds=seconds,
                clips_per_s=result["num_clips"] / max(seconds, 1e-9), name=name)
  out_dir = pathlib.Path(out or pathlib.Path(checkpoint) / f"eval_{split}")
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "results.json").write_text(json.dumps(jsonio.jsonable(result), indent=1))
  table = plots.format_table({name: result["accuracy"]})
  (out_dir / "table.md").write_text(table + "\n")
  plots.plot_accuracy_by_length({name: result["accuracy"]}, out_dir / "accuracy_by_length.png")
  result["out_dir"] = str(out_dir)
  return result


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("checkpoint", None, "Training workdir, <workdir>/checkpoints/<step>, or "
                      "exported model dir.", flag_values=fv)
  flags.mark_flag_as_required("checkpoint", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Prepared dataset (data_prep.prepare output); default: "
                      "the --config's data.dir.", flag_values=fv)
  flags.DEFINE_string("split", "test", "Split to score.", flag_values=fv)
  flags.DEFINE_integer("audio_shift", 0, "Shift all audio by k frames before scoring.",
                       flag_values=fv)
  flags.DEFINE_integer("max_clips", None, "Score at most this many clips.", flag_values=fv)
  flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of a training workdir.",
                    flag_values=fv)
  flags.DEFINE_string("name", None, "Row name in the table.", flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder; default <checkpoint>/eval_<split>.",
                      flag_values=fv)
  flags.DEFINE_integer("max_offset", protocol.MAX_OFFSET, "Search offsets -N..+N frames "
                       "(15 is the literature's).", lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("rule", protocol.DEFAULT_RULE, list(protocol.RULES), "Averaging rule "
                    "for K > 5 frames (see protocol).", flag_values=fv)
  flags.DEFINE_bool("no_progress", False, "Log lines instead of a progress bar.",
                    flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  """CLI entry point (``argv`` without the program name)."""
  args = config_utils.parse_flags(argv, __doc__, _define_flags, config_required=False)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
  data_dir = args.data_dir or (args.config.data.dir if args.config else None)
  if data_dir is None:
    raise SystemExit("eval: give --data_dir or --config")
  r = run_eval(args.checkpoint, data_dir, args.split, audio_shift=args.audio_shift,
               max_clips=args.max_clips, which=args.which, name=args.name, out=args.out,
               progress=not args.no_progress, max_offset=args.max_offset, rule=args.rule)
  print(plots.format_table({r["name"]: r["accuracy"]}))
  pooled = ", ".join(f"{k}: {100 * v:.2f}" for k, v in r["pooled_accuracy"].items())
  print(f"pooled over positions: {pooled}")
  print(f"{r['num_clips']} clips scored, {r['num_skipped']} skipped "
        f"({r['clips_per_s']:.1f} clips/s); results in {r['out_dir']}")
  for s in r["skipped"][:10]:
    print(f"  skipped: {s['reason']}")


if __name__ == "__main__":
  main()
