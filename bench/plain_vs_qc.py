"""Plain ``detect`` against ``detect --qc`` on the same files, run as a person runs them.

  python -m bench.plain_vs_qc ../shared/data/real_clips --work /tmp/pvq --out bench/plain_vs_qc.json
  python -m bench.plain_vs_qc /tmp/formats /tmp/formats_hd --work /tmp/pvq_fmt
  python -m bench.plain_vs_qc --vfr /tmp/vfr --work /tmp/pvq_vfr     # the hard VFR cases

``--against OLD_WORK`` compares this run's raw outputs (every plain answer and every ``--qc``
result, field by field: offsets, confidences, verdicts, segments, refusals) with an earlier
run's ``--work`` folder, e.g. one made on the code before a refactor; only timings, plot
paths and ``--ignore``d keys may differ::

  python -m bench.plain_vs_qc ../shared/data/real_clips --work /tmp/after --against /tmp/before

``--vfr DIR`` adds the hard variable-rate suites (``formats.VFR_SUITES``: drops, bursts,
jittered and whole-ms timestamps, 29.97 to 25 fps conversions, audio 2 frames late, on the
synthetic speaker and on real faces at 1080p and 720p), written into ``DIR`` once.

Each input is a video or a folder (searched recursively for video files). Both commands run
once over all files (``detect FILES --json``, which writes a PNG per file, and ``detect --qc
FILES``, which writes an HTML report per file), each in its own process, timed, the files
read once before either so both find them in the page cache. Per file they agree when both give an offset in the same frame with
the ms within half a frame (20 ms), or both refuse with the same reason. Prints one row per
file, the agreement count and the two wall times (``plain`` should be no slower: it is the
same analysis without the timeline and reports).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

from bench.common import machine
from modeformer_jax import analysis, cli

REAL_CLIPS = pathlib.Path(__file__).resolve().parents[1] / "../shared/data/real_clips"

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".mxf", ".avi", ".webm", ".ts", ".m4v", ".mpg"}


def videos(inputs: list[str]) -> list[pathlib.Path]:
  """The video files of ``inputs`` (files as given, folders searched), sorted, unique."""
  out: list[pathlib.Path] = []
  for name in inputs:
    p = pathlib.Path(name)
    if p.is_dir():
      out += [q for q in sorted(p.rglob("*")) if q.suffix.lower() in VIDEO_SUFFIXES]
    elif p.exists():
      out.append(p)
    else:
      raise SystemExit(f"{p}: no such file or folder")
  return sorted(dict.fromkeys(q.resolve() for q in out))


def _reason(text: str, path: pathlib.Path) -> str:
  """An error message without its ``path: `` prefix."""
  return text.split(f"{path}: ", 1)[-1].strip()


def compare(plain: dict | None, qc: dict | None, path: pathlib.Path) -> dict:
  """One file's row: both answers and whether they agree (``same``)."""
  row = {"file": str(path)}
  if plain is None or qc is None:
    return row | {"same": False, "why": "missing from one run's output"}
  if "error" in plain:
    row["plain"] = {"error": _reason(plain["error"], path)}
  else:
    row["plain"] = {"frames": plain["offset_frames"], "ms": plain["offset_ms"]}
  g = qc.get("global") or {}
  if "error" in qc:
    row["qc"] = {"error": _reason(qc["error"], path)}
  elif g.get("offset_ms") is None:
    row["qc"] = {"error": analysis.refusal(qc)}
  else:
    row["qc"] = {"frames": g.get("offset_frames"), "ms": g["offset_ms"]}
  a, b = row["plain"], row["qc"]
  if "error" in a or "error" in b:
    row["same"] = "error" in a and "error" in b and a["error"] == b["error"]
  else:
    row["same"] = (a["frames"] == b["frames"] and abs(a["ms"] - b["ms"]) <= 20.0)
  return row


VOLATILE = ("timing", "plot", "path", "model")


def _raw(work: pathlib.Path) -> dict[str, dict]:
  """A run's raw outputs per file: ``{path: {"plain": answer, "qc": result}}``."""
  out: dict[str, dict] = {}
  for r in json.loads((work / "plain.json").read_text()):
    if "name" in r:
      out.setdefault(str(pathlib.Path(r["name"]).resolve()), {})["plain"] = r
  for line in (work / "qc" / "results.jsonl").read_text().splitlines():
    if line.strip():
      e = json.loads(line)
      out.setdefault(str(pathlib.Path(e["path"]).resolve()), {})["qc"] = e
  return out


def differences(old, new, where: str = "", ignore: tuple[str, ...] = ()) -> list[str]:
  """Every place where ``new`` differs from ``old`` (nested dicts and lists, floats exactly),
  skipping ``VOLATILE`` keys and ``ignore``."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      if k in VOLATILE or k in ignore:
        continue
      if k not in old or k not in new:
        out.append(f"{where}.{k}: only {'after' if k in new else 'before'}")
      else:
        out += differences(old[k], new[k], f"{where}.{k}", ignore)
    return out
  if isinstance(old, list) and isinstance(new, list):
    if len(old) != len(new):
      return [f"{where}: {len(old)} -> {len(new)} items"]
    return [d for i, (a, b) in enumerate(zip(old, new))
            for d in differences(a, b, f"{where}[{i}]", ignore)]
  return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def against(old_work: pathlib.Path, work: pathlib.Path, ignore: tuple[str, ...]) -> int:
  """Prints the files whose raw outputs differ from ``old_work``'s; returns their count."""
  old, new = _raw(old_work), _raw(work)
  changed = 0
  for f in sorted(set(old) | set(new)):
    d = differences(old.get(f), new.get(f), "", ignore)
    if d:
      changed += 1
      print(f"CHANGED   {f}: " + "; ".join(d[:8]) + (f"; ... ({len(d)} in all)" if len(d) > 8 else ""))
  print(f"against {old_work}: {len(set(old) | set(new)) - changed} of {len(set(old) | set(new))} "
        f"files with identical outputs (ignoring {', '.join(VOLATILE + ignore)})")
  return changed


def main(argv: list[str] | None = None) -> int:
  p = cli.parser(__name__, __doc__.split("\n\n")[0])
  p.add_argument("inputs", nargs="*", help="videos or folders")
  p.add_argument("--vfr", default=None, metavar="DIR", help="also the hard variable-rate "
                 "suites, written into DIR once (the real faces only where ../shared/data is)")
  p.add_argument("--work", required=True, help="scratch folder for both runs' outputs")
  p.add_argument("--checkpoint", default=None)
  p.add_argument("--out", default=None, help="JSON of every row and figure")
  p.add_argument("--against", default=None, metavar="OLD_WORK",
                 help="an earlier run's --work folder: list every file whose outputs differ")
  p.add_argument("--ignore", default="", help="with --against: comma-separated keys that may "
                 "differ (e.g. a field the new code adds)")
  a = p.parse_args(argv)
  inputs = list(a.inputs)
  if a.vfr:
    from data_prep.synthetic import formats
    suites = formats.write_vfr_suites(a.vfr, REAL_CLIPS if REAL_CLIPS.is_dir() else None)
    inputs += [str(pathlib.Path(a.vfr) / name) for name in suites]
  files = videos(inputs)
  if not files:
    raise SystemExit("no video files found")
  work = pathlib.Path(a.work)
  work.mkdir(parents=True, exist_ok=True)
  ck = ["--checkpoint", a.checkpoint] if a.checkpoint else []
  base = [sys.executable, "-m", "modeformer_jax.detect", *map(str, files), *ck]
  print(machine())
  print(f"{len(files)} files")
  for f in files:          # both runs read the files from the page cache, not the first alone
    f.read_bytes()
  t0 = time.perf_counter()
  run = subprocess.run(base + ["--json", "--out", str(work / "plain")], capture_output=True,
                       text=True)
  plain_s = time.perf_counter() - t0
  (work / "plain.json").write_text(run.stdout)     # kept: --against compares raw outputs
  if not run.stdout.strip():
    raise SystemExit(f"plain detect printed nothing (exit {run.returncode}):\n{run.stderr[-2000:]}")
  plain = {pathlib.Path(r["name"]).resolve(): r for r in json.loads(run.stdout)
           if "name" in r}
  qc_out = work / "qc"
  (qc_out / "results.jsonl").unlink(missing_ok=True)    # no resume: a fresh, timed run
  t0 = time.perf_counter()
  # Each as a person runs it: plain writes its PNG per file, --qc its HTML report per file.
  subprocess.run(base + ["--qc", "--out", str(qc_out)], capture_output=True, text=True)
  qc_s = time.perf_counter() - t0
  qc = {}
  for line in (qc_out / "results.jsonl").read_text().splitlines():
    if line.strip():
      e = json.loads(line)
      qc[pathlib.Path(e["path"]).resolve()] = e
  rows = [compare(plain.get(f), qc.get(f), f) for f in files]
  for r in rows:
    def show(x):
      return x["error"] if "error" in x else f"{x['frames']:+d} fr {x['ms']:+7.1f} ms"
    mark = "same" if r["same"] else "DIFFERENT"
    print(f"{mark:9s} {pathlib.Path(r['file']).name:42s} plain {show(r.get('plain', {'error': '?'}))}"
          f" | qc {show(r.get('qc', {'error': '?'}))}")
  same = sum(r["same"] for r in rows)
  print(f"\n{same} of {len(rows)} files: the same answer from both; wall time plain "
        f"{plain_s:.1f} s, --qc {qc_s:.1f} s (plain / qc = {plain_s / qc_s:.2f})")
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps(
        {"machine": machine(), "files": len(rows), "same": same, "plain_wall_s": round(plain_s, 2),
         "qc_wall_s": round(qc_s, 2), "rows": rows}, indent=1))
  changed = 0
  if a.against:
    changed = against(pathlib.Path(a.against), work,
                      tuple(k for k in a.ignore.split(",") if k))
  return 0 if same == len(rows) and not changed else 1


if __name__ == "__main__":
  sys.exit(main())
