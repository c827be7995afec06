"""Offline preparation: video files -> lip crops + mel in ArrayRecord shards, resumably.

  python -m data_prep.prepare --layout lrs2 --src demo_out/synthetic \\
      --out demo_out/prepared
  python -m data_prep.prepare --layout lrs3 --src /data/lrs3 \\
      --out /data/lrs3_prep --workers 16
  python -m data_prep.prepare --layout raw --src ~/videos --out /tmp/mine \\
      --val_fraction 0.1
      --group_by '^([^/]+)/'
  # on Apache Beam (pip install -e '.[beam]'): the same shards, any Beam runner
  python -m data_prep.prepare ... --runner DirectRunner --workers 8
  python -m data_prep.prepare ... --runner DataflowRunner --project P --region R ...

What it writes in ``--out`` (format: ``modeformer_jax.data.records``)
  ``{split}.array_record-{i:05d}-of-{n:05d}``   one msgpack record per clip, in input order
  ``{shard}.report.json``                       that shard's counts and skipped files
  ``manifest.json``                             features (mel config, fps, crop), splits, shards
  ``report.json``                               inputs / written / skipped by kind, with reasons
  ``prepare_plan.json``                         the inputs and sharding this folder is bound to

Why ArrayRecord written directly rather than through a TFDS builder
  TFDS would wrap every record in a ``tf.train.Example``, pick its own shard sizes and keep
  split metadata in its own files; the loader, ``eval`` and ``detect --prepared`` read this
  folder format. We write the shards with ``array_record``'s own ``ArrayRecordWriter``:
  the same shard naming (``{split}.array_record-XXXXX-of-YYYYY``), split metadata and the
  input spec in ``manifest.json``, and random access through grain's
  ``ArrayRecordDataSource`` (``records.open_split``). Writer option ``group_size:1`` makes
  every record its own chunk, so reading one clip decompresses only that clip. For readers
  that expect TFDS, ``data_prep.tfds_builder`` builds the same records as a
  TFDS dataset.

Determinism and resume
  Inputs come sorted (``layouts``); each split is cut into shards of contiguous chunks
  (input ``i`` of ``n`` goes to shard ``floor(i * S / n)`` boundaries). Worker processes
  (spawned, so a caller that already started JAX threads is safe) extract features, and the
  results are consumed in input order, so a shard's bytes do not depend on ``--workers``. A
  shard is written to ``<name>.tmp``, its ``.report.json`` is written, and only then is it
  renamed to its final name: a final shard file always has its report. A rerun skips
  finished shards and redoes the unfinished one, so a killed run, started again, ends with
  the same records as an uninterrupted one; when everything is already there it prints
  "nothing to do" and touches nothing. ``prepare_plan.json`` pins the inputs and sharding:
  a rerun with other inputs or options into the same folder is refused rather than mixed.

Executors
  The plan (inputs, splits, shards; ``make_plan``), the per-clip function
  (``process_item``), the shard writer (``write_shard``) and the manifest (``finalize``)
  live in ``data_prep.pipeline``, which both executors import; only the
  executor differs. ``--runner local`` (the default) runs them in
  this machine's processes and needs no Beam. Any other ``--runner`` hands the same plan to
  Apache Beam (``data_prep.beam_prepare``): one machine's DirectRunner, or
  Dataflow, Flink or Spark for datasets that need a cluster; Beam retries failed work and the output is
  record-identical to local preparation. Beam replaced the former ``--num_tasks`` /
  ``--task_index`` scheme (hand-launched processes over a shared folder).

Bad input
  A file that yields no clip (``errors.FeatureError`` kinds: corrupt, no_video, no_audio,
  audio_short, too_short, no_face), a listed file that is ``missing``, or any other
  exception in its extraction (kind ``error``) is skipped and recorded with its path and
  reason; the counts in ``report.json`` add up to the number of inputs. A worker process
  that dies outright (a crash inside a decoder) stops the run with the files it held;
  finished shards are kept.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, Sequence

import tqdm

from modeformer_jax import cli
from modeformer_jax.data import records
from modeformer_jax.media import features
from modeformer_jax.model import input_spec
from data_prep import layouts
# The shared pieces; re-exported because callers know them as ``prepare.<name>``.
from data_prep.pipeline import (  # noqa: F401
    CLIPS_PER_SHARD, FEATURE_LAYOUTS, PLAN, SKIP_KINDS, Plan, Shard, feature_description,
    finalize, init_worker, job_options, make_job, make_plan, num_shards, process_item,
    shard_bounds, shard_done, write_shard)


# ----------------------------------------------------------------------------------------
# The local executor.
# ----------------------------------------------------------------------------------------

def _ordered_results(jobs: Sequence[dict], workers: int) -> Iterator[dict]:
  """``process_item`` over ``jobs`` in order, on ``workers`` processes (<= 1: in-process)."""
  if workers <= 1:
    for job in jobs:
      yield process_item(job)
    return
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                              initializer=init_worker) as pool:
    pending: collections.deque = collections.deque()
    todo = iter(jobs)
    # A bounded window keeps memory flat and the workers busy across shard boundaries.
    for job in todo:
      pending.append((job, pool.submit(process_item, job)))
      if len(pending) >= 4 * workers:
        break
    while pending:
      job, fut = pending.popleft()
      try:
        result = fut.result()
      except BrokenProcessPool as e:
        held = [job["path"]] + [j["path"] for j, _ in pending]
        raise RuntimeError(f"a worker process died while processing one of {held}; finished "
                           "shards are kept, rerun to resume") from e
      nxt = next(todo, None)
      if nxt is not None:
        pending.append((nxt, pool.submit(process_item, nxt)))
      yield result


def prepare(layout: str, src: str | os.PathLike, out: str | os.PathLike, *,
            splits: Sequence[str] | str | None = None,
            shards_per_split: int | str = "auto", workers: int = 1,
            min_frames: int = features.MIN_FRAMES,
            lip_codec: str = "jpeg", limit: int | None = None,
            val_fraction: float | None = None, test_fraction: float | None = None,
            group_by: str | None = None, seed: int = 0, feature_layout: str | None = None,
            crop_box: Sequence[float] | None = None, audio_shift: int = 0,
            name: str | None = None, runner: str = "local",
            pipeline_args: Sequence[str] = (), worker_path_map: str | None = None,
            progress: bool = True,
            command: str | None = None) -> dict:
  """Prepares (or resumes preparing) ``src`` into shards in ``out``; see the module docstring.

  Args:
    layout: one of ``layouts.LAYOUTS``.
    splits: splits to prepare (default: every split the layout finds). A requested split
      without inputs gets one empty shard.
    shards_per_split: 'auto' (``CLIPS_PER_SHARD`` inputs per shard) or a number.
    workers: local processes (``runner='local'``; <= 1: in this process), or the
      DirectRunner's worker processes when ``pipeline_args`` do not set them.
    limit: at most this many inputs per split (the first ones in sorted order).
    val_fraction, test_fraction, group_by, seed: seeded splits, see ``layouts``.
    feature_layout: key of ``input_spec.LAYOUT_CROPS``, the lip-crop method (default
      ``FEATURE_LAYOUTS[layout]``).
    crop_box: override of a box layout's window (top, bottom, left, right) as fractions.
    audio_shift: delay every clip's audio by this many video frames (negative: advance)
      before the mel: the correction of a dataset-wide offset measured with
      ``detect --prepared`` (the paper found LRS2 off by one frame).
      Recorded in the manifest.
    runner: 'local' (this machine's processes, no Beam needed) or an Apache Beam runner
      name (DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...);
      see ``data_prep.beam_prepare``.
    pipeline_args: further Beam pipeline options (``--project=...``), Beam runners only.
    worker_path_map: Beam runners only: ``LOCAL_PREFIX=URL_PREFIX[,...]``, where workers
      find this machine's ``src``/``out`` (e.g. ``/gcs/b=gs://b``); see ``beam_prepare``.
    progress: show the tqdm bar (status lines are printed either way).

  Returns:
    The ``report.json`` dict, plus ``run``: what this call did (shards written, shards
    already done, whether it wrote the manifest).
  """
  log = lambda msg: print(msg, flush=True)  # noqa: E731 -- a few lines, even without the bar
  plan = make_plan(layout, src, out, splits=splits, shards_per_split=shards_per_split,
                   min_frames=min_frames, lip_codec=lip_codec, limit=limit,
                   val_fraction=val_fraction, test_fraction=test_fraction,
                   group_by=group_by, seed=seed, feature_layout=feature_layout,
                   crop_box=crop_box, audio_shift=audio_shift, name=name, command=command,
                   log=log)
  out = plan.out
  todo = plan.todo()
  written: list[str] = []
  pipeline_finalized = False
  if not todo:
    log(f"nothing to do: all {len(plan.shards)} shards in {out} are complete")
  else:
    n_inputs = sum(len(sh.items) for sh in plan.shards)
    log(f"{n_inputs} inputs in {len(plan.shards)} shards: {len(plan.shards) - len(todo)} "
        f"done, {len(todo)} to do; runner {runner}")
    if runner == "local":
      if pipeline_args or worker_path_map:
        raise ValueError(f"Beam options {list(pipeline_args) or worker_path_map} need a Beam "
                         "--runner")
      written = _process_shards(plan, todo, workers, progress)
    else:
      # Imported here: Beam is an optional extra and local preparation never needs it.
      try:
        from data_prep import beam_prepare
      except ImportError as e:
        raise ImportError(f"--runner {runner} needs Apache Beam: pip install -e '.[beam]' "
                          f"(or --runner local) [{e}]") from e
      written, pipeline_finalized = beam_prepare.run(
          plan, todo, runner, pipeline_args, workers,
          beam_prepare.parse_path_map(worker_path_map))
  missing = [sh.name for sh in plan.todo()]
  if missing:
    raise RuntimeError(f"{out}: {len(missing)} shards were not written: {missing[:5]}")
  run = {"shards_written": written, "shards_already_done": len(plan.shards) - len(todo),
         "finalized": False}
  manifest_path = out / records.MANIFEST
  if pipeline_finalized:
    # The pipeline finalized in its last step (so a detached cloud job ends complete).
    report = json.loads((out / records.REPORT).read_text())
    run["finalized"] = True
  elif manifest_path.is_file() and (out / records.REPORT).is_file() and not written:
    report = json.loads((out / records.REPORT).read_text())
  else:
    report = finalize(plan)
    run["finalized"] = True
  if run["finalized"]:
    log(f"wrote {manifest_path}: {report['written']} of {report['inputs']} clips; skipped "
        f"{report['skipped'] or 'none'}")
  return {**report, "run": run}


def _process_shards(plan: Plan, todo: list[Shard], workers: int, progress: bool) -> list[str]:
  """The local executor: writes the shards in ``todo`` with ``workers`` processes."""
  jobs = [job for sh in todo for job in plan.jobs(sh)]
  results = _ordered_results(jobs, workers)
  bar = tqdm.tqdm(total=len(jobs), unit="clip", disable=not progress, dynamic_ncols=True)
  t0 = time.perf_counter()
  video_seconds = 0.0

  def on_result(r: dict) -> None:
    nonlocal video_seconds
    video_seconds += r.get("seconds", 0.0)
    bar.update()
    bar.set_postfix_str(f"{video_seconds / max(time.perf_counter() - t0, 1e-9):.1f} "
                        "s video/s", refresh=False)

  done = []
  try:
    for sh in todo:
      bar.set_description(sh.name)
      write_shard(plan.out, sh, results, on_result)
      done.append(sh.name)
  finally:
    bar.close()
    results.close()
  return done


def parser() -> argparse.ArgumentParser:
  """The CLI's options (unknown ones are Beam pipeline options)."""
  p = cli.parser(__name__, "Prepare videos into ArrayRecord shards of lip crops and mel "
                 "spectrograms (resumable).", verbose=True,
                 allow_abbrev=False)  # unknown options go to Beam verbatim
  p.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
  p.add_argument("--src", required=True, help="dataset root")
  p.add_argument("--out", required=True, help="output folder (shards, manifest, report)")
  p.add_argument("--splits", default=None, help="comma-separated, e.g. train,val,test "
                 "(default: all splits found)")
  p.add_argument("--shards_per_split", default="auto",
                 help=f"'auto' ({CLIPS_PER_SHARD} inputs per shard) or a number")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                 help="worker processes (<= 1: in this process; default: one per CPU); "
                 "with --runner DirectRunner its worker processes")
  p.add_argument("--runner", default="local",
                 help="'local' (default, no Beam needed) or an Apache Beam runner: "
                 "DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...; "
                 "options this parser does not know go to Beam (e.g. --project, "
                 "--temp_location, --flink_master); docs/data.md 'Data preparation on Apache Beam'")
  p.add_argument("--worker_path_map", default=None,
                 help="Beam runners whose workers cannot mount --src/--out: "
                 "LOCAL_PREFIX=URL_PREFIX[,...], e.g. /gcs/my-bucket=gs://my-bucket")
  p.add_argument("--min_frames", type=int, default=features.MIN_FRAMES)
  p.add_argument("--lip_codec", default="jpeg", choices=records.LIP_CODECS)
  p.add_argument("--limit", type=int, default=None, help="at most N inputs per split")
  p.add_argument("--val_fraction", type=float, default=None,
                 help="seeded val share (lrs3: of trainval ids, default 0.4; vox2/folder)")
  p.add_argument("--test_fraction", type=float, default=None, help="vox2/folder")
  p.add_argument("--group_by", default=None,
                 help="folder/raw: regex on the relative path naming a file's group/speaker")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--feature_layout", default=None, choices=sorted(input_spec.LAYOUT_CROPS),
                 help="lip-crop method: a dataset's fixed box, 'raw' (Haar face "
                 "detection) or 'landmarks' (lip landmarks; default: from --layout)")
  p.add_argument("--crop_box", default=None, help="top,bottom,left,right fractions")
  p.add_argument("--audio_shift", type=int, default=0,
                 help="delay all audio by N frames (correct a dataset-wide offset)")
  p.add_argument("--name", default=None, help="dataset name (default: --src folder name)")
  p.add_argument("--no_progress", action="store_true")
  return p


def main(argv: list[str] | None = None) -> dict:
  """CLI entry point (see the module docstring)."""
  p = parser()
  a, beam_args = p.parse_known_args(argv)
  if beam_args and a.runner == "local":
    p.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need a "
            "Beam --runner)")
  shards = a.shards_per_split if a.shards_per_split == "auto" else int(a.shards_per_split)
  crop_box = [float(v) for v in a.crop_box.split(",")] if a.crop_box else None
  argv = sys.argv[1:] if argv is None else argv
  return prepare(a.layout, a.src, a.out, splits=a.splits, shards_per_split=shards,
                 workers=a.workers, runner=a.runner, pipeline_args=beam_args,
                 worker_path_map=a.worker_path_map,
                 min_frames=a.min_frames, lip_codec=a.lip_codec, limit=a.limit,
                 val_fraction=a.val_fraction, test_fraction=a.test_fraction,
                 group_by=a.group_by, seed=a.seed, feature_layout=a.feature_layout,
                 crop_box=crop_box, audio_shift=a.audio_shift, name=a.name,
                 progress=not a.no_progress,
                 command=shlex.join(["python", "-m", "data_prep.prepare", *argv]))


if __name__ == "__main__":
  main()
