"""3D convolutions on XLA:CPU: one native 3D conv vs a sum of 2D convs over time taps.

  python -m bench.conv3d --variants tiny,paper --repeats 3 --impls native,auto

``models.CONV3D_IMPL`` picks the formulation: ``native`` (one 3D conv per layer, the old
default), ``2d`` (every layer as 2D convs) or ``auto`` (the default: per layer, see
``models.conv3d_as_2d``). The first of ``--impls`` is the baseline; all run in this one
process, interleaved (a, b, a, b) so that a busy machine slows them alike; the matmul peak is measured in the same process. Eval = one 100-frame
clip (96 video + 96 audio windows, ``bench.cpu_speed._eval``); train = fwd+bwd of an
in-batch InfoNCE loss over both towers (``bench.cpu_speed._train``, batch 32 tiny / 8 paper).

The fraction of peak divides the best model time by the best of all matmul peaks taken in
the run (at the start and after every variant): one matmul timing moved by 30% between runs
on this shared machine, and a low yardstick would flatter the model.
"""
from __future__ import annotations

import json

import numpy as np

from bench import cpu_speed
from bench.common import machine, matmul_peak
from modeformer_jax import cli
from modeformer_jax.model import models
from modeformer_jax.model.models import ModEFormer


def main(argv: list[str] | None = None) -> int:
  ap = cli.parser(__name__, __doc__.split("\n\n")[0])
  ap.add_argument("--variants", default="tiny,paper")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--what", default="eval,train")
  ap.add_argument("--out", default=None)
  ap.add_argument("--impls", default="native,2d", help="baseline first")
  args = ap.parse_args(argv)
  peaks = [matmul_peak()]
  print(f"machine: {machine()}; matmul peak {peaks[0] / 1e9:.1f} GFLOP/s", flush=True)
  rows = []
  for variant in args.variants.split(","):
    model = ModEFormer(models.model_config(variant, dropout=0.0))
    params = cpu_speed._numpy_params(model)
    batch = 32 if variant in ("tiny", "micro") else 8
    res: dict = {}
    peak = max(peaks)   # what the per-call timings in cpu_speed report against (logs only)
    for _ in range(2):
      for impl in args.impls.split(","):
        models.CONV3D_IMPL = impl
        r = res.setdefault(impl, {})
        if "eval" in args.what:
          e, emb = cpu_speed._eval(model, params, args.repeats, peak)
          r.setdefault("eval_s", []).append(e["sec_per_clip"])
          r.setdefault("video_s", []).append(e["video_s"])
          r["eval_gflops"] = e["flops"] / 1e9
          r["emb"] = emb["video"]
        if "train" in args.what:
          t, _ = cpu_speed._train(model, params, batch, args.repeats, peak)
          r.setdefault("train_sps", []).append(t["samples_per_s"])
    models.CONV3D_IMPL = "auto"
    peaks.append(matmul_peak())
    peak = max(peaks)
    row = {"variant": variant, "peak_gflops": round(peak / 1e9, 1),
           "peaks_gflops": [round(p / 1e9, 1) for p in peaks]}
    for impl, r in res.items():
      if "eval_s" in r:
        s = min(r["eval_s"])
        row[f"{impl}_eval_s"] = round(s, 3)
        row[f"{impl}_video_s"] = round(min(r["video_s"]), 3)
        row[f"{impl}_eval_of_peak"] = round(r["eval_gflops"] * 1e9 / s / peak, 3)
      if "train_sps" in r:
        row[f"{impl}_train_samples_per_s"] = round(max(r["train_sps"]), 2)
    base, new = args.impls.split(",")[:2]
    if "eval_s" in res[base]:
      row["eval_speedup"] = round(row[f"{base}_eval_s"] / row[f"{new}_eval_s"], 2)
      d = np.abs(res[new]["emb"] - res[base]["emb"]).max()
      row["max_emb_diff_rel"] = float(d / np.abs(res[base]["emb"]).max())
    if "train_sps" in res[base]:
      row["train_speedup"] = round(row[f"{new}_train_samples_per_s"]
                                   / row[f"{base}_train_samples_per_s"], 2)
    print(json.dumps(row), flush=True)
    rows.append(row)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"machine": machine(), "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
