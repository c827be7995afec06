"""bench.frontier's search logic without a compiler: the bracket from libtpu's memory
checks, the cached bracket read back, and libtpu's log lines the checks rely on."""
import json

import numpy as np
import pytest

from bench import frontier


def _fake_checks(limit: int, per_video: float, budget: int, calls: list):
  """A compiler that accepts v <= limit and, when refusing, states its usage."""
  def compile_point(target, stage, v, num_hard, remat, log=None, check_only=False):
    calls.append(v)
    if v <= limit:
      return {"memory_check": "passed", "heap": 1, "per_device": v}
    return {"over_compiler": "Ran out of memory", "peak": int(budget + (v - limit) * per_video),
            "per_device": v}
  return compile_point


@pytest.mark.parametrize("limit,guess", [(800, 800), (800, 400), (800, 1200), (1000, 808),
                                         (8, 40)])
def test_bracket_from_memory_checks(monkeypatch, limit, guess):
  calls = []
  budget = 10**9
  coef = np.array([1e8, 1e6, 1e5])        # slope at N_H=2: 1.3e6 bytes per video
  monkeypatch.setattr(frontier, "compile_point", _fake_checks(limit, 1.3e6, budget, calls))
  r = frontier._bracket_checks("v5e-4", 2, guess, coef, budget, False, print)
  # The bracket holds the true limit and is as tight as the search's tolerance (~3%).
  assert r["status"] == "confirmed" and r["largest"] <= limit < r["refused_at"], (r, calls)
  assert r["refused_at"] - r["largest"] <= max(frontier.GRAIN, r["largest"] // 32 // 8 * 8)
  assert len(set(calls)) == len(calls) <= 12       # no point checked twice
  if guess == limit:
    assert len(calls) <= 4


def test_none_fits(monkeypatch):
  calls = []
  monkeypatch.setattr(frontier, "compile_point", _fake_checks(0, 1e6, 10**9, calls))
  r = frontier._bracket_checks("v5e-4", 2, 64, np.array([1e8, 1e6, 1e5]), 10**9, False, print)
  assert r["status"] == "none fits"


def test_cached_bracket_is_read_back(monkeypatch, tmp_path):
  monkeypatch.setattr(frontier, "CACHE", tmp_path)
  rows = {1280: {"memory_check": "passed", "heap": 5, "compiler_remat": "16G => 14G"},
          1296: {"over_compiler": "Ran out of memory", "peak": 17 * 2**30},
          32: {"peak": 2**30, "temp": 2**29, "budget": 16 * 2**30}}
  for v, r in rows.items():
    suffix = "_check" if "memory_check" in r or "over_compiler" in r else ""
    (tmp_path / f"v5e-4_s2_v{v}_h2_r0_n4{suffix}.json").write_text(
        json.dumps(dict(r, per_device=v, N_H=2)))
  got = frontier.confirmed("v5e-4", 2)
  assert got["status"] == "confirmed" and got["largest"] == 1280 and got["refused_at"] == 1296
  assert got["by"] == "libtpu memory checks" and got["compiler_remat"] == "16G => 14G"
  # A gap wider than the search's tolerance is not a bracket.
  (tmp_path / "v5e-4_s2_v1296_h2_r0_n4_check.json").unlink()
  (tmp_path / "v5e-4_s2_v1400_h2_r0_n4_check.json").write_text(
      json.dumps({"over_compiler": "x", "per_device": 1400, "N_H": 2}))
  assert frontier.confirmed("v5e-4", 2) == {"largest_compiled_fit": 1280}


def test_libtpu_log_markers():
  """The lines _memory_check reads, as libtpu 0.0.42.1 writes them (copied from its log)."""
  accepted = (
      "I1207 04:17:52.894064   21818 deepsea_compiler_hlo_passes.cc:5728] XLA::TPU "
      "rematerialization hbm reduction:  16.01G => 14.30G\n"
      "I1207 04:17:57.381153   21854 heap_simulator.h:1169] Primary algorithm failed or "
      "exceeded limit (14415298560 vs 13398220800). Running fallback algorithm via lazy replay.\n"
      "I1207 04:17:57.408848   21854 heap_simulator.h:1190] Fallback algorithm finished with "
      "size: 14437892608\n"
      "W1207 04:17:59.347503   21860 llo_module.h:502] The log function has NOT been set for "
      "the LloModule.\n")
  m = frontier._HEAP.search(accepted)
  assert int(m.group(1)) == 14437892608
  assert frontier._CODEGEN.search(accepted[m.end():])
  assert frontier._REMAT.search(accepted).groups() == ("16.01G", "14.30G")
  refused = ("I1207 02:29:30.143193    4984 heap_simulator.h:1169] Primary algorithm failed "
             "or exceeded limit (168664977408 vs 9148306944). Running fallback algorithm via "
             "lazy replay.\nE1207 02:29:30.846201    4984 deepsea_compiler_base.cc:3781] "
             "XLA:TPU compile permanent error. Ran out of memory in memory space hbm.\n")
  assert frontier._HEAP.search(refused) is None
