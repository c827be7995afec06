"""Every command's --help reads as a page for a person (``modeformer_jax.cli``), and the
native-log filter (``modeformer_jax.native_log``) drops MediaPipe's chatter, nothing else."""
import argparse
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

import modeformer_jax

from modeformer_jax import cli, native_log

# module -> the command a person types (data_prep.synthetic's parser lives in its dataset).
CLIS = {
  "modeformer_jax.ablate": None, "modeformer_jax.demo": None, "modeformer_jax.detect": None,
  "modeformer_jax.eval": None, "modeformer_jax.export": None, "modeformer_jax.plan": None,
  "modeformer_jax.summary": None, "modeformer_jax.train": None,
  "data_prep.prepare": None, "data_prep.tfds_builder": None,
  "data_prep.synthetic.dataset": "data_prep.synthetic", "data_prep.synthetic.formats": None,
  "data_prep.synthetic.long": None,
  **{f"bench.{name}": None for name in (
    "conv3d", "conv3d_layers", "cpu_speed", "crops", "detect_shifts", "eval_speed", "formats",
    "grid_speech", "lip_audio_sync", "loader", "model", "prepare", "sync_qc", "train_step")},
}


def _help(module: str, monkeypatch, capsys) -> str:
  main = importlib.import_module(module).main
  # Some bench commands read sys.argv themselves (main() without arguments).
  monkeypatch.setattr(sys, "argv", [module, "--help"])
  with pytest.raises(SystemExit) as e:
    main(["--help"]) if main.__code__.co_argcount else main()
  assert e.value.code in (0, None)
  return capsys.readouterr().out


@pytest.mark.parametrize("module", sorted(CLIS))
def test_help_is_a_page_for_a_person(module, monkeypatch, capsys):
  text = _help(module, monkeypatch, capsys)
  assert text.startswith(f"usage: python -m {CLIS[module] or module} "), text[:200]
  for markup in ("``", ":func:", ":mod:", "**", "(default: None)", "(default: False)", "::\n"):
    assert markup not in text, (markup, text)
  # One default per option: an option's help is the text up to the next option.
  for entry in re.split(r"\n\s+(?=--?(?:\w|\[no\]))", text):
    assert entry.count("(default:") <= 1, entry


def test_default_note_and_markup():
  assert cli.default_note(3, "steps") == " (default: 3)"
  for default in (None, False, "", [], argparse.SUPPRESS):
    assert cli.default_note(default, "x") == ""
  assert cli.default_note("a", "dataset name (default: --src folder name)") == ""
  assert cli.plain("see :func:`parse_arg` and ``--out``, **late**, :mod:`the qc <x.qc>`::") \
      == "see parse_arg and --out, late, the qc:"
  assert cli.prog("data_prep.synthetic.__main__") == "python -m data_prep.synthetic"


def test_verbose_flag_turns_the_filter_off(monkeypatch):
  monkeypatch.setenv(native_log.ENV, "0")   # restored after the test
  p = cli.parser("modeformer_jax.x", "doc", verbose=True)
  assert not p.parse_args([]).verbose and not native_log.verbose()
  assert p.parse_args(["--verbose"]).verbose and native_log.verbose()


NOISE = [
  b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
  b"W0000 00:00:1796417521.706902    9689 inference_feedback_manager.cc:114] Feedback manager "
  b"requires a model with a single signature inference. Disabling support for feedback "
  b"tensors.\n",
  b"I0000 00:00:1796417521.7 9689 gl_context.cc:357] GL version: 2.1\n",
  b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
  b"AttributeError: 'MessageFactory' object has no attribute 'GetPrototype'\n",
]
KEPT = [
  b"E0000 00:00:1796417521.706902    9689 calculator_graph.cc:887] INVALID_ARGUMENT: bad\n",
  b"Traceback (most recent call last):\n",
  b"error: clip.mp4: 29 frames at 25 fps, need at least 35\n",
  b"WARNING: the model was trained on lip landmarks\n",
]


def test_filter_drops_native_noise_and_passes_real_errors():
  for line in NOISE:
    assert native_log.strip_noise(line) == b"", line
  for line in KEPT:
    assert native_log.strip_noise(line) == line, line
  # A native line written right after a progress bar's unfinished line: the bar stays.
  bar = b"\rclip.mp4:  40%|####      | 50/125"
  assert native_log.strip_noise(bar + NOISE[3]) == bar


def test_line_filter_over_split_writes():
  f = native_log.LineFilter()
  stream = b"".join([KEPT[0], NOISE[1], KEPT[2], NOISE[0]]) + b"\rbar 10%"
  out = b"".join(f.feed(stream[i:i + 7]) for i in range(0, len(stream), 7))
  assert out == KEPT[0] + KEPT[2]
  assert f.holding and f.flush() == b"\rbar 10%" and not f.holding


_MEDIAPIPE_RUN = """
import sys, numpy as np
from modeformer_jax.media import crops
with crops.FaceLandmarker() as lm:
  lm.observe(np.zeros((240, 320, 3), np.uint8))
print("project line", file=sys.stderr)
raise SystemExit("error: a real error")
"""


@pytest.mark.slow
def test_mediapipe_start_up_lines_stay_off_stderr_unless_verbose():
  """A real FaceLandmarker in a fresh process (~2 s): its native lines are written from
  MediaPipe's own threads after creation, which is what the filter process is for."""
  env = {k: v for k, v in os.environ.items() if k != native_log.ENV}
  run = [sys.executable, "-c", _MEDIAPIPE_RUN]
  quiet = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
  assert quiet.stderr.splitlines() == ["project line", "error: a real error"], quiet.stderr
  loud = subprocess.run(run, env=dict(env, **{native_log.ENV: "1"}), capture_output=True,
                        text=True, timeout=300)
  assert "Feedback manager requires a model" in loud.stderr, loud.stderr


LAYERS = ("model", "media", "data", "training", "evaluation", "qc", "analysis")
SHARED = {"errors", "jsonio", "cli", "native_log", ""}     # "" = the package (__version__)


def test_each_layer_imports_only_the_layers_above_it():
  """The README's module map: a subpackage imports its own layer, the shared plumbing and
  the layers before it in ``LAYERS``, never a later layer or a command-line front end."""
  import ast

  pkg = pathlib.Path(modeformer_jax.__file__).parent
  bad = []
  for rank, layer in enumerate(LAYERS):
    for path in sorted((pkg / layer).glob("*.py")):
      for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
          if node.module == "modeformer_jax":
            names = [a.name for a in node.names]
          elif node.module.startswith("modeformer_jax."):
            names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
          names = [a.name.split(".")[1] for a in node.names
                   if a.name.startswith("modeformer_jax.")]
        for name in names:
          if name in SHARED or name == "__version__":
            continue
          if name not in LAYERS or LAYERS.index(name) > rank:
            bad.append(f"{path.relative_to(pkg)} imports {name}")
  assert not bad, bad


def test_plain_vs_qc_against_lists_every_difference_but_timings():
  """``bench.plain_vs_qc --against``: the before/after check of a refactor."""
  from bench import plain_vs_qc
  old = {"a": 1, "timing": {"wall_s": 2}, "b": [1.0, 2.0], "s": [{"r": None}]}
  new = {"a": 1, "timing": {"wall_s": 3}, "b": [1.0, 2.5], "s": [{"r": "silence"}], "c": 0}
  assert plain_vs_qc.differences(old, new) == [
      ".b[1]: 2.0 -> 2.5", ".c: only after", ".s[0].r: None -> 'silence'"]
  assert plain_vs_qc.differences(old, new, ignore=("b", "c", "s")) == []
