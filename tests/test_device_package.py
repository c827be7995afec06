"""Clip packages (build, decode, check), single-file models and the device trainer."""
import json
import lzma
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_prep import device_package
from modeformer_jax import errors, train_device
from modeformer_jax.data import clip_package, input_pipeline, records
from modeformer_jax.model import checkpoints
from modeformer_jax.training import config_utils

# Where train_device runs there is none of these; the smoke test makes their import fail.
ABSENT_ON_DEVICE = ("grain", "array_record", "ml_collections", "av", "librosa", "mediapipe")


@pytest.fixture(scope="module")
def package(mock_prepared_dir, tmp_path_factory) -> tuple[pathlib.Path, str]:
  """The mock dataset's train split as a package; its lips are noise, which only a
  lossless crf keeps within the tolerance."""
  out = tmp_path_factory.mktemp("pkg")
  data = f"{mock_prepared_dir}:train"
  device_package.build(data, out, crf=0, preset="ultrafast", progress=False)
  return out, data


def _copy(package, tmp_path) -> pathlib.Path:
  dst = tmp_path / "pkg"
  shutil.copytree(package[0], dst)
  return dst


def test_round_trip_within_tolerances(package, mock_prepared_dir):
  path, data = package
  res = device_package.check(path, data)
  assert res["failures"] == [] and res["clips"] == 8
  assert res["psnr_db"] >= clip_package.LIPS_MIN_PSNR_DB
  assert res["mel_error_over_step"] <= 0.5 + 1e-3
  pkg = clip_package.load(path)
  src = records.open_split(str(mock_prepared_dir), "train")
  rec = records.decode_record(src[3])
  lips, mel = pkg.clip(3)
  assert pkg.clips[3]["clip_id"].endswith(rec["clip_id"]) and len(lips) == rec["num_frames"]
  assert np.abs(mel - records.decode_mel(rec)).max() <= pkg.clips[3]["mel_scale"] / 2 + 1e-5
  assert pkg.input_spec == records.read_manifest(mock_prepared_dir)["input_spec"]


def test_check_fails_on_corrupted_mel(package, tmp_path):
  path = _copy(package, tmp_path)
  index = clip_package.read_index(path)
  q = np.frombuffer(lzma.decompress((path / clip_package.MEL_FILE).read_bytes()), np.uint8)
  q = q.reshape(80, -1).copy()
  c = index["clips"][2]
  q[:, c["mel"]:c["mel"] + 4] //= 2
  (path / clip_package.MEL_FILE).write_bytes(lzma.compress(q.tobytes()))
  failures = device_package.check(path, package[1])["failures"]
  assert len(failures) == 1 and "mel off by" in failures[0]


def test_check_fails_on_changed_lips(package, tmp_path, mock_prepared_dir):
  # Clip 0 re-encoded brighter, its recorded mean updated: only the comparison with the
  # shards can tell.
  path = _copy(package, tmp_path)
  index = clip_package.read_index(path)
  writer = device_package._LipsWriter(path, 0, "ultrafast", 10 ** 6)
  for k, (_, _, lips, _) in enumerate(device_package.iter_clips(
      device_package.parse_sources(package[1]))):
    writer.add(np.clip(lips.astype(np.int16) + 8, 0, 255).astype(np.uint8) if k == 0 else lips)
  writer.close()
  index["clips"][0]["lips_mean"] = clip_package.clip_means(
      clip_package.load(path, verify=False).lips, index["clips"][:1])[0]
  (path / clip_package.INDEX).write_text(json.dumps(index))
  failures = device_package.check(path, package[1])["failures"]
  assert len(failures) == 1 and "lips" in failures[0] and "mean abs" in failures[0]


def test_decode_check_catches_another_decoder(package, tmp_path):
  path = _copy(package, tmp_path)
  index = clip_package.read_index(path)
  index["clips"][5]["lips_mean"] += 1.0
  (path / clip_package.INDEX).write_text(json.dumps(index))
  with pytest.raises(errors.PackageError, match="decode differently"):
    clip_package.load(path)
  assert device_package.check(path, package[1])["failures"]


def test_only_training_clips_are_packaged(mock_prepared_dir, tmp_path):
  for split in ("test", "val"):
    with pytest.raises(ValueError, match="only train splits"):
      device_package.parse_sources(f"{mock_prepared_dir}:{split}")
  manifest = records.read_manifest(mock_prepared_dir)
  (tmp_path / "manifest.json").write_text(json.dumps(
      dict(manifest, source_root="/x/shared/data/real_clips")))
  with pytest.raises(ValueError, match="never seen"):
    device_package.parse_sources(f"{tmp_path}:train")


def test_model_file_round_trip(micro_model, tmp_path):
  model, params = micro_model
  path = checkpoints.save_model_file(tmp_path / "m.msgpack", params, model.config.to_dict(),
                                     {"step": 7, "input_spec": {"x": 1}})
  m2, p2, meta = checkpoints.load_model(path)
  assert m2.config == model.config and meta["step"] == 7 and meta["input_spec"] == {"x": 1}
  for a, b in zip(*(list(map(np.asarray, __import__("jax").tree.leaves(t)))
                    for t in (params, p2))):
    np.testing.assert_array_equal(a, b)
  wide = dict(model.config.to_dict(), width=16)
  with pytest.raises(errors.CheckpointMismatchError):
    checkpoints.load_model(path, model_config=wide)


def test_recipe_is_faces_exact():
  c = config_utils.load_config(config_utils.config_file("faces.py") + ":exact")
  assert train_device.example_spec(int(c.num_hard)) == input_pipeline.spec_from_config(c)
  assert train_device.LOSS == {k: c.loss[k] for k in train_device.LOSS} == dict(c.loss)
  optim = dict(c.optim)
  assert train_device.OPTIM == {k: optim[k] for k in train_device.OPTIM}
  assert set(optim) - set(train_device.OPTIM) == {"total_steps"}


# The forked workers run numpy and OpenCV only, never JAX.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_batches_do_not_depend_on_workers(package):
  pkg = clip_package.load(package[0])
  maker = train_device.BatchMaker(pkg, 6, train_device.example_spec(), seed=1)
  batches = {}
  for workers in (0, 2):
    loader = train_device.Loader(maker, workers, slots=3)
    try:
      got = []
      for i in range(5):   # 30 entries over 8 clips: the epoch boundaries fall inside batches
        got.append({k: v.copy() for k, v in loader.get(i).items()})
        loader.release(i)
    finally:
      loader.close()
    batches[workers] = got
  for a, b in zip(batches[0], batches[2]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  first = np.concatenate([b["clip"] for b in batches[0]])[:8]
  assert sorted(first) == list(range(8))     # an epoch is a permutation of the clips
  assert batches[0][0]["video"].shape == (6, 5, 48, 96, 3)


@pytest.mark.slow
def test_smoke_command_trains_without_grain(package, tmp_path):
  """The device command (``--smoke``) with grain, ArrayRecord, ml_collections, PyAV,
  librosa and MediaPipe unimportable; it writes a model file ``load_model`` reads."""
  out = tmp_path / "out"
  argv = ["--package", str(package[0]), "--out", str(out), "--smoke", "--variant", "micro",
          "--steps", "2"]
  code = (f"import runpy, sys\nfor m in {ABSENT_ON_DEVICE!r}:\n  sys.modules[m] = None\n"
          f"sys.argv = ['train_device'] + {argv!r}\n"
          "runpy.run_module('modeformer_jax.train_device', run_name='__main__')\n")
  # One CPU device, as on the accelerator machine (conftest simulates 8): a faster compile.
  env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", ""))
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600, env=env)
  assert res.returncode == 0, res.stderr[-3000:]
  run = json.loads((out / "run.json").read_text())
  assert run["status"] == "finished" and run["steps"] == 2
  assert run["files"] == ["faces_v3-000002.msgpack"]
  model, params, meta = checkpoints.load_model(out / run["files"][0])
  assert meta["input_spec"] == clip_package.read_index(package[0])["input_spec"]
  assert meta["model"]["dtype"] == "float32" and meta["train_dtype"] == "bfloat16"
  assert model.config.width == 8 and meta["step"] == 2
  assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [1, 2]
