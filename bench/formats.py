"""Real-world formats through plain ``detect`` and ``detect --qc``: do both read the base file's
offset plus the injected shift?

  python -m bench.formats --out /tmp/formats                       # a synthetic speaker
  python -m bench.formats --out /tmp/formats_hd --size 1920x1080 \\
      --source ../shared/data/real_clips/hdtf/WDA_KatieHill_000.mp4     # a real face at 1080p

Writes the variants with ``data_prep.synthetic.formats`` (unless ``OUT/formats.json`` exists),
runs both paths with the shipped model (or ``--checkpoint``) and prints one row per file:
plain frames, QC ms, expected, the audio channels chosen, and whether each is right. The
table and machine go to ``OUT/results.json``.
"""
from __future__ import annotations

import json
import pathlib
import time

from bench.common import machine
from modeformer_jax import cli


def main(argv: list[str] | None = None) -> int:
  p = cli.parser(__name__, __doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--source", default=None)
  p.add_argument("--size", default=None, help="WxH canvas for --source")
  p.add_argument("--shift", type=int, default=3)
  p.add_argument("--checkpoint", default=None)
  a = p.parse_args(argv)

  from modeformer_jax.analysis import detectors
  from data_prep.synthetic import formats
  from modeformer_jax import analysis
  out = pathlib.Path(a.out)
  man_path = out / "formats.json"
  if man_path.exists():
    manifest = json.loads(man_path.read_text())
  else:
    size = tuple(int(v) for v in a.size.lower().split("x")) if a.size else None
    manifest = formats.write_suite(out, a.shift, source=a.source, size=size)
  ckpt = a.checkpoint or str(detectors.DEFAULT_MODEL)
  analyzer = analysis.Analyzer(ckpt)
  rows = []
  for name, f in manifest["files"].items():
    path = str(out / f["file"])
    t0 = time.perf_counter()
    r = analysis.detect_file(analyzer, path)
    t1 = time.perf_counter()
    q = analyzer.analyze(path)
    t2 = time.perf_counter()
    rows.append({"kind": name, "file": f["file"], "shift": f["shift_frames"],
                 "plain_frames": r["offset_frames"], "qc_ms": q["global"]["offset_ms"],
                 "audio": r["audio_source"], "plain_s": round(t1 - t0, 1),
                 "qc_s": round(t2 - t1, 1)})
  base = rows[0]
  print(f"{'file':>20} {'plain':>6} {'QC ms':>8} {'expect':>7}  ok  audio")
  misses = 0
  for r in rows:
    exp_f = base["plain_frames"] + r["shift"]
    exp_ms = base["qc_ms"] + 40 * r["shift"]
    r["plain_ok"] = r["plain_frames"] == exp_f
    r["qc_ok"] = r["qc_ms"] is not None and abs(r["qc_ms"] - exp_ms) <= 20
    misses += not (r["plain_ok"] and r["qc_ok"])
    qc_ms = "-" if r["qc_ms"] is None else f"{r['qc_ms']:+.1f}"
    print(f"{r['file']:>20} {r['plain_frames']:+6d} {qc_ms:>8} {exp_f:+4d}/{exp_ms:+.0f} "
          f"{'y' if r['plain_ok'] else 'N'}{'y' if r['qc_ok'] else 'N'}  {r['audio']}")
  info = machine()
  (out / "results.json").write_text(json.dumps({"machine": info, "checkpoint": ckpt,
                                                "source": manifest.get("source"),
                                                "rows": rows}, indent=1))
  print(f"{len(rows) - misses} of {len(rows)} files right in both paths; {info}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
