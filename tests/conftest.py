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


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> pathlib.Path:
  """A small synthetic LRS2-layout dataset (4 train, 2 test, 1 val speakers; 2 s clips)."""
  from data_prep import synthetic
  out = tmp_path_factory.mktemp("synthetic")
  synthetic.generate_dataset(out, num_speakers=4, num_test_speakers=2, num_val_speakers=1,
                             clips_per_speaker=2, min_seconds=2.0, max_seconds=2.4, seed=0,
                             workers=2, progress=False)
  return out


@pytest.fixture(scope="session")
def prepared_dir(synthetic_dir, tmp_path_factory) -> pathlib.Path:
  """``synthetic_dir`` prepared into ArrayRecord shards."""
  from data_prep import prepare
  out = tmp_path_factory.mktemp("prepared")
  prepare.prepare("lrs2", str(synthetic_dir), str(out), workers=2, progress=False)
  return out
