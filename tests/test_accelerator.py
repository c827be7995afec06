"""bench/accelerator.py: the one-accelerator bench, tested on the CPU (smoke scale)."""
import json
import math
import os
import subprocess
import sys

import pytest

from bench import accelerator as acc

REPO = acc.REPO


# ------------------------------------------------------------------ pure parts
def _linear_compile(fixed, per_entry, log):
  def compile_fn(b):
    log.append(b)
    return f"exe{b}", {"peak": fixed + per_entry * b, "compile_s": 0.1}
  return compile_fn


def test_choose_batch_lands_inside_the_window():
  calls = []
  best, log = acc.choose_batch(_linear_compile(10**6, 10**4, calls), 8, 10**8, fill=0.97,
                               low_water=0.85, max_compiles=2, fixed=10**6, multiple=8)
  b, exe, row = best
  assert 0.85 * 10**8 <= row["peak"] <= 0.97 * 10**8
  assert b % 8 == 0 and exe == f"exe{b}" and len(log) == 2 == len(calls)


def test_choose_batch_keeps_the_fitting_compile_when_the_second_is_over():
  # The peak has a knee the linear aim does not know: the re-aimed B is over the limit.
  def compile_fn(b):
    return f"exe{b}", {"peak": 10**4 * b + (10**9 if b > 1000 else 0), "compile_s": 0.1}
  best, log = acc.choose_batch(compile_fn, 800, 10**8, fill=0.97, low_water=0.85,
                               max_compiles=2, fixed=0, multiple=8)
  assert best[0] == 800 and [x["B"] for x in log] == [800, 9696]


def test_choose_batch_over_everywhere_and_without_limit():
  best, log = acc.choose_batch(_linear_compile(2 * 10**8, 1, []), 64, 10**8, fill=0.97,
                               low_water=0.85, max_compiles=2, fixed=0, multiple=8)
  assert best is None and [x["B"] for x in log] == [64, 24]
  best, log = acc.choose_batch(_linear_compile(0, 1, []), 64, None, fill=0.97,
                               low_water=0.85, max_compiles=2, fixed=0, multiple=8)
  assert best[0] == 64 and len(log) == 1


def test_aim_and_frontier_aim():
  assert acc.aim_batch(100, 1000 + 100 * 50, 1000 + 400 * 50, 1000, 8) == 400
  assert acc.aim_batch(100, 10**9, 10, 0, 8) == 8            # never below one multiple
  s = acc.Settings(fill=1.0, multiple=8)
  assert acc.frontier_aim(s, 10**6, 2.0, 0, 1000.0) == 496   # 10^6 / 2000, floored to 8


def test_runner_skips_what_the_budget_cannot_cover():
  budget = acc.Budget(10.0)
  runner = acc.Runner(acc.Settings(isolate=False), budget, cache_dir="")
  runner.walls["frontier"] = 60.0
  r = runner.run({"kind": "step"}, "frontier")
  assert r["status"] == "skipped" and "budget" in r["reason"]
  budget.seconds = 0.0
  assert runner.run({"kind": "peak"}, "peak")["status"] == "skipped"


def test_plan_error_and_figures():
  r = {"status": "ok", "B": 100, "N_H": 2, "remat": False, "stage": 2, "step_s": 2.0,
       "analysis_peak": 1100, "peak_bytes": 1000, "xla_flops": 3.3e9}
  row = acc.plan_error(r, {"status": "ok", "peak": 1200}, on_device=True)
  assert row["plan_error_pct"] == pytest.approx(20.0)
  assert row["device_analysis_error_pct"] == pytest.approx(10.0)
  cpu = acc.plan_error(r, {"status": "ok", "peak": 1100}, on_device=False)
  assert cpu["plan_error_pct"] == 0.0 and "CPU smoke" in cpu["measured_source"]
  acc.step_figures(r, {"status": "ok", "video": 4e6, "audio": 1e6}, peak_tflops=1e-3)
  assert r["model_flops"] == pytest.approx(3 * (100 * 4e6 + 300 * 1e6))
  assert r["pairs_per_s"] == 50 and r["windows_per_s"] == 150
  assert r["mfu"] == pytest.approx(r["model_flops"] / 2.0 / 1e9)
  assert "stage 2" in acc.table({"settings": {"batch": 100}, "paper": [r],
                                  "plan_accuracy": [row]})


def test_settings_flags():
  s = acc.settings(acc.parse(["--smoke", "--frontier_num_hard", "2,5", "--remat_num_hard", "",
                              "--items", "paper,frontier", "--budget_s", "30"]))
  assert s.variant == "micro" and s.frontier_num_hard == (2, 5) and s.remat_num_hard == ()
  assert s.items == ("paper", "frontier") and s.budget_s == 30 and not s.isolate
  d = acc.settings(acc.parse([]))
  assert (d.variant, d.batch, d.num_hard, d.dtype, d.isolate) == ("paper", 2000, 2,
                                                                   "bfloat16", True)
  with pytest.raises(SystemExit):
    acc.settings(acc.parse(["--items", "paper,everything"]))


def test_imports_only_what_the_device_has():
  # The device has jax, flax, optax, orbax, chex, absl, numpy, msgpack; no ml_collections,
  # grain, decoders or landmarks. Block those and import what the bench's children import.
  code = ("import sys\n"
          "for m in ('ml_collections', 'grain', 'av', 'librosa', 'mediapipe', 'cv2',\n"
          "          'tensorflow_datasets', 'array_record'):\n"
          "  sys.modules[m] = None\n"
          "import bench.accelerator\n"
          "from modeformer_jax import plan\n"
          "from modeformer_jax.evaluation import embedding\n"
          "from modeformer_jax.training import train_step\n"
          "print('ok')\n")
  res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


# ------------------------------------------------------------------ the smoke run
def _finite_pos(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_smoke_run_writes_a_complete_report(tmp_path):
  out = tmp_path / "accelerator.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)   # one CPU device, as a plain run has
  # A generous budget: on a loaded 2-core machine the smoke's own 120 s would skip items.
  res = subprocess.run([sys.executable, "-m", "bench.accelerator", "--smoke", "--out",
                        str(out), "--budget_s", "900"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  assert "CPU SMOKE" in res.stdout
  d = json.loads(out.read_text())
  assert d["on_device"] is False and d["skipped"] == []
  assert d["peak"]["status"] == "ok" and _finite_pos(d["peak"]["tflops"])
  assert d["tower_flops"]["status"] == "ok"
  assert [(r["stage"], r["remat"]) for r in d["paper"]] == [(2, False), (1, False)]
  for r in d["paper"]:
    assert r["status"] == "ok" and r["B"] == 16 and len(r["step_times"]) == 3
    for k in ("compile_s", "step_s", "pairs_per_s", "model_flops", "mfu", "xla_flops"):
      assert _finite_pos(r[k]), (k, r)
    # The model-FLOPs formula (3 x forward per window) agrees with XLA's count of the step.
    assert 0.8 < r["xla_over_model"] < 1.25, r
    assert r["peak_bytes"] is None          # a CPU keeps no memory statistics
  easy = {r["stage"]: r["negatives_per_video"] for r in d["paper"]}
  assert easy[2] > 10 * easy[1]             # stage 2 scores the gathered batch
  assert [(p["N_H"], p["remat"]) for p in d["frontier"]] == [(11, False), (11, True)]
  limit = d["memory_limit"]
  for p in d["frontier"]:
    assert p["largest_fit_B"] and p["largest_fit_B"] % 8 == 0
    fit = next(a for a in p["attempts"] if a["status"] == "ok")
    assert fit["analysis_peak"] <= 0.97 * limit and _finite_pos(fit["step_s"])
  ev = d["eval"]
  assert ev["status"] == "ok" and _finite_pos(ev["clips_per_s"]) and _finite_pos(ev["mfu"])
  # Every run has the planner's estimate (3D convs traced natively, as plan.py does) beside
  # what the child compiled (XLA:CPU's own forms): the same order of bytes.
  assert len(d["plan_accuracy"]) == 4
  for row in d["plan_accuracy"]:
    assert abs(row["plan_error_pct"]) < 50 and "CPU smoke" in row["measured_source"]
