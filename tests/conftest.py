"""Test environment: 8 simulated CPU devices and parsed absl flags.

XLA_FLAGS must be set before jax is first imported, which is why this sits at the top of
the conftest that pytest loads before any test module.
"""
import os

_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

# grain's worker processes read absl flags; outside absl.app.run they are unparsed.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

import pathlib  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402

# Several tests build the same jitted train/eval programs (one per train_and_evaluate call);
# XLA's persistent cache lets the second build skip the compile. Keyed on the program, so a
# stale entry can never be used for a different program.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "modeformer_jax_test_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
  return REPO


@pytest.fixture(scope="session")
def real_clips_dir() -> pathlib.Path:
  """``../shared/data/real_clips``; tests using it skip on a user's clone without it."""
  path = SHARED_DATA / "real_clips"
  if not path.is_dir():
    pytest.skip(f"{path} not present")
  return path


@pytest.fixture(scope="session")
def grid_dir() -> pathlib.Path:
  path = SHARED_DATA / "grid_s1"
  if not path.is_dir():
    pytest.skip(f"{path} not present")
  return path


# The test suite's one synthetic dataset and its uninterrupted preparation (3 shards per
# split), shared by the tests of preparation (local, Beam, TFDS) and of detection.
SHARDS = 3


@pytest.fixture(scope="session")
def synthetic_src(tmp_path_factory) -> pathlib.Path:
  """A small synthetic LRS2-layout dataset: 3 train, 1 test, 1 val speaker x 3 clips of
  1.6-2.2 s (15 clips)."""
  from data_prep import synthetic
  out = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(out, num_speakers=3, num_test_speakers=1, num_val_speakers=1,
                             clips_per_speaker=3, min_seconds=1.6, max_seconds=2.2, seed=3,
                             workers=2, progress=False)
  return out


@pytest.fixture(scope="session")
def reference(synthetic_src, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  """``synthetic_src`` prepared locally (``SHARDS`` shards per split) and its report; read
  only: tests that write prepare into their own folders."""
  from data_prep import prepare
  out = tmp_path_factory.mktemp("reference")
  report = prepare.prepare("lrs2", synthetic_src, out, shards_per_split=SHARDS, workers=2,
                           progress=False)
  return out, report


@pytest.fixture(scope="session")
def mock_prepared_dir(tmp_path_factory) -> pathlib.Path:
  """A prepared-dataset folder without any video: random lips and mel written through the
  preparation's own record and shard writers (``pipeline.write_shard``, ``finalize``), with
  4 train speakers x 2 clips, 2 test x 2 and 1 val x 2. Built in about a second; for tests of what reads prepared data (loader, eval,
  ablation plumbing), not of what preparation computes."""
  import numpy as np

  from modeformer_jax.data import records
  from modeformer_jax.media import features
  from modeformer_jax.model import input_spec, windows
  from data_prep import layouts, pipeline
  out = tmp_path_factory.mktemp("mock_prepared")
  rng = np.random.default_rng(0)
  spec = input_spec.for_layout("lrs2")
  speakers = {"train": 4, "test": 2, "val": 1}
  shards, results = [], {}
  plan = {"format_version": records.FORMAT_VERSION, "layout": "lrs2", "source_root": "mock",
          "feature_layout": "lrs2", "crop_box": None, "min_frames": features.MIN_FRAMES,
          "input_spec": spec.to_dict(), "audio_shift": 0, "lip_codec": "jpeg",
          "jpeg_quality": records.JPEG_QUALITY, "splits": {}}
  for split, n_spk in speakers.items():
    items, res = [], []
    for s in range(n_spk):
      for c in range(2):
        t = int(rng.integers(50, 61))                     # 2.0-2.4 s at 25 fps
        clip = features.Clip(lips=rng.integers(0, 256, (t, 48, 96, 3), dtype=np.uint8),
                             mel=rng.uniform(-4, 4, (80, windows.num_mel_frames(t))
                                             ).astype(np.float32),
                             num_frames=t, fps=float(windows.FPS), source_fps=25.0,
                             duration=t / windows.FPS)
        cid, spk = f"{split}_{s}/{c:05d}", f"{split}_{s}"
        items.append(layouts.Item(split, f"/mock/{cid}.mp4", cid, spk))
        res.append({"ok": True, "num_frames": t, "seconds": t / windows.FPS,
                    "record": records.encode_clip(clip, cid, spk, split, f"{cid}.mp4")})
    name = records.shard_name(split, 0, 1)
    shards.append(pipeline.Shard(split, name, items))
    results[name] = res
    plan["splits"][split] = {"num_inputs": len(items), "shards": [name]}
  for sh in shards:
    pipeline.write_shard(out, sh, results[sh.name])
  pipeline.finalize(pipeline.Plan(out, pathlib.Path("/mock"), plan, shards, {}, "mock", "mock"))
  return out


def fast_init(model):
  """``model.init(key 0)`` compiled once at XLA's lowest optimisation level: parameter
  initialisation runs once, so compiling it well is wasted time (micro: 6.5 s instead of 31 s
  jitted at the default level, 42 s eager, measured on 2 cores)."""
  import jax
  key = jax.random.key(0)
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  return jax.jit(model.init).lower(key).compile(fast)(key)


def _session_params(variant: str):
  from modeformer_jax.model import models
  model = models.ModEFormer(models.model_config(variant))
  return model, fast_init(model)


@pytest.fixture(scope="session")
def micro_model():
  """``(model, params)`` of the micro variant, initialised once per session (key 0)."""
  return _session_params("micro")


@pytest.fixture(scope="session")
def tiny_model():
  """``(model, params)`` of the tiny variant, initialised once per session (key 0)."""
  return _session_params("tiny")
