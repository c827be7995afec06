"""The installed environment: dependencies consistent, landmark models shipped in the wheel."""
import re
import subprocess
import sys

# mediapipe 0.10.21 is installed with --no-deps (Makefile): its metadata asks for numpy<2,
# protobuf<5 and three packages the face solutions never import (opencv-contrib-python
# would also clash with opencv-python-headless). Everything else must be consistent.
_KNOWN = re.compile(r"^mediapipe 0\.10\.21 (requires (opencv-contrib-python|sentencepiece|"
                    r"sounddevice)|has requirement (numpy<2|protobuf<5))")


def test_pip_check_reports_only_mediapipes_known_pins():
  out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                       text=True, check=False)
  lines = [ln for ln in (out.stdout + out.stderr).splitlines()
           if ln.strip() and not ln.startswith("No broken")]
  unexpected = [ln for ln in lines if not _KNOWN.match(ln)]
  assert not unexpected, unexpected


def test_landmark_models_ship_inside_the_mediapipe_wheel():
  import importlib.util
  import pathlib
  root = pathlib.Path(importlib.util.find_spec("mediapipe").origin).parent
  for rel in ("modules/face_landmark/face_landmark_front_cpu.binarypb",
              "modules/face_landmark/face_landmark.tflite",
              "modules/face_detection/face_detection_short_range.tflite",
              "modules/face_detection/face_detection_full_range_sparse.tflite"):
    assert (root / rel).is_file(), rel
