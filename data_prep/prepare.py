"""Offline preparation: video files -> lip crops + mel in ArrayRecord shards, resumably.

  python -m data_prep.prepare --layout lrs2 --src demo_out/synthetic --out demo_out/prepared
  python -m data_prep.prepare --layout lrs3 --src /data/lrs3 --out /data/lrs3_prep --workers 16
  python -m data_prep.prepare --layout raw --src ~/videos --out /tmp/mine --val_fraction 0.1 \\
      --group_by '^([^/]+)/'
  # on Apache Beam (pip install -e '.[beam]'): the same shards, any Beam runner
  python -m data_prep.prepare ... --runner DirectRunner --workers 8
  python -m data_prep.prepare ... --runner DataflowRunner --project P --region R ...

What it writes in ``--out`` (format: ``modeformer_jax.records``)
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
  that expect TFDS, ``data_prep.tfds_builder`` builds the same records as a TFDS dataset.

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
  are shared; only the executor differs. ``--runner local`` (the default) runs them in
  this machine's processes and needs no Beam. Any other ``--runner`` hands the same plan to
  Apache Beam (``data_prep.beam_prepare``): one machine's DirectRunner, or Dataflow, Flink
  or Spark for datasets that need a cluster; Beam retries failed work and the output is
  record-identical to local preparation. Beam replaced the former ``--num_tasks`` /
  ``--task_index`` scheme (hand-launched processes over a shared folder).

Bad input
  A file that yields no clip (``features.FeatureError`` kinds: corrupt, no_video, no_audio,
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
import dataclasses
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import shlex
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import tqdm
from array_record.python.array_record_module import ArrayRecordWriter

from data_prep import layouts
from modeformer_jax import features, input_spec, records

CLIPS_PER_SHARD = 256          # 'auto' sharding target: ~100-200 MB of jpeg records
PLAN = "prepare_plan.json"
SKIP_KINDS = features.ERROR_KINDS + ("missing", "error")
# The features layout (crop window / face detection) each dataset layout uses by default.
FEATURE_LAYOUTS = {"lrs2": "lrs2", "lrs3": "lrs3", "vox2": "vox2", "folder": "crop",
                   "raw": "raw"}
ALIGNMENT_NOTE = ("the audio window of video frame t starts at mel frame round(3.2 t) "
                  "(= (16 t + 2) // 5); 5 frames t..t+4 pair with 16 mel frames; a clip of T "
                  "frames stores ceil(3.2 T) mel frames")


# ----------------------------------------------------------------------------------------
# Worker side.
# ----------------------------------------------------------------------------------------

def _init_worker() -> None:
  import cv2
  cv2.setNumThreads(1)   # the pool is the parallelism; more threads just contend


def process_item(job: dict) -> dict:
  """Features + record of one input, or the reason it was skipped (never raises)."""
  path = job["path"]
  try:
    if not os.path.isfile(path):
      return {"ok": False, "kind": "missing", "reason": "file not found"}
    clip = features.extract_clip(path, input_spec.CropSpec.from_dict(job["crop"]),
                                 min_frames=job["min_frames"],
                                 audio_shift_frames=job["audio_shift"])
    rec = records.encode_clip(clip, job["clip_id"], job["speaker"], job["split"],
                              job["source"], lip_codec=job["lip_codec"])
    return {"ok": True, "record": rec, "num_frames": int(clip.num_frames),
            "seconds": clip.num_frames / features.FPS}
  except features.FeatureError as e:
    return {"ok": False, "kind": e.kind, "reason": e.reason}
  except Exception as e:  # noqa: BLE001 -- one odd file must not end a day-long run
    return {"ok": False, "kind": "error", "reason": f"{type(e).__name__}: {e}"}


def _ordered_results(jobs: Sequence[dict], workers: int) -> Iterator[dict]:
  """``process_item`` over ``jobs`` in order, on ``workers`` processes (<= 1: in-process)."""
  if workers <= 1:
    for job in jobs:
      yield process_item(job)
    return
  ctx = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                              initializer=_init_worker) as pool:
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


# ----------------------------------------------------------------------------------------
# Plan: inputs -> splits -> shards.
# ----------------------------------------------------------------------------------------

def _write_json(path: pathlib.Path, obj: Any) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=1) + "\n")
  os.replace(tmp, path)


def num_shards(num_items: int, shards_per_split: int | str = "auto") -> int:
  """Shards for a split of ``num_items`` inputs (at least 1, so every split can be opened)."""
  if shards_per_split == "auto":
    return max(1, math.ceil(num_items / CLIPS_PER_SHARD))
  n = int(shards_per_split)
  if n < 1:
    raise ValueError(f"shards_per_split must be >= 1 or 'auto', got {shards_per_split}")
  return max(1, min(n, num_items))


def shard_bounds(num_items: int, shards: int) -> list[tuple[int, int]]:
  """Contiguous ``[start, stop)`` input ranges of each shard, sizes differing by at most 1."""
  return [(s * num_items // shards, (s + 1) * num_items // shards) for s in range(shards)]


def _inputs_digest(items: Iterable[layouts.Item], src: pathlib.Path) -> str:
  h = hashlib.sha256()
  for it in items:
    h.update(f"{it.split}\t{_relative(it.path, src)}\t{it.clip_id}\t{it.speaker}\n".encode())
  return h.hexdigest()


def _relative(path: str, src: pathlib.Path) -> str:
  try:
    return pathlib.Path(path).relative_to(src).as_posix()
  except ValueError:
    return pathlib.Path(path).as_posix()


def _shard_done(out: pathlib.Path, name: str) -> bool:
  return (out / name).is_file() and (out / f"{name}.report.json").is_file()


# ----------------------------------------------------------------------------------------
# The run: a plan, then shards written by an executor (local processes or Beam).
# ----------------------------------------------------------------------------------------

class Shard(NamedTuple):
  """One output file: its split, its name and the inputs it holds, in order."""
  split: str
  name: str
  items: list[layouts.Item]


@dataclasses.dataclass
class Plan:
  """Everything a run does, fixed before any input is touched (both executors use it)."""
  out: pathlib.Path
  src: pathlib.Path
  plan: dict                 # the content of prepare_plan.json
  shards: list[Shard]        # global order: splits in order, then shard index
  options: dict              # per-clip options shared by every job (crop, codec, ...)
  name: str                  # dataset name for the manifest
  command: str               # the equivalent command line, for the manifest

  def jobs(self, shard: Shard) -> list[dict]:
    """The ``process_item`` jobs of ``shard``, in record order."""
    return [make_job(self.options, it, self.src) for it in shard.items]

  def todo(self) -> list[Shard]:
    """Shards without a finished file (and its report) in ``out``."""
    return [sh for sh in self.shards if not _shard_done(self.out, sh.name)]


def job_options(spec: input_spec.InputSpec, min_frames: int = features.MIN_FRAMES,
                lip_codec: str = "jpeg", audio_shift: int = 0) -> dict:
  """The per-clip options every ``process_item`` job of one preparation shares."""
  return dict(crop=spec.crop.to_dict(), min_frames=int(min_frames), lip_codec=lip_codec,
              audio_shift=int(audio_shift))


def make_job(options: dict, item: layouts.Item, src: pathlib.Path) -> dict:
  """The ``process_item`` job of one input (``options`` from ``job_options``)."""
  return dict(options, path=item.path, clip_id=item.clip_id, speaker=item.speaker,
              split=item.split, source=_relative(item.path, src))


def make_plan(layout: str, src: str | os.PathLike, out: str | os.PathLike, *,
              splits: Sequence[str] | str | None = None,
              shards_per_split: int | str = "auto", min_frames: int = features.MIN_FRAMES,
              lip_codec: str = "jpeg", limit: int | None = None,
              val_fraction: float | None = None, test_fraction: float | None = None,
              group_by: str | None = None, seed: int = 0, feature_layout: str | None = None,
              crop_box: Sequence[float] | None = None, audio_shift: int = 0,
              name: str | None = None, command: str | None = None,
              log: Callable[[str], None] = print) -> Plan:
  """Lists the inputs, cuts them into shards and binds ``out`` to them (``prepare_plan.json``).

  Arguments as ``prepare``. Raises ValueError when ``out`` already holds a preparation of
  other inputs or options.
  """
  if layout not in layouts.LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; expected one of {layouts.LAYOUTS}")
  feature_layout = feature_layout or FEATURE_LAYOUTS[layout]
  if lip_codec not in records.LIP_CODECS:
    raise ValueError(f"unknown lip_codec {lip_codec!r}; expected one of {records.LIP_CODECS}")
  if crop_box is not None:
    crop_box = [float(v) for v in crop_box]
  # Validates the layout and the box; the spec goes into the plan and the manifest.
  spec = input_spec.for_layout(feature_layout, tuple(crop_box) if crop_box else None)
  if isinstance(splits, str):
    splits = [s for s in splits.split(",") if s]
  src = pathlib.Path(src).resolve()
  out = pathlib.Path(out).resolve()

  items = layouts.list_items(layout, src, val_fraction=val_fraction,
                             test_fraction=test_fraction, group_by=group_by, seed=seed,
                             splits=splits)
  by_split: dict[str, list[layouts.Item]] = {}
  for it in items:
    by_split.setdefault(it.split, []).append(it)
  for s in splits or []:
    if s not in by_split:
      log(f"warning: split {s!r} has no inputs in {src}; it gets one empty shard")
      by_split[s] = []
  if limit is not None:
    by_split = {s: v[:int(limit)] for s, v in by_split.items()}
  split_names = sorted(by_split, key=layouts._split_key)
  shards = []
  for s in split_names:
    n = num_shards(len(by_split[s]), shards_per_split)
    for i, (a, b) in enumerate(shard_bounds(len(by_split[s]), n)):
      shards.append(Shard(s, records.shard_name(s, i, n), by_split[s][a:b]))

  plan = {
      "format_version": records.FORMAT_VERSION, "layout": layout, "source_root": str(src),
      "feature_layout": feature_layout, "crop_box": crop_box, "min_frames": int(min_frames),
      "input_spec": spec.to_dict(), "audio_shift": int(audio_shift),
      "lip_codec": lip_codec, "jpeg_quality": records.JPEG_QUALITY,
      "splits": {s: {"num_inputs": len(by_split[s]),
                     "shards": [sh.name for sh in shards if sh.split == s],
                     "inputs_sha256": _inputs_digest(by_split[s], src)} for s in split_names},
  }
  out.mkdir(parents=True, exist_ok=True)
  plan_path = out / PLAN
  if plan_path.is_file():
    old = json.loads(plan_path.read_text())
    if old != plan:
      diff = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
      raise ValueError(f"{out} already holds a preparation with other inputs or options "
                       f"(differs in {diff}); use another --out, or delete {out} to start over")
  else:
    _write_json(plan_path, plan)
  if command is None:
    command = _command_line(layout, src, out, splits, shards_per_split, min_frames,
                            lip_codec, limit, val_fraction, test_fraction, group_by, seed,
                            feature_layout, crop_box, audio_shift)
  options = job_options(spec, min_frames, lip_codec, audio_shift)
  return Plan(out, src, plan, shards, options, name or src.name, command)


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


def write_shard(out: pathlib.Path, shard: Shard, results: Iterable[dict],
                on_result: Callable[[dict], None] | None = None,
                tmp_suffix: str = ".tmp") -> dict:
  """Writes ``shard`` from ``process_item`` results given in item order; returns its stats.

  The records go to ``<name><tmp_suffix>``, then the shard's ``.report.json`` is written,
  and only then is the file renamed to its final name: a final shard always has its report,
  and a writer killed midway leaves only a temporary file.
  """
  tmp = out / f"{shard.name}{tmp_suffix}"
  if tmp.exists():
    tmp.unlink()   # left by a killed run
  stats = {"shard": shard.name, "split": shard.split, "inputs": len(shard.items),
           "written": 0, "num_frames": 0, "seconds": 0.0, "skipped": []}
  writer = ArrayRecordWriter(str(tmp), records.WRITER_OPTIONS)
  try:
    results = iter(results)
    for it in shard.items:
      r = next(results)
      if r["ok"]:
        writer.write(r["record"])
        stats["written"] += 1
        stats["num_frames"] += r["num_frames"]
        stats["seconds"] += r["seconds"]
      else:
        stats["skipped"].append({"path": it.path, "clip_id": it.clip_id,
                                 "kind": r["kind"], "reason": r["reason"]})
      if on_result is not None:
        on_result(r)
  finally:
    writer.close()
  stats["seconds"] = round(stats["seconds"], 3)
  stats["bytes"] = tmp.stat().st_size
  _write_json(out / f"{shard.name}.report.json", stats)
  os.replace(tmp, out / shard.name)
  return stats


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


def feature_description(lip_codec: str, feature_layout: str, audio_shift: int) -> dict:
  """What the records hold (mel parameters, fps, lip size and codec, crop, alignment)."""
  feats = dict(features.MEL_CONFIG)
  feats.update({
      "fps": float(features.FPS), "lip_size": list(input_spec.LIP_SIZE),
      "lip_codec": lip_codec, "jpeg_quality": records.JPEG_QUALITY,
      "mel_per_frame": input_spec.MEL_CONFIG["mel_per_frame"], "mel_dtype": "float16",
      "feature_layout": feature_layout, "audio_shift": int(audio_shift),
      "alignment": ALIGNMENT_NOTE,
  })
  return feats


def finalize(p: Plan) -> dict:
  """Writes manifest.json and report.json from the finished shards' reports; returns the report."""
  out, src, plan, name, command = p.out, p.src, p.plan, p.name, p.command
  reports = {sh.name: json.loads((out / f"{sh.name}.report.json").read_text())
             for sh in p.shards}
  split_info, split_counts = {}, {}
  skipped_files = []
  for split in plan["splits"]:
    rs = [reports[nm] for nm in plan["splits"][split]["shards"]]
    kinds = collections.Counter(s["kind"] for r in rs for s in r["skipped"])
    skipped_files += [dict(s, split=split) for r in rs for s in r["skipped"]]
    split_info[split] = {
        "shards": plan["splits"][split]["shards"],
        "num_clips": sum(r["written"] for r in rs),
        "num_frames": sum(r["num_frames"] for r in rs),
        "seconds": round(sum(r["seconds"] for r in rs), 3),
        "bytes": sum(r["bytes"] for r in rs),
    }
    split_counts[split] = {"inputs": sum(r["inputs"] for r in rs),
                           "written": split_info[split]["num_clips"],
                           "skipped": dict(sorted(kinds.items()))}
  total_kinds = collections.Counter()
  for c in split_counts.values():
    total_kinds.update(c["skipped"])
  report = {
      "inputs": sum(c["inputs"] for c in split_counts.values()),
      "written": sum(c["written"] for c in split_counts.values()),
      "skipped": dict(sorted(total_kinds.items())),
      "skipped_files": skipped_files,
      "splits": split_counts,
  }
  if report["inputs"] != report["written"] + sum(total_kinds.values()):
    raise AssertionError(f"{out}: shard reports do not add up: {report['splits']}")
  feats = feature_description(plan["lip_codec"], plan["feature_layout"], plan["audio_shift"])
  feats["jpeg_quality"] = plan["jpeg_quality"]
  manifest = {
      "format_version": records.FORMAT_VERSION, "dataset": name, "layout": plan["layout"],
      "source_root": str(src), "input_spec": plan["input_spec"], "features": feats,
      "splits": split_info,
      "min_frames": plan["min_frames"],
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": command,
  }
  _write_json(out / records.REPORT, report)
  _write_json(out / records.MANIFEST, manifest)   # last: its presence marks a finished set
  for leftover in out.glob("*.tmp"):
    leftover.unlink()   # partial shards of attempts that died (every shard is final now)
  return report


def _command_line(layout, src, out, splits, shards_per_split, min_frames, lip_codec, limit,
                  val_fraction, test_fraction, group_by, seed, feature_layout,
                  crop_box, audio_shift=0) -> str:
  """The CLI call equivalent to a library call, for the manifest."""
  args = ["python", "-m", "data_prep.prepare", "--layout", layout, "--src", str(src),
          "--out", str(out), "--shards_per_split", str(shards_per_split),
          "--min_frames", str(min_frames), "--lip_codec", lip_codec, "--seed", str(seed),
          "--feature_layout", feature_layout]
  for flag, v in (("--splits", ",".join(splits) if splits else None), ("--limit", limit),
                  ("--val_fraction", val_fraction), ("--test_fraction", test_fraction),
                  ("--group_by", group_by), ("--audio_shift", audio_shift or None),
                  ("--crop_box", ",".join(map(str, crop_box)) if crop_box else None)):
    if v is not None:
      args += [flag, str(v)]
  return shlex.join(args)


def parser() -> argparse.ArgumentParser:
  """The CLI's options (unknown ones are Beam pipeline options)."""
  p = argparse.ArgumentParser(description="Prepare videos into ArrayRecord shards of lip "
                              "crops and mel spectrograms (resumable).",
                              allow_abbrev=False)  # unknown options go to Beam verbatim
  p.add_argument("--layout", required=True, choices=layouts.LAYOUTS)
  p.add_argument("--src", required=True, help="dataset root")
  p.add_argument("--out", required=True, help="output folder (shards, manifest, report)")
  p.add_argument("--splits", default=None, help="comma-separated, e.g. train,val,test "
                 "(default: all splits found)")
  p.add_argument("--shards_per_split", default="auto",
                 help=f"'auto' ({CLIPS_PER_SHARD} inputs per shard) or a number")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                 help="worker processes (<= 1: in this process); with --runner "
                 "DirectRunner its worker processes")
  p.add_argument("--runner", default="local",
                 help="'local' (default, no Beam needed) or an Apache Beam runner: "
                 "DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...; "
                 "options this parser does not know go to Beam (e.g. --project, "
                 "--temp_location, --flink_master); README 'Data preparation on Beam'")
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
