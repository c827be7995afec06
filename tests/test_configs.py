"""Config files and the shared config CLI flags (config_utils, summary)."""
import pathlib

import pytest

from modeformer_jax import summary
from modeformer_jax.data import input_pipeline
from modeformer_jax.model.models import ModelConfig
from modeformer_jax.training import config_utils

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("spec", ["modeformer.py", "modeformer.py:micro,bf16", "grid.py",
                                  "synthetic.py:runlocal", "lrs.py",
                                  "lrs.py:lrs3,stage=2,runlocal"])
def test_every_config_loads_with_a_valid_model(spec):
  config = config_utils.load_config(str(CONFIGS / spec))
  ModelConfig.from_mapping(config.model)  # raises on unknown or missing-typed fields
  # Fields nothing reads are gone: the model variant lives in config.model, the stage in
  # data.entries_per_clip.
  assert "variant" not in config and "stage" not in config


@pytest.mark.parametrize("dataset", ["lrs2", "lrs3"])
def test_lrs_stages(dataset):
  s1 = config_utils.load_config(str(CONFIGS / f"lrs.py:dataset={dataset},stage=1"))
  s2 = config_utils.load_config(str(CONFIGS / f"lrs.py:dataset={dataset},stage=2"))
  assert s1.data.dir == s2.data.dir == f"/data/{dataset}_prepared"
  assert (s1.num_hard, s1.data.entries_per_clip, s1.total_steps) == (2, 1, 200000)
  assert (s2.num_hard, s2.data.entries_per_clip, s2.total_steps) == (11, 4, 100000)
  assert s1.batch_size == s2.batch_size == 2000 and s1.model.dtype == "bfloat16"
  assert input_pipeline.spec_from_config(s2).entries_per_clip == 4
  # The paper: no easy negatives in stage 1; the gathered InfoNCE in stage 2.
  assert (s1.loss.easy_negatives, s2.loss.easy_negatives) == (False, True)
  easy1 = config_utils.load_config(str(CONFIGS / f"lrs.py:dataset={dataset},stage=1,easy=1"))
  assert easy1.loss.easy_negatives and s1.microbatch == s2.microbatch == 0


def test_lrs_arguments():
  c = config_utils.load_config(str(CONFIGS / "lrs.py:lrs3,stage=2,num_hard=5,batch=512"))
  assert (c.data.dir, c.num_hard, c.batch_size) == ("/data/lrs3_prepared", 5, 512)
  c = config_utils.load_config(str(CONFIGS / "lrs.py:stage=2,runlocal"))
  assert (c.batch_size, c.data.entries_per_clip, c.model.width) == (16, 2, 96)
  for bad in ("lrs.py:lrs4", "lrs.py:stage=3", "lrs.py:epochs=3"):
    with pytest.raises(ValueError):
      config_utils.load_config(str(CONFIGS / bad))


def test_load_config_overrides():
  c = config_utils.load_config(str(CONFIGS / "grid.py:steps=10"), "--config.model.width=32",
                               "--config.data.entries_per_clip=2")
  assert (c.total_steps, c.model.width, c.data.entries_per_clip) == (10, 32, 2)
  with pytest.raises(ValueError, match="widht"):
    config_utils.load_config(str(CONFIGS / "grid.py"), "--config.model.widht=32")
  with pytest.raises(ValueError, match="nope.py"):
    config_utils.load_config("nope.py")


def test_summary_cli_takes_config_overrides(capsys):
  summary.main(["--config", str(CONFIGS / "modeformer.py:micro"), "--config.model.width=16",
                "--depth", "1"])
  out = capsys.readouterr().out
  assert "--config.model.width=16" in out.splitlines()[0]
  rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:5]}
  assert set(rows) == {"audio", "video", "total"}


def test_cli_help_lists_the_modules_flags(capsys):
  with pytest.raises(SystemExit) as e:
    summary.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: python -m modeformer_jax.summary [flags]\n\nParameter table")
  assert "--config:" in out and "--depth:" in out
  with pytest.raises(SystemExit) as e:
    summary.main(["--config", str(CONFIGS / "modeformer.py:micro"), "--dpth", "1"])
  assert e.value.code == 2
  assert "dpth" in capsys.readouterr().err


def test_faces_exact_teaches_one_frame_and_hard_negatives_inside_tolerance_are_refused():
  c = config_utils.load_config(str(CONFIGS / "faces.py:exact,steps=10"))
  assert (c.data.min_shift, c.loss.tolerance, c.total_steps) == (1, 0, 10)
  assert input_pipeline.spec_from_config(c).min_shift == 1
  default = config_utils.load_config(str(CONFIGS / "faces.py"))
  assert (default.data.min_shift, default.loss.tolerance) == (2, 1)
  # The loss would mask every +-1 hard negative: a run that trains on fewer negatives than
  # it says must not start.
  bad = config_utils.load_config(str(CONFIGS / "faces.py"), "--config.data.min_shift=1")
  with pytest.raises(ValueError, match="tolerance"):
    input_pipeline.spec_from_config(bad)
