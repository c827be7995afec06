"""The one loop over files of ``detect`` (plain and ``--qc``): folders and file lists in,
JSONL + CSV (+ HTML reports) out; plain ``detect`` renders each answer as it comes
(``run_batch(on_entry=...)``) instead of writing reports.

``list_inputs`` turns folders, ``.txt``/``.lst`` file lists and video paths into one
ordered, de-duplicated list; ``run_batch`` analyses each file with an analyzer (anything
with ``analyze(path) -> dict``, e.g. ``analysis.Analyzer``) and writes to ``out_dir``:

  results.jsonl   one JSON line per file (a result, or ``{"name", "path", "error",
                  "kind"}``), appended as each file finishes, so a killed run loses at most
                  the files in flight. A rerun skips files that already have a line; when a
                  file has several lines (a retry), the newest wins.
  summary.csv     one row per input file, rebuilt from results.jsonl at the end of a run.
  reports/        one HTML report per analysed file, and ``index.html`` linking them
                  (``modeformer_jax.qc.report``; ``report=False`` skips both).

One bad file never ends the batch: an ``errors.FeatureError`` becomes an error entry with
its kind, any other exception one of kind ``"internal"``, and a worker process that dies
(a crashing decoder) is found by re-running the files it may have held one at a time.

The parent process imports nothing heavy: the analyzer, and with it JAX and the model,
only exist inside ``make_analyzer()``, which runs in the workers (or in-process for
``workers=1``, and only when there is something to analyse).
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import hashlib
import json
import math
import multiprocessing
import multiprocessing.reduction
import os
import pathlib
import sys
import time
import traceback
import urllib.parse
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Sequence

from modeformer_jax.errors import FeatureError
from modeformer_jax.jsonio import jsonable

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".mpg", ".mpeg", ".webm",
                              ".m4v", ".ts", ".mxf"})
LIST_EXTENSIONS = frozenset({".txt", ".lst"})

RESULTS_NAME = "results.jsonl"
SUMMARY_NAME = "summary.csv"
INDEX_NAME = "index.html"
REPORTS_DIR = "reports"

INTERNAL_KIND = "internal"
# Standards every summary.csv has a column for, in this order; others found in results
# are appended after them.
TOLERANCE_STANDARDS = ("EBU R37", "ITU-R BT.1359 detectability",
                       "ITU-R BT.1359 acceptability", "ATSC IS-191")

# (column, where in the result, decimals or None for text / integers).
_LEADING_COLUMNS = (
    ("duration_s", ("duration_s",), 2),
    ("offset_ms", ("global", "offset_ms"), 1),
    ("uncertainty_ms", ("global", "uncertainty_ms"), 1),
    ("offset_frames", ("global", "offset_frames"), 2),
    ("confidence", ("global", "confidence"), 3),
    ("drift_ms_per_min", ("drift", "ms_per_min"), 2),
    ("drift_verdict", ("drift", "verdict"), None),
)
_TRAILING_COLUMNS = (
    ("measurable_segments", ("global", "measurable_segments"), 0),
    ("num_segments", ("global", "num_segments"), 0),
    ("realtime_factor", ("timing", "realtime_factor"), 2),
)


def _log(msg: str) -> None:
  # tqdm.write keeps an active progress bar intact below the message.
  from tqdm import tqdm
  tqdm.write(msg, file=sys.stderr)


# ----------------------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------------------

def _walk_videos(root: pathlib.Path) -> list[pathlib.Path]:
  """Video files under ``root``, recursively, sorted by relative path; hidden entries skipped."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    # Pruning in place stops os.walk from descending into hidden folders (.git, .cache).
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for name in filenames:
      if not name.startswith(".") and pathlib.Path(name).suffix.lower() in VIDEO_EXTENSIONS:
        found.append(pathlib.Path(dirpath, name))
  return sorted(found, key=lambda p: p.relative_to(root).parts)


def _read_list(list_path: pathlib.Path) -> list[tuple[pathlib.Path, str]]:
  """``(path, where)`` per entry of a file list; ``where`` names the line for errors."""
  entries = []
  base = list_path.parent
  for lineno, line in enumerate(list_path.read_text().splitlines(), start=1):
    line = line.strip()
    # Only whole-line comments: '#' is legal inside file names.
    if not line or line.startswith("#"):
      continue
    path = pathlib.Path(line).expanduser()
    entries.append((path if path.is_absolute() else base / path, f"{list_path}:{lineno}"))
  return entries


def list_inputs(sources: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
  """The video files named by ``sources``, in order, each once (absolute paths).

  Each source is a directory (its videos by ``VIDEO_EXTENSIONS``, any case, recursively,
  sorted, hidden files and folders skipped), a ``.txt``/``.lst`` list (one path per line,
  relative to the list's folder; blank lines and ``#`` lines skipped; entries may be
  folders or lists too) or a file, taken as a video whatever its extension. Duplicates
  (same resolved path) keep their first position.

  Raises:
    FileNotFoundError: naming every source or list entry that does not exist.
  """
  out: list[pathlib.Path] = []
  seen: set[pathlib.Path] = set()
  missing: list[str] = []
  open_lists: set[pathlib.Path] = set()

  def add(path: pathlib.Path, where: str | None) -> None:
    if not path.exists():
      missing.append(f"{path} (listed at {where})" if where else str(path))
      return
    path = pathlib.Path(os.path.abspath(path))
    if path.is_dir():
      candidates = _walk_videos(path)
    elif path.suffix.lower() in LIST_EXTENSIONS:
      resolved = path.resolve()
      if resolved in open_lists:  # a list that includes itself, directly or not
        raise ValueError(f"file list {path} includes itself")
      open_lists.add(resolved)
      for entry, entry_where in _read_list(path):
        add(entry, entry_where)
      open_lists.discard(resolved)
      return
    else:
      candidates = [path]
    for c in candidates:
      key = c.resolve()
      if key not in seen:
        seen.add(key)
        out.append(c)

  for source in sources:
    add(pathlib.Path(source).expanduser(), None)
  if missing:
    raise FileNotFoundError(f"{len(missing)} input(s) not found: " + "; ".join(missing))
  return out


# ----------------------------------------------------------------------------------------
# results.jsonl.
# ----------------------------------------------------------------------------------------

def input_key(path: str | os.PathLike) -> str:
  """The identity of an input in results.jsonl: its resolved path."""
  return str(pathlib.Path(path).resolve())


def _read_jsonl(path: pathlib.Path) -> tuple[dict[str, dict], int, bool]:
  """``(latest entry per path, bad lines, whether the last line is a torn write)``."""
  latest: dict[str, dict] = {}
  bad = 0
  torn = False
  if not path.is_file():
    return latest, bad, torn
  data = path.read_bytes()
  lines = data.split(b"\n")
  for i, raw in enumerate(lines):
    if not raw.strip():
      continue
    try:
      entry = json.loads(raw)
      if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise ValueError("not an entry")
    except ValueError:
      if i == len(lines) - 1:
        # No newline after it: a run killed mid-write. The file was never analysed as far
        # as the JSONL knows, so it is simply done again.
        torn = True
      else:
        bad += 1
      continue
    latest[entry["path"]] = entry
  return latest, bad, torn


def load_results(out_dir: str | os.PathLike) -> dict[str, dict]:
  """The newest entry of each file in ``out_dir/results.jsonl``, keyed by resolved path.

  Unreadable lines (a torn final line from a killed run, hand-edits) are skipped.
  """
  return _read_jsonl(pathlib.Path(out_dir) / RESULTS_NAME)[0]


def _repair_tail(path: pathlib.Path) -> None:
  """Make ``path`` end at a line boundary so appended lines are never glued to a torn one."""
  if not path.is_file() or path.stat().st_size == 0:
    return
  data = path.read_bytes()
  if data.endswith(b"\n"):
    return
  cut = data.rfind(b"\n") + 1
  tail = data[cut:]
  try:
    json.loads(tail)
  except ValueError:
    _log(f"qc_batch: dropping a torn last line of {path} ({len(tail)} bytes)")
    with open(path, "r+b") as f:
      f.truncate(cut)
    return
  with open(path, "ab") as f:  # a complete entry, only its newline is missing
    f.write(b"\n")


def _is_error(entry: dict | None) -> bool:
  return entry is not None and "error" in entry


# ----------------------------------------------------------------------------------------
# Analysing one file (runs in the workers, or in-process).
# ----------------------------------------------------------------------------------------

def _error_entry(path: pathlib.Path, kind: str, reason: str) -> dict:
  return {"name": path.name, "path": input_key(path), "error": reason, "kind": kind}


def _analyze_entry(analyzer: Any, path_str: str) -> dict:
  """The results.jsonl entry of one file; never raises for a bad file or analyzer bug."""
  path = pathlib.Path(path_str)
  try:
    result = analyzer.analyze(path_str)
    if not isinstance(result, dict):
      raise TypeError(f"analyze returned {type(result).__name__}, expected dict")
    entry = jsonable(result)
  except Exception as e:  # noqa: BLE001 -- one odd file must not end a long batch
    if isinstance(e, FeatureError):
      return _error_entry(path, e.kind, e.reason)
    return _error_entry(path, INTERNAL_KIND, f"{type(e).__name__}: {e}")
  if not entry.get("name"):
    entry["name"] = path.name
  # Resume and "newest wins" match lines by this key, whatever the analyzer wrote there.
  entry["path"] = input_key(path)
  return entry


# One analyzer per worker process, made once by the pool's initializer.
_WORKER_ANALYZER: Any = None
_WORKER_INIT_ERROR: str | None = None


def _init_worker(make_analyzer: Callable[[], Any]) -> None:
  global _WORKER_ANALYZER, _WORKER_INIT_ERROR
  try:
    _WORKER_ANALYZER = make_analyzer()
  except BaseException:  # noqa: BLE001 -- reported by the first task, see _worker_task
    # An initializer that raises makes the pool unusable without saying why; keeping the
    # traceback lets the parent stop the batch with the real cause.
    _WORKER_INIT_ERROR = traceback.format_exc()


class _WorkerInitError(RuntimeError):
  pass


def _worker_task(path_str: str) -> dict:
  if _WORKER_INIT_ERROR is not None:
    raise _WorkerInitError(_WORKER_INIT_ERROR)
  return _analyze_entry(_WORKER_ANALYZER, path_str)


def _crashed_entry(path: pathlib.Path) -> dict:
  return _error_entry(path, INTERNAL_KIND,
                      "WorkerDied: the worker process exited while analysing this file "
                      "(a crash in native code, or killed for memory)")


def _run_pool(todo: Sequence[pathlib.Path], make_analyzer: Callable[[], Any],
              workers: int) -> Iterable[dict]:
  """Entries of ``todo`` in completion order, from ``workers`` spawned processes.

  Only ``workers`` files are in flight at a time, so when a process dies the suspects are
  few: they are re-run one per fresh pool, and the one that kills it alone gets an
  ``internal`` error entry. Each restart re-runs ``make_analyzer`` in the new processes.
  """
  ctx = multiprocessing.get_context("spawn")
  queue = collections.deque(todo)
  suspects: collections.deque = collections.deque()
  while queue or suspects:
    solo = bool(suspects)
    source = suspects if solo else queue
    width = 1 if solo else min(workers, len(queue))
    pool = concurrent.futures.ProcessPoolExecutor(
        width, mp_context=ctx, initializer=_init_worker, initargs=(make_analyzer,))
    in_flight: dict[concurrent.futures.Future, pathlib.Path] = {}
    broken: list[pathlib.Path] = []
    try:
      while (source or in_flight) and not broken:
        while source and len(in_flight) < width:
          path = source.popleft()
          in_flight[pool.submit(_worker_task, str(path))] = path
        done, _ = concurrent.futures.wait(in_flight,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        for fut in done:
          path = in_flight.pop(fut)
          try:
            entry = fut.result()
          except BrokenProcessPool:
            broken.append(path)
            continue
          except _WorkerInitError as e:
            raise RuntimeError(f"make_analyzer() failed in a worker process:\n{e}") from None
          yield entry
      if broken:
        # The pool is gone: everything still in flight was lost with it.
        broken += in_flight.values()
        in_flight.clear()
        if solo or len(broken) == 1:
          yield _crashed_entry(broken.pop(0))
        suspects.extend(broken)
    finally:
      pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------
# summary.csv and reports.
# ----------------------------------------------------------------------------------------

def _get(entry: dict, where: tuple[str, ...]) -> Any:
  value: Any = entry
  for k in where:
    if not isinstance(value, dict):
      return None
    value = value.get(k)
  return value


def _fmt(value: Any, decimals: int | None) -> str:
  if value is None:
    return ""
  if isinstance(value, bool) or decimals is None or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, float) and not math.isfinite(value):
    return ""
  if decimals == 0:
    return str(int(round(value)))
  return f"{value:.{decimals}f}"


def _tolerance_names(entries: Iterable[dict]) -> list[str]:
  names = list(TOLERANCE_STANDARDS)
  for e in entries:
    tol = e.get("tolerances")
    if isinstance(tol, dict):
      names += [n for n in tol if n not in names]
  return names


def write_summary_csv(entries: Sequence[dict], path: str | os.PathLike) -> pathlib.Path:
  """One row per entry (results and errors), in the given order; missing values empty."""
  path = pathlib.Path(path)
  standards = _tolerance_names(entries)
  header = (["name", "path", "status"] + [c for c, _, _ in _LEADING_COLUMNS] + standards
            + [c for c, _, _ in _TRAILING_COLUMNS] + ["error_kind", "error"])
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for e in entries:
      err = _is_error(e)
      row = [e.get("name") or pathlib.Path(e["path"]).name, e["path"],
             "error" if err else "ok"]
      row += [_fmt(_get(e, where), d) for _, where, d in _LEADING_COLUMNS]
      row += [_fmt(_get(e, ("tolerances", s, "verdict")), None) for s in standards]
      row += [_fmt(_get(e, where), d) for _, where, d in _TRAILING_COLUMNS]
      row += [e.get("kind", "") if err else "", e.get("error", "") if err else ""]
      w.writerow(row)
  # Atomic: a reader (or a killed run) never sees half a summary.
  os.replace(tmp, path)
  return path


def _report_names(paths: Sequence[pathlib.Path]) -> dict[str, str]:
  """HTML file name per input key: ``<stem>.html``, plus a path hash where stems collide.

  Decided over all inputs, not just the analysed ones, so a file keeps its report name
  across reruns. Stems are compared case-insensitively for case-insensitive filesystems.
  """
  counts = collections.Counter(p.stem.lower() for p in paths)
  names = {}
  for p in paths:
    key = input_key(p)
    if counts[p.stem.lower()] > 1:
      names[key] = f"{p.stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.html"
    else:
      names[key] = f"{p.stem}.html"
  return names


def _write_reports(inputs: Sequence[pathlib.Path], entries: Sequence[dict],
                   out: pathlib.Path, fresh: set[str]) -> tuple[pathlib.Path | None, int]:
  """Per-file reports (new results, or ones without a report yet) and the index.

  Returns ``(index path or None, number of failures)``; failures are printed, not raised,
  since results.jsonl and summary.csv already hold everything.
  """
  from modeformer_jax.qc import report as report_lib

  names = _report_names(inputs)
  reports_dir = out / REPORTS_DIR
  reports_dir.mkdir(exist_ok=True)
  links: dict[str, str] = {}
  failures = 0
  for e in entries:
    if _is_error(e):
      continue
    name = names[e["path"]]
    target = reports_dir / name
    try:
      if e["path"] in fresh or not target.is_file():
        report_lib.write_file_report(e, target)
    except Exception as exc:  # noqa: BLE001 -- a report must not cost the batch its index
      failures += 1
      _log(f"qc_batch: report for {e['path']} failed: {type(exc).__name__}: {exc}")
      continue
    links[e["path"]] = f"{REPORTS_DIR}/{urllib.parse.quote(name)}"
  try:
    index = report_lib.write_index(list(entries), out / INDEX_NAME, links=links)
  except Exception as exc:  # noqa: BLE001
    _log(f"qc_batch: index.html failed: {type(exc).__name__}: {exc}")
    return None, failures + 1
  return pathlib.Path(index), failures


# ----------------------------------------------------------------------------------------
# The batch.
# ----------------------------------------------------------------------------------------

def run_batch(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
              make_analyzer: Callable[[], Any], workers: int = 1, resume: bool = True,
              retry_errors: bool = False, report: bool = True,
              progress: bool = True,
              on_entry: Callable[[dict], None] | None = None) -> dict:
  """Analyses ``inputs`` into ``out_dir`` (see the module docstring for the files).

  Args:
    inputs: video paths, e.g. from ``list_inputs``; duplicates are analysed once.
    out_dir: created if missing; results.jsonl there is appended to, never rewritten.
    make_analyzer: builds an object with ``analyze(path: str) -> dict``. Called once per
      worker process, and only if some file needs analysing. For ``workers > 1`` it must
      be picklable: a top-level function, or ``functools.partial`` of one with picklable
      arguments (``functools.partial(analysis.Analyzer, model_dir)``); not a lambda or a
      closure. Workers are spawned and inherit the environment, so e.g.
      ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` set beforehand lets several share a GPU.
    workers: processes; 1 analyses in this process.
    resume: skip files that already have a line in results.jsonl. With ``False`` every
      file is analysed again and the new lines supersede the old ones.
    retry_errors: when resuming, analyse files whose latest line is an error again.
    report: write ``reports/*.html`` and ``index.html`` (needs ``modeformer_jax.qc.report``).
    progress: show a tqdm bar (files/s, ETA) on stderr.
    on_entry: called with each entry analysed now, as soon as it is written (a front
      end's renderer: plain ``detect`` prints its answer and writes its plot there).

  Returns:
    ``{"total", "done_now", "skipped_existing", "ok", "errors": {kind: count},
    "report_failures", "jsonl", "csv", "index", "elapsed_s"}``; ``ok`` and ``errors``
    count the latest entry of every input, not just this run's.

  Raises:
    RuntimeError: ``make_analyzer()`` failed in a worker (a setup error, not a bad file).
  """
  from tqdm import tqdm

  t0 = time.perf_counter()
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  jsonl = out / RESULTS_NAME

  paths: list[pathlib.Path] = []
  seen: set[str] = set()
  for p in inputs:
    key = input_key(p)
    if key not in seen:
      seen.add(key)
      paths.append(pathlib.Path(os.path.abspath(p)))

  _repair_tail(jsonl)
  latest, bad, _ = _read_jsonl(jsonl)
  if bad:
    _log(f"qc_batch: skipped {bad} unreadable line(s) in {jsonl}")

  def needs_run(p: pathlib.Path) -> bool:
    entry = latest.get(input_key(p))
    return not resume or entry is None or (retry_errors and _is_error(entry))

  todo = [p for p in paths if needs_run(p)]
  if workers > 1 and todo:
    try:
      # The serializer spawn itself uses to hand the initializer to a worker; nothing is
      # loaded, only checked that it can be sent.
      multiprocessing.reduction.ForkingPickler.dumps(make_analyzer)
    except Exception as e:  # noqa: BLE001 -- turned into a clearer error
      raise TypeError("make_analyzer must be picklable for workers > 1: use a top-level "
                      "function or functools.partial of one, not a lambda or closure") from e

  fresh: set[str] = set()
  if todo:
    if workers > 1:
      entries = _run_pool(todo, make_analyzer, workers)
    else:
      analyzer = make_analyzer()
      entries = (_analyze_entry(analyzer, str(p)) for p in todo)
    with open(jsonl, "a", encoding="utf-8") as f, \
         tqdm(total=len(todo), unit="file", disable=not progress, dynamic_ncols=True) as bar:
      for entry in entries:
        # One write + flush per file: a killed run keeps every line written so far.
        f.write(json.dumps(entry, allow_nan=False) + "\n")
        f.flush()
        latest[entry["path"]] = entry
        fresh.add(entry["path"])
        if _is_error(entry) and on_entry is None:
          _log(f"qc_batch: {entry['name']}: {entry['kind']}: {entry['error']}")
        if on_entry is not None:
          on_entry(entry)
        bar.update(1)

  final = [latest[input_key(p)] for p in paths if input_key(p) in latest]
  csv_path = write_summary_csv(final, out / SUMMARY_NAME)
  index, report_failures = None, 0
  if report:
    index, report_failures = _write_reports(paths, final, out, fresh)

  errors = collections.Counter(e["kind"] for e in final if _is_error(e))
  return {
      "total": len(paths),
      "done_now": len(fresh),
      "skipped_existing": len(paths) - len(todo),
      "ok": sum(not _is_error(e) for e in final),
      "errors": dict(sorted(errors.items())),
      "report_failures": report_failures,
      "jsonl": str(jsonl),
      "csv": str(csv_path),
      "index": str(index) if index is not None else None,
      "elapsed_s": round(time.perf_counter() - t0, 3),
  }
