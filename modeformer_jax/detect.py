"""Audio-video offset detection: ``python -m modeformer_jax.detect``.

  python -m modeformer_jax.detect my_video.mp4                   # the shipped model
  python -m modeformer_jax.detect a.mp4 b.mov --checkpoint runs/x --json
  python -m modeformer_jax.detect a.mp4 --fix a_fixed.mp4         # remux with audio moved
  python -m modeformer_jax.detect --prepared /data/lrs2_prepared:test --checkpoint runs/x

Sync QC of long videos and whole folders (``modeformer_jax.analysis``): offset over time in
ms (5 s segments every 1 s), drift, every face, broadcast tolerances, HTML reports::

  python -m modeformer_jax.detect --qc programme.mxf --out qc_out      # one long file
  python -m modeformer_jax.detect /archive/news/ --workers 2 --out qc_out   # a folder
  python -m modeformer_jax.detect files.txt --out qc_out                 # a file list
  python -m modeformer_jax.detect --qc talk.mp4 --fix talk_fixed.mp4     # sub-frame fix

A folder or list (or ``--qc``) writes ``OUT/results.jsonl`` (one line per file, a rerun
skips finished files), ``OUT/summary.csv``, ``OUT/reports/*.html`` and ``OUT/index.html``.
Plain ``detect`` runs through the same loop over files (``qc.qc_batch``): it appends its
files' lines to ``OUT/results.jsonl`` and rewrites ``OUT/summary.csv`` too, beside its PNGs.

Without ``--qc``: prints each file's whole-file audio offset in frames and ms (**positive =
audio late**) with a confidence, and writes a PNG of the per-frame histogram and averaged
score curve per video. It is the same analysis as ``--qc`` (``modeformer_jax.analysis``: one decoding,
face track, audio choice and estimator), summarised over the whole file, so the two never
give two answers for one file; ``--qc`` adds the timeline, tolerances and reports; over a prepared split the dataset-level
histogram (the paper's Fig. 4 and Sec. 3.5) is written too. Lips are cropped exactly as
the model's training data were (its recorded input spec) unless --layout says otherwise.

Without ``--checkpoint`` the default shipped model (``analysis.DEFAULT_MODEL``) is used;
read its MODEL_CARD.md for what it was trained on.
"""
from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys

from modeformer_jax import analysis, cli, errors, jsonio, media
from modeformer_jax.data import records
from modeformer_jax.evaluation import embedding, plots, protocol
from modeformer_jax.model import input_spec
from modeformer_jax.qc import qc_batch


def _options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> analysis.AnalysisOptions:
  """The analysis options, the same for plain ``detect`` and ``--qc``."""
  try:
    return analysis.options_from_flags(args, min_fail_s=args.min_fail_s)
  except ValueError as e:
    parser.error(str(e))


def _run_qc(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
  """Sync QC of files, folders and lists into ``args.out`` (see the module docstring)."""
  import functools

  try:
    inputs = qc_batch.list_inputs(args.videos)
  except (FileNotFoundError, ValueError) as e:
    parser.error(str(e))
  if not inputs:
    parser.error(f"no video files found in {args.videos}")
  if args.fix and (len(inputs) != 1 or args.workers != 1):
    parser.error("--fix needs exactly one input video")
  options = _options(args, parser)
  make = functools.partial(analysis.Analyzer, args.checkpoint, options, args.layout,
                           progress=args.workers == 1 and not args.json)
  summary = qc_batch.run_batch(inputs, args.out, make, workers=args.workers,
                               retry_errors=args.retry_errors, report=not args.no_report,
                               progress=not args.json, resume=not args.fix)
  results = qc_batch.load_results(args.out)
  entries = [results[k] for k in (qc_batch.input_key(p) for p in inputs) if k in results]
  if args.json:
    print(json.dumps(jsonio.jsonable(entries), indent=1))
  else:
    for e in entries:
      print(analysis.describe(e))
    print(f"{summary['ok']} of {summary['total']} files analysed, errors: "
          f"{summary['errors'] or 'none'}; {summary['csv']}"
          + (f", {summary['index']}" if summary.get("index") else ""))
  if args.fix:
    (e,) = entries
    off = (e.get("global") or {}).get("offset_ms")
    if off is None:
      print(f"error: {e['name']}: no measurable offset, nothing written", file=sys.stderr)
      return 1
    media.fix_offset(str(inputs[0]), args.fix, off)
    if not args.json:
      print(f"wrote {args.fix} with the audio moved by {-off:+.1f} ms")
  return 1 if summary["errors"] else 0


def _run_plain(args: argparse.Namespace, parser: argparse.ArgumentParser
               ) -> tuple[list[dict], int]:
  """Plain ``detect`` of ``args.videos`` through the same runner as ``--qc``
  (``qc_batch.run_batch``, no reports, nothing resumed): each file's whole-file answer is
  printed and plotted as it comes. Returns the answers (or ``{"name", "error"}``) in input
  order and the number of files without an answer."""
  import functools

  options = _options(args, parser)
  names = {qc_batch.input_key(v): str(v) for v in args.videos}
  out = pathlib.Path(args.out)
  answers: dict[str, dict] = {}

  def render(entry: dict) -> None:
    name = names.get(entry["path"], entry["name"])
    try:
      if "error" in entry:
        if entry["kind"] not in errors.ERROR_KINDS:      # an analyzer bug, not the file
          raise ValueError(f"{name}: {entry['error']}")
        raise errors.FeatureError(name, entry["kind"], entry["error"])
      r = analysis.plain_answer(entry, name)
    except ValueError as e:                               # FeatureError included
      answers[entry["path"]] = {"name": name, "error": str(e)}
      if not args.json:
        print(f"error: {e}", file=sys.stderr)
      return
    r["plot"] = plots.plot_offset(r, out / (pathlib.Path(name).stem + "_offset.png"),
                                  title=pathlib.Path(name).name)
    answers[entry["path"]] = r
    if not args.json:
      print(analysis.describe_plain(r))
    if args.fix:
      media.fix_offset(name, args.fix, r["offset_ms"])
      if not args.json:
        print(f"wrote {args.fix} with the audio moved by {-r['offset_ms']:+.0f} ms")

  # Picklable: with --workers each process loads the model itself.
  make = functools.partial(analysis.Analyzer, args.checkpoint, options, args.layout)
  qc_batch.run_batch(args.videos, out, make, workers=args.workers, resume=False,
                     report=False, progress=False, on_entry=render)
  results = [answers[k] for k in dict.fromkeys(names) if k in answers]
  return results, sum("error" in r for r in results)


def main(argv: list[str] | None = None) -> int:
  parser = cli.parser(__name__, __doc__, verbose=True)
  parser.add_argument("videos", nargs="*", help="video files (mp4/mov/avi/mkv/mpg...), "
                      "folders or .txt/.lst file lists (folders and lists imply --qc)")
  parser.add_argument("--checkpoint", default=None,
                      help=f"workdir / checkpoint / exported model (default: "
                      f"{analysis.DEFAULT_MODEL})")
  parser.add_argument("--layout", default="auto", choices=analysis.LAYOUT_CHOICES,
                      help="lip crop: 'auto' = exactly the model's training crop; a layout "
                      "name forces that crop (with a warning when it differs)")
  parser.add_argument("--prepared", default=None,
                      help="DIR:SPLIT of a prepared dataset: the dataset-level histogram")
  parser.add_argument("--max_clips", type=int, default=None)
  parser.add_argument("--out", default="detect_out", help="folder for the PNGs")
  parser.add_argument("--json", action="store_true", help="print JSON only")
  parser.add_argument("--workers", type=int, default=1, help="files analysed in parallel "
                      "(processes, each with its own model; plain detect and --qc alike)")
  parser.add_argument("--fix", default=None, help="write a copy with the audio re-aligned "
                      "(one input video only; with --qc by the sub-frame offset in ms)")
  qc = parser.add_argument_group("sync QC (--qc, folders, lists)")
  an = parser.add_argument_group("the analysis (plain detect and --qc alike)")
  qc.add_argument("--qc", action="store_true", help="offset over time, drift, faces, "
                  "tolerances and an HTML report per file")
  qc.add_argument("--retry_errors", action="store_true", help="re-analyse files that failed "
                  "in an earlier run (finished files are always skipped)")
  qc.add_argument("--no_report", action="store_true", help="skip the HTML reports")
  qc.add_argument("--min_fail_s", type=float, default=analysis.AnalysisOptions.min_fail_s,
                  help="a file fails a tolerance when its offset stays out of it this many "
                  "measured seconds in a row (docs/sync_qc.md says why 10)")
  analysis.add_flags(an)
  args = parser.parse_args(argv)
  # force: importing orbax has configured logging already.
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
  if not args.videos and not args.prepared:
    parser.error("give video files or --prepared DIR:SPLIT")
  if args.fix and len(args.videos) != 1:
    parser.error("--fix needs exactly one input video")
  if args.qc or any(pathlib.Path(v).is_dir() or pathlib.Path(v).suffix.lower() in
                    qc_batch.LIST_EXTENSIONS for v in args.videos):
    if args.prepared:
      parser.error("--prepared is not a sync-QC input")
    return _run_qc(args, parser)
  ckpt = args.checkpoint or analysis.DEFAULT_MODEL
  if args.checkpoint is None:
    if not (analysis.DEFAULT_MODEL / "model.json").exists():
      parser.error(f"no shipped model at {analysis.DEFAULT_MODEL}; pass --checkpoint")
    if not args.json:
      print(f"using the shipped model {analysis.DEFAULT_MODEL} (see MODEL_CARD.md there)",
            file=sys.stderr)
  results, failed = _run_plain(args, parser) if args.videos else ([], 0)
  if args.prepared:
    det = analysis.load_detector(ckpt, layout=args.layout)
    spec, embedder = det.spec, det.embedder
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir, _, split = args.prepared.rpartition(":")
    data_spec = input_spec.InputSpec.from_dict(input_spec.read_dataset_spec(data_dir))
    if data_spec != spec:
      logging.warning("%s was prepared with %s; the model was trained on %s", data_dir,
                      data_spec.describe(), spec.describe())
    per_clip = []
    from tqdm import tqdm
    clips = embedding.record_clips(data_dir, split, max_clips=args.max_clips)
    n = len(records.open_split(data_dir, split))
    for name, scores, reason in tqdm(embedding.score_clips(embedder, clips), desc="detect",
                                     total=n if args.max_clips is None else min(n, args.max_clips),
                                     disable=args.json):
      if scores is not None:
        per_clip.append(protocol.detect_offset(scores) | {"name": name})
    hist = protocol.dataset_histogram(per_clip)
    hist["plot"] = plots.plot_offset_histogram(hist, out / f"{split}_offset_histogram.png")
    results.append({"dataset": args.prepared, "histogram": hist})
    if not args.json:
      print(f"{args.prepared}: {hist['num_clips']} clips, mean offset "
            f"{hist['mean_offset']:+.2f} frames; histogram in {hist['plot']}")
  if args.json:
    print(json.dumps(jsonio.jsonable(results), indent=1))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
