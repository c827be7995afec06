"""XLA:CPU option sweep: eval and train speed of the encoders under sets of XLA_FLAGS.

  python -m bench.cpu_speed --configs baseline,no_ynn,ynn_conv --variants paper,tiny
  python -m bench.cpu_speed --configs all --variants tiny --what eval --repeats 3
  python -m bench.cpu_speed --configs baseline,eigen_1t --threads 1,2 --out cpu.json
  python -m bench.cpu_speed --extra 'mine=--xla_cpu_enable_fast_math=true' --configs baseline,mine
  python -m bench.cpu_speed --list

Each (config, variant, threads) runs in a fresh subprocess, because XLA reads XLA_FLAGS
once, when the CPU backend is created. The child measures, in its own process:

* the matmul peak (``bench.common.matmul_peak``, 2048^2 f32): the practical FLOP rate of
  this process under these flags and threads;
* eval: one 100-frame clip = 96 video windows [5,48,96,3] uint8 and 96 mel windows
  [80,16] through the jitted ``model.embed_video`` / ``model.embed_audio`` at batch 96
  (the two programs ``embedding.Embedder(chunk=96)`` runs for such a clip); median s/clip
  and per tower over ``--repeats`` after a warm-up, FLOPs from XLA's cost analysis;
* train: fwd+bwd of an in-batch InfoNCE loss over both towers (batch 32 for tiny/micro,
  8 otherwise, as ``bench.model``); median step time, samples/s.

Parameters are drawn with NumPy from a fixed seed (fan-in scaled normal kernels, unit
norm scales, zero biases) into the tree of ``model.init``: the same values under every
config, and no init program to compile (flax's init took over a minute even for micro on
the busy dev box). The first baseline child of a variant saves its embeddings (and the
train loss and gradient norm) on fixed seeded inputs; later children report their
difference from it ("rel diff": the largest ||e - e_ref|| / ||e_ref|| over the embedding
rows, or the relative change of loss / gradient norm), so a config that changes numerics
beyond float tolerance (1e-3) is flagged with "!". A child that XLA aborts on (an
unknown flag or a bad value) is reported as ``rejected: <stderr tail>``, one that dies
otherwise (e.g. SIGILL inside a library) as ``crashed``; the sweep goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeformer_jax import cli

# Named XLA_FLAGS sets (flag name without "--" -> value); every value here parses in
# jaxlib 0.10.2 (a bad one aborts the child, which is then reported as rejected).
# Fusion-type flags take a comma list of LibraryFusionType names (case-insensitive, the
# LIBRARY_FUSION_TYPE_ prefix optional): dot, eltwise, reduce, individual_dot,
# individual_convolution. A plain list replaces the default list, "+x,-y" edits it, and
# an empty value clears it. There is no "conv" type. What a config really changed shows
# in the "lib" column (library fusions found in the optimized programs).
CONFIGS: dict[str, dict[str, str]] = {
    # jaxlib defaults. In 0.10.2 these already route single dots and large reductions
    # to YNNPACK fusions (the "lib" column shows ynn:dot / ynn:reduce), leave every
    # convolution to XLA's Eigen convolution, and use XNNPACK dot thunks where XLA
    # would call Eigen for a dot (xla_cpu_use_xnnpack=true).
    "baseline": {},
    # No YNNPACK at all: what the default YNN dots/reductions are worth.
    "no_ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
    # Defaults plus YNNPACK convolutions. YNN takes only 2D convolutions, so this moves
    # the audio trunk (9 convs in tiny; not micro's 4-channel ones); the 3D video convs
    # stay on Eigen.
    "ynn_conv": {"xla_cpu_experimental_ynn_fusion_type": "+individual_convolution"},
    # Every YNN fusion type: also elementwise fusions (norm/activation glue).
    "ynn_all": {"xla_cpu_experimental_ynn_fusion_type":
                "dot,eltwise,reduce,individual_dot,individual_convolution"},
    # XNNPACK fusions of dots, elementwise ops and reductions, with YNN cleared so it
    # cannot claim the dots first. XNN fusions never take convolutions. On tiny/micro
    # shapes 0.10.2 forms no XNN fusion at all (lib column empty).
    "xnn": {"xla_cpu_experimental_ynn_fusion_type": "",
            "xla_cpu_experimental_xnn_fusion_type": "dot,eltwise,reduce"},
    # Greedy extraction of whole XNNPACK subgraphs, YNN cleared (needs the full enum
    # name; "greedy" alone is rejected). Also forms nothing on tiny/micro in 0.10.2.
    "xnn_graph": {"xla_cpu_experimental_ynn_fusion_type": "",
                  "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    # Eigen instead of XNNPACK for the dots XLA hands to a library at thunk emission.
    "no_xnn": {"xla_cpu_use_xnnpack": "false"},
    # oneDNN Graph fusions for dots and elementwise ops. On the AMD EPYC (AVX2) dev box
    # the child dies ("partition compile failed", then SIGILL); kept for Intel hosts.
    "onednn": {"xla_cpu_use_onednn": "true",
               "xla_cpu_experimental_onednn_fusion_type": "dot,eltwise"},
    # oneDNN custom calls: OneDnnContractionRewriter is the only XLA path that takes 1-3D
    # convolutions (the video trunk), but upstream gates it on a build with XLA_ONEDNN and
    # ENABLE_ONEDNN_ASYNC. In this wheel the flag parses and nothing is rewritten.
    "onednn_cc": {"xla_cpu_experimental_onednn_custom_call": "true"},
    # Unsafe fast math: approximate exp/rsqrt/division in the norm, softmax and GELU
    # fusions. Numerics may move; the diff columns say by how much.
    "fast_math": {"xla_cpu_enable_fast_math": "true"},
    # Legacy LLVM-IR elementwise emitters instead of the MLIR fusion emitters.
    "no_fusion_emitters": {"xla_cpu_use_fusion_emitters": "false"},
    # 512-bit vectors in XLA's own loops (only matters on AVX-512 hosts).
    "vec512": {"xla_cpu_prefer_vector_width": "512"},
    # Codegen capped at AVX2: on AVX-512 hosts tells whether 512-bit code pays; a no-op
    # on AVX2-only hosts such as the dev box.
    "isa_avx2": {"xla_cpu_max_isa": "AVX2"},
    # Compiler preset that favours run time over compile time.
    "fast_runtime": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_RUNTIME"},
    # Single-threaded Eigen dots/convs (other ops keep the intra-op pool): how much of
    # the conv time is Eigen's own parallelism. Pair with --threads for the full axis.
    "eigen_1t": {"xla_cpu_multi_thread_eigen": "false"},
}

DEFAULT_CONFIGS = "baseline,no_ynn,ynn_conv,ynn_all,xnn,fast_math"
CLIP_FRAMES = 100           # a 100-frame clip has 96 window positions
RESULT_TAG = "CPU_SPEED_RESULT "
REL_TOL = 1e-3              # max ||e - e_ref|| / ||e_ref|| per embedding before flagging
REPO = Path(__file__).resolve().parents[1]


def flag_string(flags: dict[str, str]) -> str:
  """The XLA_FLAGS value of a config."""
  return " ".join(f"--{k}={v}" for k, v in flags.items())


# ---------------------------------------------------------------------------- child side
# jax is imported inside the child functions: the parent never loads it, and a child
# loads it only after XLA_FLAGS is in its environment and its CPUs are pinned.


def _pin_threads(n: int) -> list[int]:
  """Restricts this process to its first ``n`` allowed CPUs; returns the CPU set.

  There is no XLA_FLAGS knob for intra-op threads: ``intra_op_parallelism_threads`` is
  an HloModuleConfig / PJRT client option that jax.jit does not expose, and
  ``xla_force_host_platform_device_count`` makes more devices, not more threads. The
  PJRT CPU client sizes its Eigen intra-op pool (the ``tf_XLAEigen`` threads) from the
  CPUs the process may run on (sched_getaffinity), so pinning before jax is imported
  sets the pool size and keeps the threads on those cores: 1 CPU -> 1 pool thread,
  2 -> 2 on the dev box.
  """
  cpus = sorted(os.sched_getaffinity(0))
  if n > 0:
    if n > len(cpus):
      raise ValueError(f"--threads {n} but only {len(cpus)} CPUs are available")
    cpus = cpus[:n]
    os.sched_setaffinity(0, cpus)
  return cpus


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
  """Median wall time of ``fn`` (blocking on its result) after ``warmup`` calls."""
  import jax
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(max(1, repeats)):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _library_ops(compiled) -> dict[str, int]:
  """Library-backed ops of an optimized program by library and content, e.g. {"ynn:dot": 8}.

  A fusion counts as "conv" / "dot" / "reduce" when its fused computation has such an
  instruction (else "eltwise"); oneDNN custom calls count by target. A flag that parses
  but changes nothing leaves this as the baseline's; "conv" entries mean convolutions
  really left XLA's Eigen path.
  """
  text = compiled.as_text()
  bodies: dict[str, str] = {}
  for m in re.finditer(r"^%?([\w.\-]+) \(.*?\{\n(.*?)^\}", text,
                       re.MULTILINE | re.DOTALL):
    bodies[m.group(1)] = m.group(2)
  out: Counter = Counter()
  for line in text.splitlines():
    kind = re.search(r'"kind":"__(\w+?)_fusion"', line)
    if kind:
      calls = re.search(r"calls=%?([\w.\-]+)", line)
      body = bodies.get(calls.group(1), "") if calls else ""
      op = next((name for name, pat in (("conv", " convolution("), ("dot", " dot("),
                                         ("reduce", " reduce(")) if pat in body), "eltwise")
      out[f"{kind.group(1)}:{op}"] += 1
    call = re.search(r'custom_call_target="(__onednn[^"]*)"', line)
    if call:
      out[call.group(1).strip("_").replace("$", ":")] += 1
  return dict(out)


def _relative_diff(x, ref) -> tuple[float, float]:
  """(max |x - ref|, max over rows of ||x - ref|| / ||ref||)."""
  import numpy as np
  d = np.asarray(x, np.float64) - np.asarray(ref, np.float64)
  norms = np.maximum(np.linalg.norm(ref, axis=-1), 1e-12)
  return float(np.abs(d).max()), float((np.linalg.norm(d, axis=-1) / norms).max())


def _numpy_params(model) -> Any:
  """Deterministic parameters with ``model.init``'s tree, independent of XLA flags."""
  import jax
  import numpy as np

  rng = np.random.default_rng(0)

  def make(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "scale" in name:
      return np.ones(leaf.shape, leaf.dtype)
    if "bias" in name:
      return np.zeros(leaf.shape, leaf.dtype)
    std = 1 / np.sqrt(np.prod(leaf.shape[:-1])) if "kernel" in name else 0.02
    return (rng.standard_normal(leaf.shape) * std).astype(leaf.dtype)

  shapes = jax.eval_shape(model.init, jax.random.key(0))
  return jax.device_put(jax.tree_util.tree_map_with_path(make, shapes))


def _eval(model, params, repeats: int, peak: float) -> tuple[dict, dict]:
  """Embed-once cost of one 100-frame clip; returns (results, embeddings)."""
  import jax
  import numpy as np

  from bench.common import compiled_flops
  from modeformer_jax.model import windows

  rng = np.random.default_rng(0)
  lips = rng.integers(0, 256, (CLIP_FRAMES, 48, 96, 3), dtype=np.uint8)
  mel = rng.standard_normal((80, windows.num_mel_frames(CLIP_FRAMES))).astype(np.float32)
  vw, aw = windows.clip_windows(lips, mel)
  vw, aw = jax.device_put(vw), jax.device_put(aw)
  t = time.perf_counter()
  video = jax.jit(model.embed_video).lower(params, vw).compile()
  audio = jax.jit(model.embed_audio).lower(params, aw).compile()
  compile_s = time.perf_counter() - t

  v, a = video(params, vw), audio(params, aw)   # warm-up, and the embeddings compared
  jax.block_until_ready((v, a))
  clip, vid, aud = [], [], []
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(video(params, vw))
    t1 = time.perf_counter()
    jax.block_until_ready(audio(params, aw))
    t2 = time.perf_counter()
    clip.append(t2 - t0)
    vid.append(t1 - t0)
    aud.append(t2 - t1)
  fv, fa = compiled_flops(video), compiled_flops(audio)
  sec = statistics.median(clip)
  res = {"positions": int(vw.shape[0]), "sec_per_clip": sec,
         "video_s": statistics.median(vid), "audio_s": statistics.median(aud),
         "video_flops": fv, "audio_flops": fa, "flops": fv + fa,
         "flops_per_s": (fv + fa) / sec, "frac_peak": (fv + fa) / sec / peak,
         "video_frac_peak": fv / statistics.median(vid) / peak, "compile_s": compile_s,
         "lib": {"video": _library_ops(video), "audio": _library_ops(audio)}}
  return res, {"video": np.asarray(v), "audio": np.asarray(a)}


def _train(model, params, batch: int, repeats: int, peak: float) -> tuple[dict, dict]:
  """fwd+bwd of an in-batch InfoNCE loss over both towers; returns (results, refs)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from bench.common import compiled_flops

  rng = np.random.default_rng(1)
  mel = jax.device_put(rng.standard_normal((batch, 80, 16)).astype(np.float32))
  frames = jax.device_put(rng.integers(0, 256, (batch, 5, 48, 96, 3), dtype=np.uint8))

  def loss(p):
    a = model.embed_audio(p, mel)
    v = model.embed_video(p, frames)
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    logits = v @ a.T / 0.1       # each video against every audio window of the batch
    return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.arange(batch)).mean()

  t = time.perf_counter()
  step = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  compile_s = time.perf_counter() - t
  value, grads = step(params)
  # Norm taken in NumPy so that no program compiled under the config's flags touches it.
  gnorm = float(np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                            for g in jax.tree.leaves(grads))))
  sec = _median_seconds(lambda: step(params), repeats)
  flops = compiled_flops(step)
  res = {"batch": batch, "sec": sec, "samples_per_s": batch / sec, "flops": flops,
         "flops_per_s": flops / sec, "frac_peak": flops / sec / peak, "loss": float(value),
         "grad_norm": gnorm, "compile_s": compile_s, "lib": _library_ops(step)}
  return res, {"loss": float(value), "grad_norm": gnorm}


def run_child(spec: dict) -> dict:
  """One measurement in this (fresh) process; XLA_FLAGS is already in the environment."""
  cpus = _pin_threads(spec["threads"])
  import numpy as np

  from bench.common import machine, matmul_peak
  from modeformer_jax.model import models

  out: dict[str, Any] = {"status": "ok", "machine": machine(), "cpus": cpus,
                         "xla_flags": os.environ.get("XLA_FLAGS", "")}
  peak = matmul_peak()
  out["peak_flops"] = peak
  variant = spec["variant"]
  model = models.ModEFormer(models.model_config(variant, dropout=0.0, dtype=spec["dtype"]))
  params = _numpy_params(model)
  out["params"] = models.count_params(params)
  ref_in = spec.get("ref_in")
  ref = dict(np.load(ref_in)) if ref_in and os.path.exists(ref_in) else None
  saved: dict[str, Any] = {}

  if "eval" in spec["what"]:
    res, emb = _eval(model, params, spec["repeats"], peak)
    saved.update(emb)
    if ref is not None and "video" in ref:
      dv, rv = _relative_diff(emb["video"], ref["video"])
      da, ra = _relative_diff(emb["audio"], ref["audio"])
      res.update(max_abs_diff=max(dv, da), rel_diff=max(rv, ra),
                 numerics_ok=bool(max(rv, ra) <= REL_TOL))
    out["eval"] = res
  if "train" in spec["what"]:
    batch = spec["batch"] or (32 if variant in ("tiny", "micro") else 8)
    res, vals = _train(model, params, batch, spec["repeats"], peak)
    saved.update(vals)
    if ref is not None and "grad_norm" in ref:
      res["rel_diff"] = max(abs(vals[k] - float(ref[k])) / max(abs(float(ref[k])), 1e-12)
                            for k in ("loss", "grad_norm"))
      res["numerics_ok"] = bool(res["rel_diff"] <= REL_TOL)
    out["train"] = res
  if spec.get("ref_out"):
    np.savez(spec["ref_out"], **saved)
  return out


# --------------------------------------------------------------------------- parent side


_GLOG_PREFIX = re.compile(r"^[EFWI]\d{4} [\d:.]+\s+\d+ ")


def _stderr_tail(stderr: str, n: int = 3) -> str:
  """The last glog error/fatal lines of a child (or its last lines when there are none)."""
  lines = [l for l in stderr.strip().splitlines() if l.strip()]
  errs = [l for l in lines if re.match(r"^[EF]\d{4} ", l) or "Error" in l or "error" in l]
  tail = (errs or lines)[-n:]
  return " | ".join(_GLOG_PREFIX.sub("", l).strip() for l in tail)[-500:]


def run_one(name: str, flags: dict[str, str], spec: dict, timeout: float) -> dict:
  """Runs one child with ``flags`` as XLA_FLAGS; never raises for a failed child."""
  env = dict(os.environ, XLA_FLAGS=flag_string(flags), JAX_PLATFORMS="cpu")
  base = {"config": name, "variant": spec["variant"], "threads": spec["threads"],
          "xla_flags": env["XLA_FLAGS"]}
  cmd = [sys.executable, "-m", "bench.cpu_speed", "--_child", json.dumps(spec)]
  t = time.perf_counter()
  try:
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return dict(base, status=f"timeout after {timeout:.0f} s")
  wall = time.perf_counter() - t
  for line in reversed(p.stdout.splitlines()):
    if line.startswith(RESULT_TAG):
      # XLA only warns about some bad values (e.g. "Unknown CPU ISA: FOO"); keep them.
      warnings = list(dict.fromkeys(
          _GLOG_PREFIX.sub("", l).strip() for l in p.stderr.splitlines()
          if re.match(r"^[WE]\d{4} ", l)))[:5]
      return dict(base, **json.loads(line[len(RESULT_TAG):]), wall_s=wall,
                  warnings=warnings)
  tail = _stderr_tail(p.stderr or p.stdout)
  if re.search(r"Unknown flag|Illegal value|Flag parsing failed", p.stderr):
    status = f"rejected: {tail}"
  elif p.returncode < 0:
    status = f"crashed ({signal.Signals(-p.returncode).name}): {tail}"
  else:
    status = f"failed (rc {p.returncode}): {tail}"
  return dict(base, status=status, wall_s=wall)


def _fmt(x: float | None, spec: str) -> str:
  """``format(x, spec)``, or a right-aligned "-" of the same width when ``x`` is None."""
  return format(x, spec) if x is not None else "-".rjust(int(re.match(r"\d*", spec)[0] or 1))


def print_table(rows: list[dict]) -> None:
  """One line per (config, variant, threads); speedups against that group's baseline."""
  base = {(r["variant"], r["threads"]): r for r in rows
          if r["config"] == "baseline" and r["status"] == "ok"}
  head = (f"{'config':<20}{'variant':<8}{'thr':>4}{'peak GF/s':>10}{'eval s/clip':>12}"
          f"{'GFLOP/s':>9}{'%peak':>7}{'video s':>9}{'audio s':>9}{'train smp/s':>12}"
          f"{'%peak':>7}{'eval x':>7}{'train x':>8}{'max diff':>10}{'rel diff':>10}  lib")
  print(head)
  print("-" * len(head))
  for r in rows:
    thr = str(r["threads"] or "all")
    if r["status"] != "ok":
      print(f"{r['config']:<20}{r['variant']:<8}{thr:>4}  {r['status'][:150]}")
      continue
    e, tr, b = r.get("eval"), r.get("train"), base.get((r["variant"], r["threads"]))
    ex = (b["eval"]["sec_per_clip"] / e["sec_per_clip"]
          if e and b and b.get("eval") else None)
    tx = (tr["samples_per_s"] / b["train"]["samples_per_s"]
          if tr and b and b.get("train") else None)
    diffs = [d for d in (e, tr) if d and "rel_diff" in d]
    rel = max((d["rel_diff"] for d in diffs), default=None)
    flag = "" if all(d["numerics_ok"] for d in diffs) else " !"
    lib = Counter()
    for part in ([e["lib"]["video"], e["lib"]["audio"]] if e else []) + ([tr["lib"]] if tr else []):
      lib.update(part)
    print(f"{r['config']:<20}{r['variant']:<8}{thr:>4}{r['peak_flops'] / 1e9:>10.1f}"
          f"{_fmt(e and e['sec_per_clip'], '12.4f')}"
          f"{_fmt(e and e['flops_per_s'] / 1e9, '9.1f')}"
          f"{_fmt(e and 100 * e['frac_peak'], '6.1f')}{'%' if e else ' '}"
          f"{_fmt(e and e['video_s'], '9.4f')}{_fmt(e and e['audio_s'], '9.4f')}"
          f"{_fmt(tr and tr['samples_per_s'], '12.1f')}"
          f"{_fmt(tr and 100 * tr['frac_peak'], '6.1f')}{'%' if tr else ' '}"
          f"{_fmt(ex, '7.2f')}{_fmt(tx, '8.2f')}"
          f"{_fmt(e and e.get('max_abs_diff'), '10.1e')}{_fmt(rel, '10.1e')}{flag}"
          f"  {' '.join(f'{k}={v}' for k, v in sorted(lib.items())) or '-'}")


def main() -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                      help=f"comma list of CONFIGS names or 'all' (default {DEFAULT_CONFIGS})")
  parser.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS",
                      help="ad-hoc config, e.g. 'fm=--xla_cpu_enable_fast_math=true'")
  parser.add_argument("--variants", default="paper,tiny")
  parser.add_argument("--what", default="eval,train", help="eval, train or both")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up")
  parser.add_argument("--threads", default="0",
                      help="comma list of CPU counts to pin each child to; 0 = all CPUs")
  parser.add_argument("--batch", type=int, default=0, help="train batch; 0 = tiny/micro 32, else 8")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--timeout", type=float, default=3600, help="seconds per child")
  parser.add_argument("--out", default="", help="write all results as JSON here")
  parser.add_argument("--list", action="store_true", help="print the configs and exit")
  parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args._child:
    print(RESULT_TAG + json.dumps(run_child(json.loads(args._child))), flush=True)
    return

  configs = dict(CONFIGS)
  for e in args.extra:
    name, _, flags = e.partition("=")
    configs[name] = dict(f.lstrip("-").split("=", 1) for f in flags.split())
  if args.list:
    for name, flags in configs.items():
      print(f"{name:<20}{flag_string(flags) or '(jaxlib defaults)'}")
    return
  names = list(configs) if args.configs == "all" else args.configs.split(",")
  names += [e.partition("=")[0] for e in args.extra if e.partition("=")[0] not in names]
  unknown = [n for n in names if n not in configs]
  if unknown:
    parser.error(f"unknown configs {unknown}; known: {sorted(configs)}")
  names = ["baseline"] + [n for n in names if n != "baseline"]  # speedups and diffs need it
  what = [w for w in args.what.split(",") if w]
  if not set(what) <= {"eval", "train"}:
    parser.error("--what takes eval and/or train")
  if os.environ.get("XLA_FLAGS"):
    print(f"note: ignoring XLA_FLAGS={os.environ['XLA_FLAGS']!r}; each config sets its own")

  tmp = tempfile.mkdtemp(prefix="cpu_speed_")
  rows: list[dict] = []
  try:
    for variant in args.variants.split(","):
      ref = os.path.join(tmp, f"ref_{variant}.npz")
      for threads in (int(t) for t in args.threads.split(",")):
        for name in names:
          spec = {"variant": variant, "threads": threads, "what": what,
                  "repeats": args.repeats, "batch": args.batch, "dtype": args.dtype}
          if name == "baseline" and not os.path.exists(ref):
            spec["ref_out"] = ref   # first baseline of the variant is the reference
          else:
            spec["ref_in"] = ref
          r = run_one(name, configs[name], spec, args.timeout)
          rows.append(r)
          if r["status"] == "ok":
            e, tr = r.get("eval", {}), r.get("train", {})
            msg = (f"eval {e['sec_per_clip']:.4f} s/clip" if e else "") + \
                  (f"  train {tr['samples_per_s']:.1f} samples/s" if tr else "") + \
                  "".join(f"\n    warning: {w[:200]}" for w in r["warnings"])
          else:
            msg = r["status"][:200]
          print(f"[{name} {variant} threads={threads or 'all'}] {msg}", flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)

  machine = next((r["machine"] for r in rows if r.get("machine")), "")
  print()
  print("machine:", machine)
  print(f"eval = one {CLIP_FRAMES}-frame clip (96 video + 96 audio windows, batch 96); "
        f"train = fwd+bwd InfoNCE; dtype {args.dtype}; median of {args.repeats}; "
        f"'!' = rel diff > {REL_TOL:g} vs the first baseline (embeddings, loss, grad norm); "
        f"lib = library fusions in the optimized programs")
  print_table(rows)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"machine": machine, "args": vars(args),
                 "configs": {n: configs[n] for n in names}, "results": rows}, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
  main()
