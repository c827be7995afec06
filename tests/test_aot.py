"""Deviceless compilation for TPU and GPU targets, saved executables, and ordinary commands
left alone by the target compilers (modeformer_jax/training/aot.py, plan --target, train --compiled).

Tests that need the TPU compiler (libtpu) or the GPU compiler (``make aot``) are marked
slow: ``make test-all`` (CI) installs both and runs them.
"""
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from modeformer_jax import errors
from modeformer_jax.training import aot

REPO = pathlib.Path(__file__).resolve().parents[1]
HAVE_TPU = importlib.util.find_spec("libtpu") is not None
HAVE_GPU = (aot.gpu_compiler_dir() / "jax_plugins" / "xla_cuda12").is_dir()
needs_tpu = pytest.mark.skipif(not HAVE_TPU, reason="libtpu not installed (make aot)")
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason="GPU compiler not installed (make aot)")


def _env(**extra: str) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  env.update(extra)
  return env


def _plan(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "modeformer_jax.plan", *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ fast
def test_booking_names_map_to_topologies():
  t = aot.target("V5E-256")
  assert (t.chips, t.hosts, t.topology, t.platform) == (256, 64, "v5e:16x16", "tpu")
  # v4 and v5p names count TensorCores: v5p-8 is 4 chips.
  assert aot.target("v5p-8").chips == 4 and aot.target("v4-8").chips == 4
  assert aot.target("h100-16").hosts == 2 and aot.target("h100-16").platform == "cuda"
  for name, t in aot.TARGETS.items():
    assert t.chip in aot.CHIPS and t.chips % t.hosts == 0, name
  with pytest.raises(ValueError, match="unknown target 'v7-8'.*v5e-256"):
    aot.target("v7-8")


def test_aot_extra_pins_this_jax():
  import jax
  setup = (REPO / "setup.py").read_text()
  assert f'"jax[tpu]=={aot.JAX_VERSION}"' in setup
  assert any(p.startswith(f"jax-cuda12-pjrt=={aot.JAX_VERSION}") for p in aot.GPU_COMPILER_PINS)
  assert jax.__version__ == aot.JAX_VERSION, "update aot.JAX_VERSION and setup.py's aot extra"


def test_collectives_are_read_from_hlo():
  hlo = """
  %all-gather-start = ((bf16[16,3,8]{2,1,0}, s32[16]{0}), (bf16[64,3,8]{2,1,0}, s32[64]{0})) all-gather-start(%a, %b), channel_id=1
  %all-gather-done = (bf16[64,3,8]{2,1,0}, s32[64]{0}) all-gather-done(%all-gather-start)
  %all-reduce.1 = f32[1000]{0} all-reduce(%g), channel_id=2, to_apply=%add
  %ars = (f32[10]{0}, f32[6]{0}) all-reduce-start(%x, %y), channel_id=3
  %reduce-scatter = f32[16,3,8]{2,1,0} reduce-scatter(%z), channel_id=4, dimensions={0}
  %add.3 = f32[1000]{0} add(%p, %q)
  """
  rows = aot.collectives(hlo)
  assert [r["op"] for r in rows] == ["all-gather", "all-reduce", "all-reduce", "reduce-scatter"]
  assert rows[0]["bytes"] == 64 * 3 * 8 * 2 + 64 * 4        # the results, not the operands
  assert rows[0]["arrays"] == ["bf16[64,3,8]", "s32[64]"]
  assert rows[1]["bytes"] == 4000 and rows[2]["bytes"] == 64
  summary = aot.collective_summary(rows)
  assert summary["all-reduce"]["count"] == 2 and summary["all-reduce"]["bytes"] == 4064


def test_oom_message_is_read():
  err = RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory "
                     "in memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity")
  assert aot.is_oom(err) and aot.oom_bytes(err) == int(20.5 * 2**30)
  assert not aot.is_oom(RuntimeError("INVALID_ARGUMENT: shapes"))
  # libtpu 0.0.42's wording (micro model, B = 60000 on v5e-1).
  err = RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required "
                     "for HLO temporaries (156.10G) exceeds available HBM (15.75G).")
  assert aot.is_oom(err) and aot.oom_bytes(err) == int(156.10 * 2**30)


def test_ordinary_commands_do_not_load_accelerator_runtimes():
  """With the target compilers installed, `detect --help` and a JAX computation after it
  never load libtpu or a CUDA plugin and print nothing to stderr (JAX_PLATFORMS unset)."""
  code = ("import runpy, sys\n"
          "sys.argv = ['detect', '--help']\n"
          "try:\n runpy.run_module('modeformer_jax.detect', run_name='__main__')\n"
          "except SystemExit:\n pass\n"
          "import jax, jax.numpy as jnp\n"
          "assert float(jnp.ones(3).sum()) == 3.0\n"
          "maps = open('/proc/self/maps').read()\n"
          "print('LOADED', 'libtpu' in maps, 'xla_cuda' in maps, jax.default_backend())\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr[-2000:]
  assert "LOADED False False cpu" in res.stdout
  assert res.stderr.strip() == "", res.stderr[-2000:]


def test_saved_executable_refused_for_another_signature(tmp_path):
  saved = {"platform": "tpu", "device_kind": "TPU v5", "devices": 4, "processes": 1,
           "batch_size": 2000, "num_hard": 2, "config_sha256": "a"}
  here = dict(saved, platform="cpu", device_kind="cpu", devices=2, config_sha256="b")
  with pytest.raises(errors.CompiledMismatch) as e:
    aot.check_signature("step.pkl", saved, here, {"model": {"dtype": "bfloat16"}},
                        {"model": {"dtype": "float32"}})
  msg = str(e.value)
  assert "platform: compiled for 'tpu', this run has 'cpu'" in msg
  assert "devices: compiled for 4, this run has 2" in msg
  assert "model.dtype: compiled for 'bfloat16', this run has 'float32'" in msg
  aot.check_signature("step.pkl", saved, dict(saved))   # the same signature passes
  bad = tmp_path / "x.pkl"
  bad.write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match="not a saved compiled step"):
    aot.read_compiled(bad)


# ------------------------------------------------------------------ compilers (CI)
def _blocks(out: str) -> dict[int, str]:
  """plan's per-stage blocks: ' stage N:' up to the next one."""
  parts = re.split(r"^ stage (\d):\n", out, flags=re.M)
  return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.slow
@needs_tpu
def test_micro_step_compiled_by_the_tpu_compiler_and_its_own_oom():
  """Two planners at once (libtpu's lockfile): the micro step for v5p-8 in both stages, and
  a batch the TPU compiler itself refuses on v5e-1, reported as over with exit 0."""
  common = ["--config", "configs/modeformer.py:micro", "--num_hard", "2", "--remat", "off",
            "--nosearch"]
  procs = [subprocess.Popen([sys.executable, "-m", "modeformer_jax.plan", "--target", tgt,
                             "--batch_sizes", b, *common, *extra], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for tgt, b, extra in (("v5p-8", "64", ["--stages", "1,2"]),
                                 ("v5e-1", "60000", ["--stages", "2", "--noeval"]))]
  (ok, ok_err), (oom, oom_err) = [p.communicate(timeout=900) for p in procs]
  assert procs[0].returncode == 0, ok_err[-3000:]
  assert "64 x" not in ok and "4 x TPU v5" in ok and "compiled by the TPU compiler" in ok
  blocks = _blocks(ok)
  assert set(blocks) == {1, 2}
  for st, text in blocks.items():
    assert "fits" in text and "peak" in text and "FLOP" in text, text
    assert re.search(r"estimated step [\d.]+ s", text), text
  # Stage 2 gathers the audio EMBEDDINGS [B, 1+N_H, D] (never the mel or the logits);
  # stage 1 gathers nothing.
  # (XLA:GPU gathers them in bf16 with the ids in one collective; libtpu in f32, apart.)
  assert re.search(r"all-gather x\d+ \([^)]*largest (bf16|f32)\[64,3,8\]", blocks[2]), blocks[2]
  assert "all-gather" not in blocks[1]
  assert "eval (video tower" in ok and "eval (audio tower" in ok
  assert procs[1].returncode == 0, oom_err[-3000:]
  assert "out of memory: the compiler refused it" in oom and "over" in oom, oom
  assert "exceeds available HBM (15.75G)" in oom
  assert "Traceback" not in oom_err


@pytest.mark.slow
@needs_gpu
def test_micro_step_compiled_by_the_gpu_compiler_and_over_budget():
  res = _plan("--target", "h100-8", "--config", "configs/modeformer.py:micro",
              "--batch_sizes", "64", "--num_hard", "2", "--stages", "2", "--remat", "off",
              "--nosearch", "--noeval", "--memory_per_device", "4MiB")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "8 x NVIDIA H100 80GB HBM3" in res.stdout and "compiled by the GPU compiler" in res.stdout
  text = _blocks(res.stdout)[2]
  assert "over" in text and "of 0.004" in text, text        # over the 4 MiB budget, exit 0
  flops = re.search(r"flops per chip per step ([\d.]+) ([kMGT])FLOP", text)
  assert flops, text                                        # counted, not '?'
  assert "all-gather" in text and "reduce-scatter" in text
  assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_save_compiled_round_trip_and_mismatch(tmp_path):
  """plan --save_compiled on CPU; a fresh process loads it and gets the jitted step's
  results; train --compiled refuses another config before any step, naming the field."""
  path = tmp_path / "step.pkl"
  cfg = "configs/synthetic.py:variant=micro,num_hard=2,steps=3,runlocal"
  res = _plan("--target", "cpu", "--devices", "2", "--config", cfg, "--conv3d_impl", "auto",
              "--nosearch", "--save_compiled", str(path))
  assert res.returncode == 0, res.stderr[-3000:]
  assert path.exists() and "saved the compiled step" in res.stdout
  run = subprocess.run([sys.executable, str(REPO / "tests" / "_compiled_step_worker.py"),
                        str(path), cfg, "2"], cwd=REPO, env=_env(JAX_PLATFORMS="cpu"),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  for k, v in out["jitted"]["metrics"].items():
    assert out["compiled"]["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-7), k
  assert out["compiled"]["param_abs"] == pytest.approx(out["jitted"]["param_abs"], rel=1e-7)
  assert out["compiled"]["param_sum"] == pytest.approx(out["jitted"]["param_sum"], rel=1e-6)
  train = subprocess.run(
      [sys.executable, "-m", "modeformer_jax.train", "--config",
       "configs/synthetic.py:variant=micro,num_hard=3,steps=3,runlocal",
       "--workdir", str(tmp_path / "run"), "--compiled", str(path),
       "--config.data.dir", str(tmp_path / "no_data")],
      cwd=REPO, env=_env(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2"),
      capture_output=True, text=True, timeout=300)
  assert train.returncode == 2, train.stderr[-3000:]
  assert "num_hard: compiled for 2, this run has 3" in train.stderr
  assert "Traceback" not in train.stderr


@needs_tpu
def test_two_slice_mesh_orders_chips_within_each_slice():
  """A multi-slice device list (v5e-4 x 2 slices) makes the data mesh: slice 0's chips first,
  then slice 1's (jax.make_mesh's physical ordering covers one slice only and refused it)."""
  code = (
      "from modeformer_jax.training import aot, mesh\n"
      "devs = aot.devices(aot.target('v5e-4'), num_slices=2)\n"
      "m = mesh.make_mesh(devs)\n"
      "print(m.shape[mesh.AXIS], [d.slice_index for d in m.devices.reshape(-1)])\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True,
                       text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-3000:]
  assert res.stdout.strip().splitlines()[-1] == "8 [0, 0, 0, 0, 1, 1, 1, 1]", res.stdout
