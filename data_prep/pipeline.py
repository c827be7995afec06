"""What both preparation executors share: the plan, the per-clip function, the shard writer
and the manifest.

``prepare`` (local processes) and ``beam_prepare`` (Apache Beam) import this module and
nothing of each other: ``make_plan`` fixes inputs, splits and shards before any input is
touched; ``process_item`` turns one input into a record (or the reason it was skipped);
``write_shard`` writes one shard from results in input order; ``finalize`` writes
``manifest.json`` and ``report.json`` from the shards' reports. The folder format and the
resume rules are in ``prepare``'s docstring.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import math
import os
import pathlib
import shlex
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from array_record.python.array_record_module import ArrayRecordWriter

from modeformer_jax import errors
from modeformer_jax.data import records
from modeformer_jax.media import features
from modeformer_jax.model import input_spec
from data_prep import layouts

CLIPS_PER_SHARD = 256          # 'auto' sharding target: ~100-200 MB of jpeg records
PLAN = "prepare_plan.json"
SKIP_KINDS = errors.ERROR_KINDS + ("missing", "error")
# The features layout (crop window / face detection) each dataset layout uses by default.
FEATURE_LAYOUTS = {"lrs2": "lrs2", "lrs3": "lrs3", "vox2": "vox2", "folder": "crop",
                   "raw": "raw"}
ALIGNMENT_NOTE = ("the audio window of video frame t starts at mel frame round(3.2 t) "
                  "(= (16 t + 2) // 5); 5 frames t..t+4 pair with 16 mel frames; a clip of T "
                  "frames stores ceil(3.2 T) mel frames")


# ----------------------------------------------------------------------------------------
# Worker side.
# ----------------------------------------------------------------------------------------

def init_worker() -> None:
  """Per worker process: OpenCV single-threaded (the pool is the parallelism)."""
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
  except errors.FeatureError as e:
    return {"ok": False, "kind": e.kind, "reason": e.reason}
  except Exception as e:  # noqa: BLE001 -- one odd file must not end a day-long run
    return {"ok": False, "kind": "error", "reason": f"{type(e).__name__}: {e}"}


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


def shard_done(out: pathlib.Path, name: str) -> bool:
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
    return [sh for sh in self.shards if not shard_done(self.out, sh.name)]


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


