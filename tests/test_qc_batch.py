"""qc_batch: input listing, the resumable JSONL, summary.csv, error handling and workers.

A fake analyzer (top level, so spawned workers can unpickle it by importing this module)
derives a result from the file name and never decodes anything, so the inputs are empty
files. Every ``analyze`` call leaves a marker file, which counts calls across processes.
"""
from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import pathlib
import re
import sys
import types

import pytest

from modeformer_jax.errors import FeatureError
from modeformer_jax.qc import qc_batch


class FakeAnalyzer:
  """Offset in ms = the number in the file name; ``corrupt*`` (while empty), ``crash*`` and
  ``die*`` (kills its worker process) fail."""

  def __init__(self, calls_dir: str):
    self.calls_dir = pathlib.Path(calls_dir)
    self.pid = os.getpid()

  def analyze(self, path: str) -> dict:
    p = pathlib.Path(path)
    (self.calls_dir / f"{p.name}.{os.getpid()}.{len(list(self.calls_dir.iterdir()))}").touch()
    if p.name.startswith("corrupt") and not p.stat().st_size:  # writing bytes "fixes" it
      raise FeatureError(path, "corrupt", "cannot decode")
    if p.name.startswith("crash"):
      raise RuntimeError("boom")
    if p.name.startswith("die"):
      if multiprocessing.parent_process() is not None:
        os._exit(3)  # a decoder segfault, as far as the pool can tell
      raise RuntimeError("would die")
    m = re.search(r"(\d+)", p.stem)
    offset = float(m.group(1)) if m else 0.0
    return {
        "name": p.name, "path": path, "duration_s": 10.0,
        "global": {"offset_ms": offset, "uncertainty_ms": 4.04, "offset_frames": offset / 40,
                   "confidence": 0.91234, "measurable_segments": 2, "num_segments": 3},
        "drift": {"ms_per_min": float("nan"), "verdict": "none"},
        "tolerances": {"EBU R37": {"verdict": "pass" if offset <= 40 else "fail"},
                       "ITU-R BT.1359 detectability": {"verdict": "unknown"},
                       "ITU-R BT.1359 acceptability": None,
                       "ATSC IS-191": {"verdict": "pass"}},
        "timing": {"wall_s": 1.0, "realtime_factor": 12.3456},
        "worker_pid": os.getpid(),
    }


def failing_factory() -> FakeAnalyzer:
  raise OSError("no model here")


def calls(calls_dir: pathlib.Path) -> dict[str, int]:
  counts: dict[str, int] = {}
  for f in calls_dir.iterdir():
    name = f.name.rsplit(".", 2)[0]
    counts[name] = counts.get(name, 0) + 1
  return counts


@pytest.fixture
def setup(tmp_path):
  videos = tmp_path / "videos"
  videos.mkdir()
  names = ["a_20.mp4", "b_80.mov", "corrupt_1.mp4", "c_0.mkv", "crash_2.mp4", "d_40.mp4"]
  for n in names:
    (videos / n).touch()
  calls_dir = tmp_path / "calls"
  calls_dir.mkdir()
  inputs = [videos / n for n in names]
  return inputs, tmp_path / "out", functools.partial(FakeAnalyzer, str(calls_dir)), calls_dir


def rows(out: pathlib.Path) -> list[dict]:
  with open(out / "summary.csv", newline="") as f:
    return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------
# list_inputs.
# ----------------------------------------------------------------------------------------

def test_list_inputs_dirs_lists_and_files(tmp_path):
  d = tmp_path / "d"
  (d / "sub").mkdir(parents=True)
  (d / ".hidden").mkdir()
  for rel in ["b.MP4", "a.mov", "sub/c.mxf", "notes.txt", ".x.mp4", ".hidden/y.mp4",
              "z.wav"]:
    (d / rel).touch()
  assert qc_batch.list_inputs([str(d)]) == [d / "a.mov", d / "b.MP4", d / "sub" / "c.mxf"]

  other = tmp_path / "other"
  other.mkdir()
  (other / "e.ts").touch()
  (other / "f.dat").touch()
  lst = other / "list.lst"
  # Relative entries resolve against the list's folder; '..' and duplicates are fine.
  lst.write_text("# my files\n\ne.ts\n  f.dat  \n../d/b.MP4\n" + str(d / "sub") + "\n")
  got = qc_batch.list_inputs([str(d / "b.MP4"), str(lst), str(d)])
  assert got == [d / "b.MP4", other / "e.ts", other / "f.dat", d / "sub" / "c.mxf",
                 d / "a.mov"]
  assert all(p.is_absolute() for p in got)

  # A symlink to an input is the same input.
  (tmp_path / "link.mp4").symlink_to(d / "a.mov")
  assert qc_batch.list_inputs([str(d / "a.mov"), str(tmp_path / "link.mp4")]) == [d / "a.mov"]


def test_list_inputs_missing_paths_are_named(tmp_path):
  lst = tmp_path / "l.txt"
  lst.write_text("ok.mp4\ngone.mp4\n")
  (tmp_path / "ok.mp4").touch()
  with pytest.raises(FileNotFoundError) as e:
    qc_batch.list_inputs([str(lst), str(tmp_path / "nope")])
  msg = str(e.value)
  assert "gone.mp4" in msg and f"{lst}:2" in msg and "nope" in msg and "ok.mp4" not in msg


# ----------------------------------------------------------------------------------------
# One batch: errors, JSONL, CSV.
# ----------------------------------------------------------------------------------------

def test_batch_continues_past_errors_and_writes_jsonl_and_csv(setup, capsys):
  inputs, out, make, calls_dir = setup
  s = qc_batch.run_batch(inputs + [inputs[0]], out, make, report=False, progress=False)
  assert s["total"] == 6 and s["done_now"] == 6 and s["skipped_existing"] == 0
  assert s["ok"] == 4 and s["errors"] == {"corrupt": 1, "internal": 1}
  assert s["index"] is None and s["jsonl"] == str(out / "results.jsonl")
  assert calls(calls_dir) == {p.name: 1 for p in inputs}
  err = capsys.readouterr().err
  assert "corrupt_1.mp4: corrupt: cannot decode" in err
  assert "crash_2.mp4: internal: RuntimeError: boom" in err

  lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
  assert [pathlib.Path(e["path"]) for e in lines] == [p.resolve() for p in inputs]
  by_name = {e["name"]: e for e in lines}
  assert by_name["corrupt_1.mp4"] == {"name": "corrupt_1.mp4", "path": str(inputs[2].resolve()),
                                      "error": "cannot decode", "kind": "corrupt"}
  assert by_name["crash_2.mp4"]["kind"] == "internal"
  assert by_name["b_80.mov"]["global"]["offset_ms"] == 80.0
  assert by_name["b_80.mov"]["drift"]["ms_per_min"] is None  # NaN is not JSON
  assert qc_batch.load_results(out) == {e["path"]: e for e in lines}

  table = rows(out)
  assert [r["name"] for r in table] == [p.name for p in inputs]
  assert list(table[0]) == [
      "name", "path", "status", "duration_s", "offset_ms", "uncertainty_ms", "offset_frames",
      "confidence", "drift_ms_per_min", "drift_verdict", "EBU R37",
      "ITU-R BT.1359 detectability", "ITU-R BT.1359 acceptability", "ATSC IS-191",
      "measurable_segments", "num_segments", "realtime_factor", "error_kind", "error"]
  b = table[1]
  assert (b["status"], b["offset_ms"], b["uncertainty_ms"], b["offset_frames"],
          b["confidence"], b["duration_s"], b["realtime_factor"]) == (
              "ok", "80.0", "4.0", "2.00", "0.912", "10.00", "12.35")
  assert (b["drift_ms_per_min"], b["drift_verdict"], b["EBU R37"],
          b["ITU-R BT.1359 detectability"], b["ITU-R BT.1359 acceptability"],
          b["ATSC IS-191"], b["measurable_segments"], b["num_segments"]) == (
              "", "none", "fail", "unknown", "", "pass", "2", "3")
  assert b["error_kind"] == "" and b["error"] == ""
  c = table[4]
  assert (c["status"], c["error_kind"], c["error"], c["offset_ms"], c["EBU R37"]) == (
      "error", "internal", "RuntimeError: boom", "", "")


# ----------------------------------------------------------------------------------------
# Resume.
# ----------------------------------------------------------------------------------------

def test_resume_skips_done_files_and_retries_errors_on_request(setup):
  inputs, out, make, calls_dir = setup
  qc_batch.run_batch(inputs[:3], out, make, report=False, progress=False)
  s = qc_batch.run_batch(inputs, out, make, report=False, progress=False)
  assert (s["done_now"], s["skipped_existing"], s["total"]) == (3, 3, 6)
  assert calls(calls_dir) == {p.name: 1 for p in inputs}
  assert len(rows(out)) == 6

  # Nothing to do: no analyzer is built, and summary.csv is still rewritten.
  (out / "summary.csv").unlink()
  s = qc_batch.run_batch(inputs, out, failing_factory, report=False, progress=False)
  assert (s["done_now"], s["skipped_existing"], s["ok"]) == (0, 6, 4)
  assert len(rows(out)) == 6

  # Errors outside this run's inputs are left alone.
  s = qc_batch.run_batch(inputs[:2], out, make, retry_errors=True, report=False,
                         progress=False)
  assert s["done_now"] == 0

  # Both error files again; the newest line wins (the corrupt file is fixed now).
  inputs[2].write_bytes(b"x")
  s = qc_batch.run_batch(inputs, out, make, retry_errors=True, report=False, progress=False)
  assert s["done_now"] == 2 and s["skipped_existing"] == 4
  assert s["ok"] == 5 and s["errors"] == {"internal": 1}
  assert calls(calls_dir)["corrupt_1.mp4"] == 2 and calls(calls_dir)["crash_2.mp4"] == 2
  assert qc_batch.load_results(out)[str(inputs[2].resolve())]["global"]["offset_ms"] == 1.0
  assert len((out / "results.jsonl").read_text().splitlines()) == 8
  assert rows(out)[2]["status"] == "ok"

  # resume=False analyses everything again.
  s = qc_batch.run_batch(inputs, out, make, resume=False, report=False, progress=False)
  assert s["done_now"] == 6 and s["skipped_existing"] == 0


def test_truncated_last_line_is_ignored_and_repaired(setup, capsys):
  inputs, out, make, calls_dir = setup
  qc_batch.run_batch(inputs[:2], out, make, report=False, progress=False)
  jsonl = out / "results.jsonl"
  text = jsonl.read_text()
  # Killed mid-write of the second line.
  jsonl.write_text(text[:len(text) - 40])
  assert list(qc_batch.load_results(out)) == [str(inputs[0].resolve())]
  s = qc_batch.run_batch(inputs[:3], out, make, report=False, progress=False)
  assert (s["done_now"], s["skipped_existing"]) == (2, 1)
  assert "torn last line" in capsys.readouterr().err
  # The torn bytes are gone, so the appended lines parse.
  lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
  assert [e["name"] for e in lines] == ["a_20.mp4", "b_80.mov", "corrupt_1.mp4"]

  # A complete last line that only lacks its newline is kept.
  jsonl.write_text(jsonl.read_text().rstrip("\n"))
  s = qc_batch.run_batch(inputs[:4], out, make, report=False, progress=False)
  assert (s["done_now"], s["skipped_existing"]) == (1, 3)
  assert len([json.loads(x) for x in jsonl.read_text().splitlines()]) == 4


# ----------------------------------------------------------------------------------------
# Workers.
# ----------------------------------------------------------------------------------------

def _comparable(out: pathlib.Path) -> dict:
  return {k: {f: v for f, v in e.items() if f != "worker_pid"}
          for k, e in qc_batch.load_results(out).items()}


def test_two_workers_match_one_and_survive_a_dying_worker(setup, tmp_path):
  inputs, out, make, _ = setup
  qc_batch.run_batch(inputs, out, make, report=False, progress=False)
  die = inputs[0].with_name("die_3.mp4")
  die.touch()
  out2, calls2 = tmp_path / "out2", tmp_path / "calls2"
  calls2.mkdir()
  s = qc_batch.run_batch(inputs + [die], out2, functools.partial(FakeAnalyzer, str(calls2)),
                         workers=2, report=False, progress=False)
  assert s["done_now"] == 7 and s["ok"] == 4
  assert s["errors"] == {"corrupt": 1, "internal": 2}
  latest = _comparable(out2)
  died = latest.pop(str(die.resolve()))
  assert died["kind"] == "internal" and died["error"].startswith("WorkerDied:")
  assert latest == _comparable(out)
  assert rows(out2)[:6] == rows(out)
  lines = (out2 / "results.jsonl").read_text().splitlines()
  assert len(lines) == 7  # one line per file, even for files re-run after the crash
  pids = {e["worker_pid"] for e in qc_batch.load_results(out2).values() if "worker_pid" in e}
  assert pids and os.getpid() not in pids
  # A file in flight when the worker died is re-run once; the dying one also ran alone.
  counts = calls(calls2)
  assert set(counts) == {p.name for p in inputs + [die]}
  assert all(1 <= n <= 2 for n in counts.values())


def test_worker_setup_errors(setup):
  inputs, out, make, _ = setup
  with pytest.raises(RuntimeError, match="no model here"):
    qc_batch.run_batch(inputs, out, failing_factory, workers=2, report=False, progress=False)
  with pytest.raises(TypeError, match="picklable"):
    qc_batch.run_batch(inputs, out, lambda: make(), workers=2, report=False, progress=False)


# ----------------------------------------------------------------------------------------
# Reports.
# ----------------------------------------------------------------------------------------

def test_report_names_hash_colliding_stems(tmp_path):
  a, b, c = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "Clip.mov", tmp_path / "one.mp4"
  names = qc_batch._report_names([a, b, c])
  assert names[str(c.resolve())] == "one.html"
  na, nb = names[str(a.resolve())], names[str(b.resolve())]
  assert re.fullmatch(r"clip-[0-9a-f]{8}\.html", na)
  assert re.fullmatch(r"Clip-[0-9a-f]{8}\.html", nb) and na.lower() != nb.lower()


def test_reports_through_the_report_module(setup, monkeypatch):
  """The wiring, with a stand-in ``report`` module that records its calls."""
  import modeformer_jax

  inputs, out, make, _ = setup
  written: list[str] = []
  index_calls: list[tuple] = []

  def write_file_report(result, path):
    written.append(result["name"])
    pathlib.Path(path).write_text("<html></html>")
    return pathlib.Path(path)

  def write_index(results, path, links=None):
    index_calls.append(([r["name"] for r in results], dict(links)))
    pathlib.Path(path).write_text("<html></html>")
    return pathlib.Path(path)

  fake = types.SimpleNamespace(write_file_report=write_file_report, write_index=write_index)
  monkeypatch.setitem(sys.modules, "modeformer_jax.qc.report", fake)
  monkeypatch.setattr(modeformer_jax.qc, "report", fake, raising=False)

  other = inputs[0].parent / "sub"
  other.mkdir()
  (other / "a_20.mp4").touch()  # same stem as inputs[0]
  all_inputs = inputs + [other / "a_20.mp4"]
  s = qc_batch.run_batch(all_inputs, out, make, progress=False)
  assert s["index"] == str(out / "index.html")
  assert sorted(written) == sorted(["a_20.mp4", "b_80.mov", "c_0.mkv", "d_40.mp4",
                                    "a_20.mp4"])
  names, links = index_calls[-1]
  assert names == [p.name for p in all_inputs]  # errors are listed too
  assert set(links) == {str(p.resolve()) for p in all_inputs
                        if not p.name.startswith(("corrupt", "crash"))}
  for key, link in links.items():
    assert link.startswith("reports/") and (out / link).is_file()
  assert links[str(inputs[1].resolve())] == "reports/b_80.html"
  assert links[str(inputs[0].resolve())] != links[str((other / "a_20.mp4").resolve())]

  # A rerun rewrites the index but not the reports it already has.
  written.clear()
  (out / "reports" / "b_80.html").unlink()
  qc_batch.run_batch(all_inputs, out, make, progress=False)
  assert written == ["b_80.mov"] and len(index_calls) == 2


def test_reports_with_the_real_module(setup):
  pytest.importorskip("modeformer_jax.qc.report")
  inputs, out, make, _ = setup
  s = qc_batch.run_batch(inputs, out, make, progress=False)
  assert pathlib.Path(s["index"]).is_file()
  assert (out / "reports" / "a_20.html").is_file()
  assert not (out / "reports" / "corrupt_1.html").exists()
  assert 'href="reports/a_20.html"' in (out / "index.html").read_text()
