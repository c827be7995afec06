"""The TFDS builder: built without TensorFlow, its records equal local preparation's, in
input order, skips recorded; the same through TFDS's Beam path."""
from __future__ import annotations

import importlib.util

import pytest
from test_prepare import _all_records, _bad_inputs_folder

from modeformer_jax.data import records
from data_prep import prepare as prep

tfds = pytest.importorskip("tensorflow_datasets")
from data_prep import tfds_builder


def _records(data_dir, name: str) -> dict[str, list[bytes]]:
  sources = tfds.data_source(name, data_dir=str(data_dir))
  return {split: [src[i]["record"] for i in range(len(src))] for split, src in sources.items()}


@pytest.mark.slow
def test_built_without_tensorflow_equals_local_prep(synthetic_src, reference, tmp_path):
  assert importlib.util.find_spec("tensorflow") is None, "this test is about a TF-free build"
  ref_out, _ = reference
  builder = tfds_builder.build("lrs2", str(synthetic_src), str(tmp_path))
  got = _records(tmp_path, "modeformer_clips/lrs2")
  assert got == _all_records(ref_out)                      # same bytes, same order
  meta = builder.info.metadata
  assert meta["input_spec"] == records.read_manifest(ref_out)["input_spec"]
  assert meta["skipped"] == {"train": [], "val": [], "test": []}   # every split, none skipped
  ex = tfds.data_source("modeformer_clips/lrs2", data_dir=str(tmp_path))["test"][0]
  rec = records.decode_record(ex["record"])
  assert rec["clip_id"] == ex["clip_id"].decode() and rec["num_frames"] == ex["num_frames"]
  assert records.decode_lips(rec, 0, 5).shape == (5, 48, 96, 3)


def test_skipped_files_are_recorded(tmp_path):
  src = _bad_inputs_folder(tmp_path / "src")
  want = prep.prepare("folder", src, tmp_path / "local", workers=1, progress=False)
  builder = tfds_builder.build("folder", str(src), str(tmp_path / "tfds"))
  skipped = builder.info.metadata["skipped"]["train"]
  assert skipped == [{k: s[k] for k in ("path", "clip_id", "kind", "reason")}
                     for s in want["skipped_files"]]
  assert builder.info.splits["train"].num_examples == want["written"] == 2
  # The metadata is on disk too: a reader sees what was skipped.
  reread = tfds.builder("modeformer_clips/folder", data_dir=str(tmp_path / "tfds"))
  assert len(reread.info.metadata["skipped"]["train"]) == 5


@pytest.mark.slow
def test_beam_build_equals_local_build(synthetic_src, reference, tmp_path):
  pytest.importorskip("apache_beam")
  ref_out, _ = reference
  tfds_builder.main(["--config", "lrs2", "--manual_dir", str(synthetic_src), "--data_dir",
                     str(tmp_path), "--beam_pipeline_options",
                     "runner=DirectRunner,direct_num_workers=1,direct_running_mode=in_memory"])
  assert _records(tmp_path, "modeformer_clips/lrs2") == _all_records(ref_out)
