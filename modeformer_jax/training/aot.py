"""Deviceless ahead-of-time compilation for the pods and GPU nodes people book.

The TPU compiler (libtpu, from PyPI) and the GPU compiler (the jax-cuda12 PJRT plugin with
ptxas) both compile for a target topology on a CPU-only machine:
``jax.experimental.topologies.get_topology_desc`` describes the target's devices, and the
train step is lowered for a mesh of them and compiled by the target's own compiler. Nothing
runs; ``memory_analysis()`` is the target compiler's buffer assignment, per chip. This is
what MaxText's ``train_compile.py`` does before booking a pod.

Names follow the cloud's booking names (:data:`TARGETS`): ``v5e-256``, ``v5p-8``,
``h100-8``... TPU v4 and v5p names count TensorCores (two per chip), v5e and v6e names
count chips, GPU names count GPUs.

Install: ``make aot`` (``pip install -e '.[aot]'`` brings libtpu; the GPU compiler goes to
its own folder, :func:`gpu_compiler_dir`, because a CUDA plugin in site-packages is
imported by every JAX process and prints to stderr on a machine without a GPU).
Ordinary commands never load either: ``modeformer_jax/__init__.py`` keeps JAX on the CPU
where the machine has no accelerator, and only :func:`prepare` (called by the planner for a
``--target``) turns the target compilers on, in that process alone.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import sys
from typing import Any, Mapping

from modeformer_jax.errors import CompiledMismatch, CompilerMissing

# The versions the target compilers must have: the same XLA as jax. Written here for the
# error messages; the Makefile's `aot` target and setup.py's `aot` extra install them.
JAX_VERSION = "0.10.2"
GPU_COMPILER_PINS = (f"jax-cuda12-pjrt=={JAX_VERSION}", "nvidia-cuda-nvcc-cu12==12.9.86")
# The GPU compiler's XLA flags for every figure (docs/training.md says so): Triton's GEMM
# tiling fails on the paper model's bf16[12750,512] dots in a deviceless compile
# ("Couldn't find output tile sizes"), so cuBLAS GEMMs are used.
GPU_XLA_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip's published figures (per chip, as JAX sees one device)."""
  kind: str                  # jax's device_kind on this chip
  platform: str              # 'tpu' or 'cuda'
  memory: int                # bytes a program may use: libtpu's HBM, or the GPU's memory
  peak_bf16: float           # dense bf16 FLOP/s
  hbm_bandwidth: float       # bytes/s


# HBM as libtpu reports it in its out-of-memory errors (measured here: v5e 15.75G, v6e
# 31.25G, v5p 95.74G, v4 megacore 30.75G); peaks and bandwidths are the vendors' published
# per-chip figures (H100/H200: SXM, dense bf16 without sparsity).
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", "tpu", int(30.75 * GiB), 275e12, 1228e9),
    "v5e": Chip("TPU v5 lite", "tpu", int(15.75 * GiB), 197e12, 819e9),
    "v5p": Chip("TPU v5", "tpu", int(95.74 * GiB), 459e12, 2765e9),
    "v6e": Chip("TPU v6 lite", "tpu", int(31.25 * GiB), 918e12, 1640e9),
    "h100": Chip("NVIDIA H100 80GB HBM3", "cuda", 84_978_434_048, 989e12, 3.35e12),
    "h200": Chip("NVIDIA H200", "cuda", 150_754_820_096, 989e12, 4.8e12),
}

# GPU target descriptions (XLA's GpuTargetConfigProto) from the chips' published figures:
# the plugin ships none. Checked against a real H100's own description when a device is
# lent (bench/accelerator.py captures it).
_GPU_SPECS = {
    "h100": dict(core_count=132, clock_rate_ghz=1.98, memory_bandwidth=3_352_320_000_000,
                 l2_cache_size=50 * 2**20, device_memory_size=84_978_434_048,
                 name="NVIDIA H100 80GB HBM3"),
    "h200": dict(core_count=132, clock_rate_ghz=1.98, memory_bandwidth=4_800_000_000_000,
                 l2_cache_size=50 * 2**20, device_memory_size=150_754_820_096,
                 name="NVIDIA H200"),
}


def gpu_target_config(chip: str) -> str:
  """The text-format ``GpuTargetConfigProto`` of a Hopper GPU (sm_90) named in CHIPS."""
  s = _GPU_SPECS[chip]
  # Hopper's per-SM limits: 228 KiB shared memory (227 KiB opt-in per block), 64K registers,
  # 2048 threads, 128 FP32 lanes.
  return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: 233472
  shared_memory_per_block_optin: 232448
  threads_per_core_limit: 2048
  core_count: {s['core_count']}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {s['memory_bandwidth']}
  l2_cache_size: {s['l2_cache_size']}
  clock_rate_ghz: {s['clock_rate_ghz']}
  device_memory_size: {s['device_memory_size']}
  cuda_compute_capability {{ major: 9 minor: 0 }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
device_description_str: "{s['name']}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
  """A bookable slice: its chip, the topology string jax takes, and its size."""
  name: str
  chip: str                  # key of CHIPS
  topology: str              # get_topology_desc's topology(_name)
  chips: int                 # devices (chips) per slice, as JAX counts them
  hosts: int                 # hosts per slice
  chip_config_name: str | None = None
  chips_per_host_bounds: tuple[int, int, int] | None = None

  @property
  def platform(self) -> str:
    return CHIPS[self.chip].platform


def _tpu(name: str, chip: str, topo: str, chips: int, hosts: int, **kw: Any) -> Target:
  return Target(name, chip, f"{chip}:{topo}", chips, hosts, **kw)


# The one table of names. TPU hosts hold 4 chips (v4, v5p; v5e/v6e pods: 4 per host, 8 on
# the single-host v5e-8/v6e-8); GPU nodes hold 8.
TARGETS: dict[str, Target] = {t.name: t for t in [
    _tpu("v4-8", "v4", "2x2x1", 4, 1, chip_config_name="megacore"),
    _tpu("v4-32", "v4", "2x2x4", 16, 4, chip_config_name="megacore"),
    _tpu("v5e-1", "v5e", "1x1", 1, 1, chips_per_host_bounds=(1, 1, 1)),
    _tpu("v5e-4", "v5e", "2x2", 4, 1),
    _tpu("v5e-8", "v5e", "2x4", 8, 1),
    _tpu("v5e-16", "v5e", "4x4", 16, 4),
    _tpu("v5e-64", "v5e", "8x8", 64, 16),
    _tpu("v5e-256", "v5e", "16x16", 256, 64),
    _tpu("v5p-8", "v5p", "2x2x1", 4, 1),
    _tpu("v5p-32", "v5p", "2x2x4", 16, 4),
    _tpu("v5p-128", "v5p", "4x4x4", 64, 16),
    _tpu("v5p-256", "v5p", "4x4x8", 128, 32),
    _tpu("v6e-1", "v6e", "1x1", 1, 1, chips_per_host_bounds=(1, 1, 1)),
    _tpu("v6e-4", "v6e", "2x2", 4, 1),
    _tpu("v6e-8", "v6e", "2x4", 8, 1),
    _tpu("v6e-16", "v6e", "4x4", 16, 4),
    _tpu("v6e-256", "v6e", "16x16", 256, 64),
    Target("h100-1", "h100", "1x1x1", 1, 1),
    Target("h100-8", "h100", "1x1x8", 8, 1),
    Target("h100-16", "h100", "1x2x8", 16, 2),
    Target("h200-1", "h200", "1x1x1", 1, 1),
    Target("h200-8", "h200", "1x1x8", 8, 1),
    Target("h200-16", "h200", "1x2x8", 16, 2),
]}


def target(name: str) -> Target:
  """The :data:`TARGETS` entry for ``name``; a clear error listing the names otherwise."""
  key = name.strip().lower()
  if key not in TARGETS:
    raise ValueError(f"unknown target {name!r}; known: cpu, {', '.join(TARGETS)}")
  return TARGETS[key]


# ------------------------------------------------------------------ the compilers
def gpu_compiler_dir() -> pathlib.Path:
  """Where ``make aot`` puts the GPU compiler: $MODEFORMER_AOT_CUDA or <venv>/aot-cuda."""
  return pathlib.Path(os.environ.get("MODEFORMER_AOT_CUDA")
                      or pathlib.Path(sys.prefix) / "aot-cuda")


def _backends_started() -> bool:
  from jax._src import xla_bridge
  return bool(getattr(xla_bridge, "_backends", None))


def prepare(platforms: set[str]) -> None:
  """Turns on the compilers for ``platforms`` ('tpu', 'cuda') in this process.

  Must run before JAX starts a backend. JAX itself stays on the CPU: the targets' devices
  come from :func:`devices`, never from ``jax.devices()``.
  """
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "tpu" in platforms:
    import importlib.util
    if importlib.util.find_spec("libtpu") is None:
      raise CompilerMissing("the TPU compiler (libtpu) is not installed: run `make aot` "
                            f"(or pip install 'jax[tpu]=={JAX_VERSION}')")
    # libtpu takes a lockfile per process unless told not to: two planners may run at once.
    os.environ["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
    # Without these libtpu warns at load that it cannot find its (nonexistent) pod.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  if "cuda" in platforms:
    d = gpu_compiler_dir()
    if not (d / "jax_plugins" / "xla_cuda12").is_dir():
      raise CompilerMissing(f"the GPU compiler is not installed in {d}: run `make aot` "
                            f"(pip install --no-deps --target {d} "
                            f"{' '.join(GPU_COMPILER_PINS)})")
    if _backends_started() and str(d) not in sys.path:
      raise RuntimeError("aot.prepare({'cuda'}) must run before JAX starts a backend")
    if str(d) not in sys.path:
      sys.path.append(str(d))   # jax_plugins is a namespace package: found from here on
    ptxas_dir = d / "nvidia" / "cuda_nvcc"
    extra = list(GPU_XLA_FLAGS) + [f"--xla_gpu_cuda_data_dir={ptxas_dir}"]
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([flags] + [f for f in extra if f not in flags]).strip()
    if "jax" in sys.modules:
      import jax
      jax.config.update("jax_platforms", "cpu")


def devices(t: Target, num_slices: int = 1) -> list[Any]:
  """The target's devices (every chip of every host and slice), for a Mesh to compile on."""
  from jax.experimental import topologies
  if t.platform == "tpu":
    kw: dict[str, Any] = {}
    if t.chip_config_name:
      kw["chip_config_name"] = t.chip_config_name
    if t.chips_per_host_bounds:
      kw["chips_per_host_bounds"] = t.chips_per_host_bounds
    topo = topologies.get_topology_desc(topology_name=t.topology, platform="tpu",
                                        num_slices=num_slices, **kw)
  else:
    if num_slices != 1:
      raise ValueError("--num_slices is for TPU targets; name a GPU target with more hosts "
                       "(h100-16: 2 hosts of 8)")
    topo = topologies.get_topology_desc(platform="cuda",
                                        target_config=gpu_target_config(t.chip),
                                        topology=t.topology)
  devs = list(topo.devices)
  want = t.chips * num_slices
  if len(devs) != want:
    raise RuntimeError(f"{t.name}: the compiler described {len(devs)} devices, the table "
                       f"says {want}")
  return devs


# ------------------------------------------------------------------ what a program holds
# One instruction per line: `%name = <result type> op(operands), attributes`. The type may
# hold layouts with parentheses (TPU tiles, `{1,0:T(8,128)}`) and `/*index=5*/` comments.
_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?P<type>.*?)\s(?P<op>all-gather|all-reduce|"
    r"reduce-scatter|collective-permute|all-to-all|collective-broadcast|ragged-all-to-all)"
    r"(?P<start>-start)?\(", re.M)
_ARRAY = re.compile(r"(?P<dtype>pred|[subf]\d+|bf16|f8e\w+|c64|c128)\[(?P<dims>[\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}


def _arrays(text: str) -> list[tuple[str, tuple[int, ...], int]]:
  out = []
  for m in _ARRAY.finditer(text):
    dims = tuple(int(d) for d in m.group("dims").split(",") if d)
    n = 1
    for d in dims:
      n *= d
    out.append((m.group("dtype"), dims, n * _BYTES.get(m.group("dtype"), 1)))
  return out


def collectives(hlo_text: str) -> list[dict[str, Any]]:
  """Every collective in a compiled program's HLO: op, result arrays and their bytes.

  Asynchronous pairs count once (the ``-start``; its tuple holds the operands first, then
  the results, for all-gather and collective-permute). Counted statically: one per
  instruction in the program, which is one per step here (the step has no loops).
  """
  rows = []
  for m in _COLLECTIVE.finditer(hlo_text):
    arrays = _arrays(m.group("type"))
    if m.group("start") and m.group("op") in ("all-gather", "collective-permute") \
        and len(arrays) >= 2:
      arrays = arrays[len(arrays) // 2:]
    rows.append({"op": m.group("op"), "bytes": sum(a[2] for a in arrays),
                 "arrays": [f"{d}[{','.join(map(str, s))}]" for d, s, _ in arrays]})
  return rows


def collective_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per op: count, bytes, and the largest arrays it carries."""
  out: dict[str, dict[str, Any]] = {}
  for r in rows:
    s = out.setdefault(r["op"], {"count": 0, "bytes": 0, "largest": []})
    s["count"] += 1
    s["bytes"] += r["bytes"]
    arrays = r["arrays"]
    desc = (", ".join(arrays) if len(arrays) <= 3 else
            f"{len(arrays)} arrays ({', '.join(sorted({a.split('[')[0] for a in arrays}))}) "
            f"in one")
    s["largest"].append((r["bytes"], desc))
  for s in out.values():
    s["largest"] = [a for _, a in sorted(s["largest"], reverse=True)[:3]]
  return out


def _cost(obj: Any) -> dict[str, float]:
  try:
    cost = obj.cost_analysis()
  except Exception:  # noqa: BLE001 - some backends raise instead of returning None
    return {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost:
    return {}
  return {k: float(cost[k]) for k in ("flops", "bytes accessed", "optimal_seconds",
                                      "transcendentals") if k in cost}


def lowered_cost(lowered: Any) -> dict[str, float]:
  """XLA's HLO cost analysis of a lowered (pre-optimisation) module, run by the CPU client.

  For compilers that give none of their own (XLA:GPU deviceless). Inside ``shard_map`` the
  module already has per-device shapes, so flops are per chip. Bytes are those of the
  unfused module: an upper bound on what the fused program moves. Uses jaxlib's
  converter and cost analysis (private modules): {} where they are missing.
  """
  try:
    import jax
    from jax._src.lib import xla_client as xc
    comp = xc._xla.mlir.mlir_module_to_xla_computation(
        str(lowered.compiler_ir("stablehlo")), use_tuple_args=False, return_tuple=False)
    cost = xc._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client,
                                            comp.get_hlo_module())
  except Exception:  # noqa: BLE001
    return {}
  return {k: float(cost[k]) for k in ("flops", "bytes accessed", "transcendentals")
          if k in cost and cost[k] >= 0}


def analyse(compiled: Any, lowered: Any, chip: Chip | None,
            devices: int = 1) -> dict[str, Any]:
  """A compiled program's per-chip figures: memory, flops, estimated time, collectives.

  Memory from ``memory_analysis()``; peak = arguments + outputs - aliased + temporaries
  (+ generated code on TPU, which lives in HBM). Flops and bytes from the target
  compiler's ``cost_analysis()`` where it gives one (TPU); the GPU compiler gives none, so
  there they are XLA's HLO cost analysis of the lowered (per-device, pre-optimisation)
  module. Time: the compiler's ``optimal_seconds`` where positive, else a roofline
  max(flops / peak bf16, bytes / HBM bandwidth) where the bytes are the fused program's;
  where they are the unfused module's (GPU), flops at peak only, a lower bound, with the
  unfused bytes' time beside it as an upper bound. An estimate either way. ``devices``:
  for a program partitioned by jit (not shard_map, whose body is per chip already) the
  lowered module is the global one, so its counts are divided by the devices.
  """
  st = compiled.memory_analysis()
  code = int(getattr(st, "generated_code_size_in_bytes", 0) or 0)
  mem = {"argument": int(st.argument_size_in_bytes), "output": int(st.output_size_in_bytes),
         "alias": int(st.alias_size_in_bytes), "temp": int(st.temp_size_in_bytes),
         "code": code,
         # Arguments in the host memory beside the chip (the cached step's host_inputs).
         "host_argument": int(getattr(st, "host_argument_size_in_bytes", 0) or 0)}
  on_device_code = code if chip is not None and chip.platform == "tpu" else 0
  mem["peak"] = (mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
                 + on_device_code)
  cost = _cost(compiled)
  cost_from = "target compiler"
  fused = True
  if cost.get("flops", -1) < 0:
    cost = {k: v / devices for k, v in lowered_cost(lowered).items()}
    cost_from = "XLA's HLO cost analysis of the unoptimised module; bytes unfused"
    fused = False
  out: dict[str, Any] = {**mem, "flops": cost.get("flops"),
                         "bytes_accessed": cost.get("bytes accessed"), "cost_from": cost_from}
  opt = cost.get("optimal_seconds")
  if opt is not None and opt > 0:
    out["step_s_est"], out["step_s_from"] = opt, "compiler's optimal_seconds"
  elif chip is not None and out["flops"]:
    t_flops = out["flops"] / chip.peak_bf16
    t_mem = (out["bytes_accessed"] or 0) / chip.hbm_bandwidth
    out["step_s_compute"], out["step_s_memory"] = t_flops, t_mem
    if fused:
      out["step_s_est"] = max(t_flops, t_mem)
      out["step_s_from"] = (f"roofline: flops at the {chip.kind}'s peak bf16 "
                            f"{t_flops * 1e3:.1f} ms, bytes at its HBM bandwidth "
                            f"{t_mem * 1e3:.1f} ms")
    else:
      out["step_s_est"] = t_flops
      out["step_s_from"] = (f"flops at the {chip.kind}'s peak bf16: a lower bound; the "
                            f"unfused module's bytes at its HBM bandwidth would take "
                            f"{t_mem * 1e3:.0f} ms, an upper bound")
  try:
    text = compiled.as_text()
  except Exception:  # noqa: BLE001
    text = ""
  out["collectives"] = collective_summary(collectives(text or ""))
  return out


def is_oom(err: BaseException) -> bool:
  """The target compiler's own out-of-memory error (TPU: RESOURCE_EXHAUSTED ... HBM)."""
  text = str(err)
  return "RESOURCE_EXHAUSTED" in text or "exceeds available HBM" in text \
      or "Ran out of memory" in text


def oom_bytes(err: BaseException) -> int | None:
  """The program size the TPU compiler's out-of-memory message states, if it does."""
  m = (re.search(r"Used\s+([\d.]+)([GMK])\s+of\s+([\d.]+)([GMK])\s+hbm", str(err))
       or re.search(r"memory required for [\w ]+\(([\d.]+)([GMK])\)", str(err)))
  if not m:
    return None
  return int(float(m.group(1)) * {"G": GiB, "M": 2**20, "K": 2**10}[m.group(2)])


# ------------------------------------------------------------------ saved executables
# A saved step: this magic line, one line of JSON (format, signature, info), then the bytes
# of jax's serialized executable. The header is plain JSON, so a file is checked before its
# payload is handed to jax (whose deserializer unpickles it: load only files you made).
# The argument and result tree structures are not stored: the loading run derives them by
# tracing its own step, so nothing but the executable's bytes is deserialized.
FORMAT = "modeformer_jax.compiled/2"
_MAGIC = b"MODEFORMER_JAX_COMPILED\n"


def signature(*, devices: list[Any], step_config: Mapping[str, Any],
              batch_size: int, num_hard: int) -> dict[str, Any]:
  """What a compiled train step was made for; a run must match it exactly to use it.

  ``step_config`` is the plain-dict model/loss/optim config the step was traced with.
  """
  d0 = devices[0]
  blob = json.dumps(step_config, sort_keys=True, default=str).encode()
  return {"platform": d0.platform, "device_kind": d0.device_kind, "devices": len(devices),
          "processes": len({getattr(d, "process_index", 0) for d in devices}),
          "batch_size": int(batch_size), "num_hard": int(num_hard),
          "config_sha256": hashlib.sha256(blob).hexdigest()[:16]}


def save_compiled(path: str | os.PathLike, compiled: Any, sig: Mapping[str, Any],
                  info: Mapping[str, Any] | None = None) -> None:
  """Writes a serialized executable with the signature it was compiled for."""
  from jax.experimental import serialize_executable
  payload, _, _ = serialize_executable.serialize(compiled)
  header = json.dumps({"format": FORMAT, "signature": dict(sig), "info": dict(info or {})},
                      default=str)
  p = pathlib.Path(path)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.with_suffix(p.suffix + ".tmp")
  with open(tmp, "wb") as f:
    f.write(_MAGIC + header.encode() + b"\n" + bytes(payload))
  tmp.replace(p)


def read_compiled(path: str | os.PathLike) -> dict[str, Any]:
  """The saved record (signature, info, payload) with a clear error for other files."""
  try:
    data = pathlib.Path(path).read_bytes()
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such compiled step (write one with "
                            "`python -m modeformer_jax.plan ... --save_compiled`)") from None
  end = data.find(b"\n", len(_MAGIC))
  try:
    if not data.startswith(_MAGIC) or end < 0:
      raise ValueError("no header")
    rec = json.loads(data[len(_MAGIC):end])
  except ValueError as e:
    raise ValueError(f"{path}: not a saved compiled step ({e})") from None
  if not isinstance(rec, dict) or rec.get("format") != FORMAT:
    raise ValueError(f"{path}: not a saved compiled step (format "
                     f"{rec.get('format') if isinstance(rec, dict) else '?'}; expected "
                     f"{FORMAT})")
  rec["payload"] = data[end + 1:]
  return rec


def _leaf_diffs(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, Mapping) and isinstance(b, Mapping):
    out = []
    for k in sorted(set(a) | set(b), key=str):
      out += _leaf_diffs(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
    return out
  same = json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
  return [] if same else [f"{prefix}: compiled for {a!r}, this run has {b!r}"]


def check_signature(path: str | os.PathLike, saved: Mapping[str, Any],
                    here: Mapping[str, Any], saved_config: Mapping[str, Any] | None = None,
                    here_config: Mapping[str, Any] | None = None) -> None:
  """Raises :class:`CompiledMismatch` naming every field that differs (and, for the
  config, every setting, when both step configs are given)."""
  diffs = [f"{k}: compiled for {saved.get(k)!r}, this run has {here.get(k)!r}"
           for k in sorted(set(saved) | set(here))
           if saved.get(k) != here.get(k) and k != "config_sha256"]
  if saved.get("config_sha256") != here.get("config_sha256"):
    settings = (_leaf_diffs(saved_config, here_config)
                if saved_config is not None and here_config is not None else [])
    diffs += settings or ["the model/loss/optimizer settings differ (config_sha256)"]
  if diffs:
    raise CompiledMismatch(f"{path} cannot run here: " + "; ".join(diffs)
                           + ". Compile again for this run (plan --save_compiled).")


def load_compiled(path: str | os.PathLike, here: Mapping[str, Any],
                  step_config: Mapping[str, Any] | None, lower: Any) -> Any:
  """The saved executable, after checking it was compiled for ``here``'s signature
  (``step_config``: this run's settings, to name the ones that differ). ``lower()``: this
  run's own step lowered for the same shapes (called only once the signature matches),
  whose argument and result structures the executable takes and returns."""
  rec = read_compiled(path)
  check_signature(path, rec["signature"], here, rec["info"].get("step_config"), step_config)
  from jax.experimental import serialize_executable
  lowered = lower()
  return serialize_executable.deserialize_and_load(rec["payload"], lowered.in_tree,
                                                   lowered.out_tree)
