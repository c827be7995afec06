"""A TensorFlow Datasets builder for LRS2, LRS3, VoxCeleb2 or any folder of videos.

For pipelines built around TFDS (big_vision and its relatives), the same clips that
``data_prep.prepare`` writes become a TFDS dataset, ``modeformer_clips/<config>``, opened
with ``tfds.data_source`` (random access, ArrayRecord) or ``tfds.builder``:

  python -m data_prep.tfds_builder --config lrs2 --manual_dir /data/lrs2 \\
      --data_dir ~/tensorflow_datasets
  python -m data_prep.tfds_builder --config vox2 --manual_dir /data/vox2 \\
      --data_dir gs://bucket/tfds --beam_pipeline_options "runner=DataflowRunner,project=P,..."

  source = tfds.data_source("modeformer_clips/lrs2", data_dir=...)["train"]
  clip = records.decode_record(source[0]["record"])   # the project's record, as prepared

No TensorFlow is needed to build or read it (TFDS 4.9 writes and reads ArrayRecord with
numpy; ``tests/test_tfds_builder.py`` runs where TensorFlow is not installed).

One implementation: the inputs come from ``data_prep.layouts`` and every example's
``record`` is ``data_prep.pipeline.process_item``'s record, byte-for-byte what local or Beam
preparation writes for the same file; TFDS only adds its own container (each example is a
``tf.train.Example`` with ``record``, ``clip_id``, ``speaker`` and ``num_frames``), split
metadata and versioning. Shuffling is disabled, so examples keep the input order.
The dataset's ``metadata.json`` holds the input spec (crop method and parameters) and the
feature description that ``manifest.json`` holds for prepared folders, and the files each
split skipped, with their reasons (a Beam build records the counts per reason; the files
are named in the workers' logs).

When ``--beam_pipeline_options`` (or a ``DownloadConfig`` with a Beam runner) is given, the
examples are produced by a Beam pipeline (TFDS's own Beam integration), so large datasets
are built on Dataflow, Flink or Spark as ``data_prep.prepare --runner`` does.

The training and evaluation CLIs of this project read prepared folders
(``data_prep.prepare``); this builder serves readers that expect TFDS.
"""
from __future__ import annotations

import collections
import logging
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from modeformer_jax import cli
from modeformer_jax.data import records
from modeformer_jax.media import features
from modeformer_jax.model import input_spec
from data_prep import layouts, pipeline

_DESCRIPTION = """Lip crops (48x96 RGB, 25 fps) and 80-bin log-mel spectrograms (16 kHz, hop
200) of talking-face videos, one record per clip in modeformer_jax's record format (msgpack;
decode with modeformer_jax.data.records.decode_record). Made by modeformer_jax's data_prep."""

_MANUAL = """LRS2, LRS3 and VoxCeleb2 are licensed by their authors; download them yourself
and pass the dataset root as --manual_dir, in the layout data_prep.layouts documents:
  lrs2: mvlrs_v1/{main,pretrain}/ with pretrain.txt, train.txt, val.txt, test.txt
  lrs3: pretrain/, trainval/, test/
  vox2: dev/mp4/, test/mp4/ (or a single mp4/)
  folder: any folder of videos (all train)."""


class ModeformerClipsConfig(tfds.core.BuilderConfig):
  """A dataset layout and the lip-crop method its clips are prepared with."""

  def __init__(self, *, layout: str, feature_layout: str | None = None, **kwargs: Any):
    super().__init__(**kwargs)
    self.layout = layout
    self.feature_layout = feature_layout or pipeline.FEATURE_LAYOUTS[layout]


class ModeformerClips(tfds.core.GeneratorBasedBuilder):
  """modeformer_jax clips of a talking-face dataset (see the module docstring)."""

  VERSION = tfds.core.Version(f"{records.FORMAT_VERSION}.0.0")
  RELEASE_NOTES = {str(VERSION): f"modeformer_jax record format {records.FORMAT_VERSION}."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  BUILDER_CONFIGS = [
      ModeformerClipsConfig(name="lrs2", layout="lrs2", description="LRS2 (BBC)"),
      ModeformerClipsConfig(name="lrs3", layout="lrs3", description="LRS3 (TED)"),
      ModeformerClipsConfig(name="vox2", layout="vox2", description="VoxCeleb2"),
      ModeformerClipsConfig(name="folder", layout="folder",
                            description="any folder of face-cropped videos (lower half)"),
      ModeformerClipsConfig(name="raw", layout="raw", feature_layout="landmarks",
                            description="any folder of uncropped videos, lip-landmark crops"),
  ]

  def _spec(self) -> input_spec.InputSpec:
    return input_spec.for_layout(self.builder_config.feature_layout)

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = tfds.core.MetadataDict(
        format_version=records.FORMAT_VERSION, layout=self.builder_config.layout,
        input_spec=self._spec().to_dict(),
        features=pipeline.feature_description("jpeg", self.builder_config.feature_layout, 0),
        min_frames=features.MIN_FRAMES, skipped={})
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "record": tfds.features.Tensor(shape=(), dtype=np.object_),
            "clip_id": tfds.features.Text(),
            "speaker": tfds.features.Text(),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
        }),
        metadata=metadata,
        disable_shuffling=True,   # keys are input positions: input order, as prepare writes
    )

  def _download_and_prepare(self, dl_manager, download_config) -> None:
    # TFDS switches to Beam when _generate_examples returns a PTransform: do that exactly
    # when the caller gave a runner, so a small local build needs no Beam.
    self._use_beam = (download_config.beam_runner is not None
                      or download_config.beam_options is not None)
    super()._download_and_prepare(dl_manager, download_config)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = pathlib.Path(dl_manager.manual_dir)
    items = layouts.list_items(self.builder_config.layout, root)
    options = pipeline.job_options(self._spec())
    by_split: dict[str, list[dict]] = collections.defaultdict(list)
    for it in items:
      by_split[it.split].append(pipeline.make_job(options, it, root))
    return {split: self._generate_examples(split, jobs) for split, jobs in by_split.items()}

  def _generate_examples(self, split: str, jobs: list[dict]):
    if getattr(self, "_use_beam", False):
      import apache_beam as beam  # only for Beam builds
      return (beam.Create(list(enumerate(jobs)))
              | f"Reshuffle_{split}" >> beam.Reshuffle()
              | f"Extract_{split}" >> beam.FlatMap(_beam_example))
    return self._local_examples(split, jobs)

  def _local_examples(self, split: str, jobs: list[dict]) -> Iterator[tuple[int, dict]]:
    skipped = self.info.metadata["skipped"].setdefault(split, [])
    for i, job in enumerate(jobs):
      r = pipeline.process_item(job)
      if r["ok"]:
        yield _key(i), _example(job, r)
      else:
        skipped.append({"path": job["path"], "clip_id": job["clip_id"], "kind": r["kind"],
                        "reason": r["reason"]})

  def _process_pipeline_result(self, pipeline_result) -> None:
    from apache_beam.metrics import MetricsFilter
    query = pipeline_result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE))
    counts = {c.key.metric.name: c.committed for c in query["counters"]}
    self.info.metadata["skipped"] = {"beam_counts": dict(sorted(counts.items()))}


_NAMESPACE = "modeformer_tfds"


def _key(i: int) -> int:
  # The input position: with shuffling disabled TFDS orders by key (and its Beam writer
  # needs integer keys to place them in shards).
  return i


def _example(job: dict, result: dict) -> dict:
  return {"record": result["record"], "clip_id": job["clip_id"], "speaker": job["speaker"],
          "num_frames": np.int32(result["num_frames"])}


def _beam_example(indexed: tuple[int, dict]) -> Iterator[tuple[int, dict]]:
  from apache_beam.metrics import Metrics
  i, job = indexed
  r = pipeline.process_item(job)
  if r["ok"]:
    yield _key(i), _example(job, r)
  else:
    Metrics.counter(_NAMESPACE, r["kind"]).inc()
    logging.warning("skipped %s (%s): %s", job["path"], r["kind"], r["reason"])


def build(config: str, manual_dir: str, data_dir: str,
          beam_pipeline_options: str | None = None) -> tfds.core.DatasetBuilder:
  """Builds ``modeformer_clips/<config>`` from ``manual_dir`` into ``data_dir``."""
  beam_options = None
  if beam_pipeline_options:
    from apache_beam.options.pipeline_options import PipelineOptions
    beam_options = PipelineOptions([f"--{kv}" for kv in beam_pipeline_options.split(",") if kv])
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                 beam_options=beam_options)
  # ArrayRecord: random access (tfds.data_source) and no TensorFlow (TFRecord needs it).
  builder = ModeformerClips(config=config, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=download_config)
  return builder


def main(argv: list[str] | None = None) -> None:
  """CLI: build one config of the dataset."""
  p = cli.parser(__name__, "Build modeformer_clips/<config> with TFDS.", verbose=True)
  p.add_argument("--config", required=True,
                 choices=[c.name for c in ModeformerClips.BUILDER_CONFIGS])
  p.add_argument("--manual_dir", required=True, help="the dataset root (licensed data)")
  p.add_argument("--data_dir", required=True, help="TFDS data_dir to write into")
  p.add_argument("--beam_pipeline_options", default=None,
                 help="build with Beam: comma-separated key=value pipeline options, e.g. "
                 "runner=DirectRunner,direct_num_workers=8,direct_running_mode=multi_processing")
  a = p.parse_args(argv)
  builder = build(a.config, a.manual_dir, a.data_dir, a.beam_pipeline_options)
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f"built {builder.info.full_name} in {builder.data_dir}: {splits}; skipped "
        f"{builder.info.metadata['skipped']}")


if __name__ == "__main__":
  main()
