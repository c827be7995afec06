"""The user-facing errors live in a module that imports nothing heavy."""
import pickle
import subprocess
import sys

import pytest

from modeformer_jax import errors


def test_errors_module_imports_nothing_heavy():
  code = ("import sys, modeformer_jax.errors; "
          "print(sorted(m for m in ('av', 'cv2', 'jax', 'numpy', 'mediapipe', 'flax') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout.strip()
  assert out == "[]"


def test_feature_error_names_file_kind_reason_and_survives_pickling():
  e = errors.FeatureError("clip.mp4", "no_audio", "no audio stream")
  assert str(e) == "clip.mp4: no audio stream" and e.kind == "no_audio"
  back = pickle.loads(pickle.dumps(e))   # crosses process pools intact
  assert (back.path, back.kind, back.reason) == (e.path, e.kind, e.reason)
  with pytest.raises(ValueError, match="unknown FeatureError kind"):
    errors.FeatureError("clip.mp4", "bad_kind", "x")
