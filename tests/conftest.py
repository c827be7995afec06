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
