"""Data preparation on Apache Beam: the same shards as local preparation, on any runner.

Run through ``data_prep.prepare`` with a Beam ``--runner`` (needs ``pip
install -e '.[beam]'``); docs/data.md "Data preparation on Apache Beam" has the commands for the
DirectRunner, Dataflow, Flink and Spark.

What is shared with local preparation (``data_prep.pipeline``, which both
import): the plan (inputs, splits, shard boundaries, ``prepare_plan.json``), the per-clip
function ``process_item``, the shard writer ``write_shard`` and the manifest/report writer
``finalize``. Only the executor is Beam's:

  inputs.jsonl --Read--> job --Reshuffle--> process_item --> (shard, (position, result))
      --GroupByKey(shard)--> write_shard (records sorted by position) --> shard name
      --ToList--> finalize (manifest.json, report.json)

Why the results are identical to local preparation: shards are the plan's contiguous chunks
of the sorted inputs, each shard's records are written in input position order, and the
record bytes come from the same deterministic ``process_item``. Only ``manifest.json``'s
``created`` and ``command`` differ.

Why not ``array_record``'s own Beam sinks: they are not in the PyPI wheel (array-record
0.8.6 ships only ``array_record.python``), and a generic sharded sink assigns records to
shards its own way, so the output would not match local preparation. A DoFn per shard with
``ArrayRecordWriter`` (the local writer) gives the same files.

Retries: Beam commits a bundle's output once even when the bundle ran twice, so a retried
extraction neither adds nor loses a clip. The writer still checks: a position seen twice is
written once (the duplicates are the same bytes), a missing position fails the shard, and
the shard is written under an attempt-unique temporary name, report first, then renamed, so
a retried or concurrent write attempt ends with the same final file. ``finalize`` runs as
the pipeline's last step so that a detached cloud job leaves a complete folder.

Paths: the launching machine lists ``--src`` and checks ``--out`` as files, so both must be
folders there: local disk for the DirectRunner, a shared mount (NFS, Lustre, ...) seen at the
same path by every worker on a Flink or Spark cluster. Where workers cannot mount the storage
(Dataflow), ``--worker_path_map /gcs/bucket=gs://bucket`` tells them the URL behind the
launcher's mount (e.g. gcsfuse on the launching VM): workers then read each input and write
each shard through Beam's ``FileSystems`` (gs://, s3://, hdfs://, ...), staging through a
local temporary file, and the launcher writes the manifest after the pipeline (rerun the
same command if the launcher died before that: it finds every shard and only finalizes).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import tempfile
import types
import uuid
from typing import Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from data_prep import pipeline

INPUTS = "beam_inputs.jsonl"    # the jobs of one run, read by the workers; removed after it
NAMESPACE = "modeformer_prepare"


def parse_path_map(spec: str | Sequence[str] | None) -> dict[str, str]:
  """``"/gcs/b=gs://b,/mnt/x=s3://x"`` -> {local prefix: URL prefix} (longest prefix wins)."""
  if not spec:
    return {}
  parts = spec.split(",") if isinstance(spec, str) else list(spec)
  out = {}
  for part in parts:
    local, sep, url = part.partition("=")
    if not sep or not local or not url:
      raise ValueError(f"--worker_path_map entry {part!r} is not LOCAL_PREFIX=URL_PREFIX")
    out[local.rstrip("/")] = url.rstrip("/")
  return out


def map_path(path: str, path_map: Mapping[str, str]) -> str:
  """The URL under which workers reach the launcher's ``path`` (``path`` if unmapped)."""
  for local in sorted(path_map, key=len, reverse=True):
    if path == local or path.startswith(local + "/"):
      return path_map[local] + path[len(local):]
  return path


def _read(url: str, dst: str) -> None:
  with FileSystems.open(url, compression_type=CompressionTypes.UNCOMPRESSED) as f, \
      open(dst, "wb") as g:
    shutil.copyfileobj(f, g, 1 << 22)


def _upload(src: str, url: str) -> None:
  with open(src, "rb") as f, \
      FileSystems.create(url, compression_type=CompressionTypes.UNCOMPRESSED) as g:
    shutil.copyfileobj(f, g, 1 << 22)


class _Extract(beam.DoFn):
  """``process_item`` on one job, keyed by its shard."""

  def __init__(self, path_map: Mapping[str, str] | None = None):
    self.path_map = dict(path_map or {})

  def _process(self, job: dict) -> dict:
    url = map_path(job["path"], self.path_map)
    if url == job["path"]:
      return pipeline.process_item(job)
    # Remote input: stage it to local disk (decoders want a file), same reasons as local.
    if not FileSystems.exists(url):
      return {"ok": False, "kind": "missing", "reason": f"file not found ({url})"}
    with tempfile.TemporaryDirectory(prefix="modeformer_in_") as d:
      local = os.path.join(d, os.path.basename(job["path"]))
      try:
        _read(url, local)
      except Exception as e:  # noqa: BLE001 -- reported like any unreadable file
        return {"ok": False, "kind": "error", "reason": f"reading {url}: {type(e).__name__}: {e}"}
      return pipeline.process_item(dict(job, path=local))

  def setup(self) -> None:
    pipeline.init_worker()
    self.written = Metrics.counter(NAMESPACE, "clips_extracted")
    self.skipped = Metrics.counter(NAMESPACE, "clips_skipped")
    self.seconds = Metrics.counter(NAMESPACE, "video_centiseconds")

  def process(self, line: dict) -> Iterator[tuple[str, tuple]]:
    result = self._process(line["job"])
    if result["ok"]:
      self.written.inc()
      self.seconds.inc(int(round(100 * result["seconds"])))
    else:
      self.skipped.inc()
      Metrics.counter(NAMESPACE, f"skipped_{result['kind']}").inc()
    yield line["shard"], (line["pos"], line["job"]["path"], line["job"]["clip_id"], result)


class _WriteShard(beam.DoFn):
  """All results of one shard -> its ArrayRecord file and report (via ``write_shard``)."""

  def __init__(self, out: str, sizes: dict[str, tuple[str, int]],
               path_map: Mapping[str, str] | None = None):
    self.out = out
    self.sizes = sizes      # shard name -> (split, number of inputs)
    self.url = map_path(out, dict(path_map or {}))   # == out when workers see the folder

  def setup(self) -> None:
    self.shards = Metrics.counter(NAMESPACE, "shards_written")

  def process(self, element: tuple[str, Iterable[tuple]]) -> Iterator[str]:
    name, values = element
    split, n = self.sizes[name]
    by_pos: dict[int, tuple] = {}
    for v in values:
      by_pos.setdefault(v[0], v)   # a position seen twice: same input, same bytes
    missing = sorted(set(range(n)) - set(by_pos))
    extra = sorted(set(by_pos) - set(range(n)))
    if missing or extra:
      raise RuntimeError(f"shard {name}: results for positions {missing[:10]} are missing and "
                         f"{extra[:10]} are unexpected (of {n} inputs); not writing it")
    ordered = [by_pos[i] for i in range(n)]
    items = [types.SimpleNamespace(path=path, clip_id=clip_id) for _, path, clip_id, _ in ordered]
    shard = pipeline.Shard(split, name, items)
    # A unique temporary name per attempt: two attempts at one shard never share a file.
    suffix = f".{uuid.uuid4().hex[:12]}.tmp"
    if self.url == self.out:
      stats = pipeline.write_shard(pathlib.Path(self.out), shard, (v[3] for v in ordered),
                                  tmp_suffix=suffix)
    else:   # remote folder: write here, then upload the report, then the shard, then rename
      with tempfile.TemporaryDirectory(prefix="modeformer_out_") as d:
        stats = pipeline.write_shard(pathlib.Path(d), shard, (v[3] for v in ordered))
        report = f"{name}.report.json"
        _upload(os.path.join(d, report), FileSystems.join(self.url, report))
        tmp_url = FileSystems.join(self.url, name + suffix)
        _upload(os.path.join(d, name), tmp_url)
        final = FileSystems.join(self.url, name)
        if FileSystems.exists(final):
          FileSystems.delete([final])   # an earlier attempt's identical file
        FileSystems.rename([tmp_url], [final])
    self.shards.inc()
    logging.info("wrote %s: %d of %d clips", name, stats["written"], stats["inputs"])
    yield name


def _finalize(names: list[str], plan: pipeline.Plan) -> str:
  del names   # only waited for: finalize reads every shard's report from the folder
  report = pipeline.finalize(plan)
  return f"{report['written']} of {report['inputs']} clips"


def _direct_args(runner: str, args: list[str], workers: int) -> list[str]:
  """DirectRunner defaults: ``--workers`` worker processes and quieter workers, unless set."""
  if runner != "DirectRunner":
    return args
  if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
    args = args + ["--default_sdk_harness_log_level=WARNING"]   # not ~5 INFO lines a worker
  if any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in args):
    return args
  if workers <= 1:
    return args + ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
  return args + [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]


def run(plan: pipeline.Plan, todo: Sequence[pipeline.Shard], runner: str,
        pipeline_args: Sequence[str] = (), workers: int = 1,
        path_map: Mapping[str, str] | None = None) -> tuple[list[str], bool]:
  """Writes the shards in ``todo`` (and then the manifest) with a Beam pipeline.

  Args:
    plan: from ``pipeline.make_plan``.
    todo: the plan's unfinished shards.
    runner: a Beam runner name (DirectRunner, DataflowRunner, FlinkRunner, ...).
    pipeline_args: further Beam options, e.g. ``["--project=p", "--region=r"]``.
    workers: the DirectRunner's worker processes when ``pipeline_args`` do not set them.
    path_map: launcher path prefix -> URL prefix for workers (``parse_path_map``); with it
      the manifest is written here after the pipeline rather than by a worker.

  Returns:
    The names of the shards written, and whether the pipeline wrote the manifest.
  """
  out = plan.out
  args = _direct_args(runner, [f"--runner={runner}", *pipeline_args], workers)
  options = PipelineOptions(args)
  # The jobs go to the workers through a file in the output folder rather than inside the
  # pipeline graph: a million-clip job list would exceed the graph size runners accept.
  inputs = out / INPUTS
  tmp = inputs.with_name(inputs.name + ".tmp")
  with open(tmp, "w") as f:
    for sh in todo:
      for pos, job in enumerate(plan.jobs(sh)):
        f.write(json.dumps({"shard": sh.name, "pos": pos, "job": job}) + "\n")
  os.replace(tmp, inputs)
  sizes = {sh.name: (sh.split, len(sh.items)) for sh in todo}
  # The manifest step needs the plan but not its (possibly huge) input lists.
  light = dataclasses.replace(plan, shards=[pipeline.Shard(sh.split, sh.name, [])
                                            for sh in plan.shards])

  path_map = dict(path_map or {})
  graph = beam.Pipeline(options=options)
  grouped = (graph
             | "ReadJobs" >> beam.io.ReadFromText(map_path(str(inputs), path_map))
             | "Parse" >> beam.Map(json.loads)
             | "Spread" >> beam.Reshuffle()        # extraction is the cost: spread it out
             | "Extract" >> beam.ParDo(_Extract(path_map))
             | "GroupByShard" >> beam.GroupByKey())
  empty = [sh.name for sh in todo if not sh.items]
  if empty:   # a requested split without inputs still gets its (empty) shard
    grouped = ((grouped, graph | "EmptyShards" >> beam.Create([(n, []) for n in empty]))
               | "AllShards" >> beam.Flatten())
  written = grouped | "WriteShards" >> beam.ParDo(_WriteShard(str(out), sizes, path_map))
  finalizes = map_path(str(out), path_map) == str(out)
  if finalizes:
    # Workers see the folder: the pipeline finishes the job itself, launcher or not.
    _ = (written
         | "AllWritten" >> beam.combiners.ToList()
         | "Finalize" >> beam.Map(_finalize, light))
  result = graph.run()
  result.wait_until_finish()
  try:
    counters = {r.key.metric.name: r.committed for r in
                result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
                ["counters"]}
  except Exception:  # noqa: BLE001 -- a runner without committed metrics: nothing to print
    counters = {}
  if counters:
    print("beam counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())),
          flush=True)
  inputs.unlink(missing_ok=True)
  return [sh.name for sh in todo if pipeline.shard_done(out, sh.name)], finalizes
