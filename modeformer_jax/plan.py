"""Memory planner: what the train step needs per chip, and the largest batch that fits.

  python -m modeformer_jax.plan --target v5p-8 --config configs/modeformer.py:paper \\
      --batch_sizes 2000 --num_hard 2 --nosearch
  python -m modeformer_jax.plan --target h100-8 --config configs/modeformer.py:paper \\
      --num_hard 2,11 --stages 2 --remat off
  python -m modeformer_jax.plan --target v5e-256 --num_slices 2 ...   # 512 chips, 2 slices
  python -m modeformer_jax.plan --target cpu --devices 8 --memory_per_device 80GiB ...

The real train step (``train_step.make_train_step``: shard_map, audio all-gather,
optimizer update, donated state) is lowered with abstract inputs (``jax.ShapeDtypeStruct``,
nothing is allocated or run) for the GLOBAL batch on a mesh of the target's devices and
compiled; ``compiled.memory_analysis()`` describes the per-chip program.

``--target NAME`` (a booking name: v4-8, v5e-4/16/256, v5p-8/128, v6e-256, h100-8, h200-8,
h100-16, ...; ``aot.TARGETS``) compiles with that target's own compiler on this machine,
no device needed (``make aot`` installs libtpu and the GPU compiler): libtpu's buffer
assignment per TPU chip, which refuses a program that does not fit HBM (reported as over,
never a crash), or XLA:GPU's for sm_90 (which compiles an over-budget program, so the
budget is compared here: by default 75% of the GPU's memory, JAX's preallocation). Each
row: memory (arguments, outputs, aliased, temporaries, generated code) against the chip,
flops per step, an estimated step time (the compiler's own where it gives one, else a
roofline: always an estimate), and the collectives in the compiled program. Named targets
default to bfloat16, and also compile the evaluation's embedding calls.

``--target cpu`` is the older estimate: XLA:CPU's buffer assignment for ``--devices``
simulated host devices (3D convolutions traced in the native form accelerators run,
``--conv3d_impl``). It over-states accelerator memory several times over (docs/training.md,
"What fits where": how far, and why); use a target compiler wherever one exists.
Each row also prints the bytes JAX saves for the backward pass (``residual_bytes``).

The search per (N_H, remat) brackets the largest fitting B (a multiple of ``--multiple``
times the device count) with interpolation on the measured peak, which is close to linear
in B, guarded by bisection; typically 4-6 compiles each. A paper-model compile takes about
6 minutes for a TPU target and 40 s for a GPU target on 2 cores.
``--save_compiled PATH`` writes the compiled step with what it was made for;
``python -m modeformer_jax.train --compiled PATH`` runs it on a matching target only.

One module (600-odd lines): the command, the search for the largest batch and the tables
it prints belong together; compiling for a target is ``training.aot``.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from absl import flags

from modeformer_jax import errors

MAX_BATCH = 1 << 20          # the search's default ceiling on the global batch
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
  """``'80GiB'``, ``'16GB'``, ``'512MiB'`` or a plain byte count -> bytes."""
  m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
  if not m or m.group(2).lower() not in _UNITS:
    raise ValueError(f"cannot parse memory size {text!r}; use e.g. 80GiB, 16GB, 512MiB")
  return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _ints(text: str) -> list[int]:
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"expected a comma-separated list of integers, got {text!r}") from None


def _as_dict(cfg: Any) -> dict[str, Any]:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


_FORM_LOCK = threading.RLock()


@contextlib.contextmanager
def conv3d_form(impl: str) -> Iterator[None]:
  """Models traced inside use ``impl`` for their 3D convolutions (``models.CONV3D_IMPL``:
  'native', the one form every accelerator runs; 'auto', the current backend's own; '2d').

  The form is a module global read at trace time, so this holds a lock: two planners never
  trace with different forms at once. Code that traces a model outside it while another
  thread is inside may see the switched form (the same function, another speed).
  """
  from modeformer_jax.model import models
  with _FORM_LOCK:
    old, models.CONV3D_IMPL = models.CONV3D_IMPL, impl
    try:
      yield
    finally:
      models.CONV3D_IMPL = old


def residual_bytes(model: Any, per_device: int, windows: int) -> int:
  """Bytes the backward pass keeps from one device's forward pass, counted by JAX.

  These are the leaves of the ``jax.vjp`` closure of both towers on the per-device batch
  (``per_device`` videos, ``per_device * windows`` mel windows), parameters included.
  Unlike XLA's buffer assignment this does not depend on the backend, so it shows what
  rematerialisation saves even where a backend's scheduler does not realise it.
  """
  import jax
  import jax.numpy as jnp

  from modeformer_jax.model.models import NUM_MEL
  from modeformer_jax.model.windows import MEL_WINDOW
  variables = jax.eval_shape(model.init_variables, jax.random.key(0))
  stats = variables.get("batch_stats", {})
  video = jax.ShapeDtypeStruct((per_device, *model.video_shape), jnp.uint8)
  audio = jax.ShapeDtypeStruct((per_device * windows, NUM_MEL, MEL_WINDOW), jnp.float32)

  def towers(params, video, audio):
    rv, ra = jax.random.split(jax.random.key(0))
    v, _ = model.apply_video(params["video"], video, train=True, rng=rv,
                             batch_stats=stats.get("video"))
    a, _ = model.apply_audio(params["audio"], audio, train=True, rng=ra,
                             batch_stats=stats.get("audio"))
    return jnp.sum(v) + jnp.sum(a)

  # The uint8 video is not differentiable; the vjp closes over it.
  def residuals(params, video_in, audio_in):
    return jax.vjp(lambda p, x: towers(p, video_in, x), params, audio_in)[1]

  leaves = jax.tree.leaves(jax.eval_shape(residuals, variables["params"], video, audio))
  return int(sum(x.size * x.dtype.itemsize for x in leaves))


class Planner:
  """Compiles the train step for (B, N_H, remat) and caches the figures.

  ``config`` is a ConfigDict or a plain dict with ``model`` (a model config mapping) and
  optionally ``loss`` and ``optim``, as in ``config_utils.training_config``. The devices of
  ``mesh`` decide the compiler: simulated CPU devices (an estimate), or a target's devices
  from ``aot.devices`` (the TPU or GPU compiler itself; pass its ``chip`` for the roofline
  and capacity). ``compiler_options`` are passed to every ``compile``. ``conv3d`` is the
  form 3D convolutions are traced in (``conv3d_form``): 'native', the form accelerators
  run; 'auto' for the program this backend itself runs. ``easy_negatives`` overrides the
  loss config's (False: stage 1; True: stage 2).
  """

  def __init__(self, config: Any, mesh: Any, model_overrides: dict | None = None,
               compiler_options: dict | None = None, conv3d: str = "auto",
               chip: Any = None, easy_negatives: bool | None = None):
    import jax

    from modeformer_jax.training import mesh as mesh_lib, train_step
    self.jax, self.ts, self.mesh_lib = jax, train_step, mesh_lib
    self.config, self.mesh = config, mesh
    self.n = mesh.shape[mesh_lib.AXIS]
    self.model_overrides = dict(model_overrides or {})
    self.compiler_options = compiler_options
    self.conv3d = conv3d
    self.chip = chip
    self.loss_cfg = _as_dict(config.get("loss", None) or {})
    if easy_negatives is not None:
      self.loss_cfg["easy_negatives"] = bool(easy_negatives)
    self.optim_cfg = _as_dict(config.get("optim", None) or {})
    if self.optim_cfg and not self.optim_cfg.get("total_steps") and config.get("total_steps"):
      # As train.py builds it: the cosine schedule's length is part of the program.
      self.optim_cfg["total_steps"] = int(config.get("total_steps"))
    self.tx, _ = train_step.make_optimizer(self.optim_cfg)
    opts = train_step.step_options(config)
    self.microbatch, self.host_inputs = opts["microbatch"], opts["host_inputs"]
    self.host_note = ""
    if self.host_inputs and mesh_lib.batch_sharding(mesh, "pinned_host").memory_kind is None:
      # JAX drops the memory kind on devices that describe no memories: the GPU compiler's
      # deviceless devices do (a real GPU has pinned host memory; libtpu's describe it).
      self.host_inputs = False
      self.host_note = ("these devices describe no host memory, so the batch is compiled "
                        "on the chip: its bytes are counted in the peak (an upper bound)")
    self.cache: dict[tuple[int, int, bool], dict[str, Any]] = {}

  def model(self, remat: bool) -> Any:
    """The ``ModEFormer`` the step is compiled for (config's model + overrides + remat)."""
    from modeformer_jax.model.models import ModEFormer, ModelConfig
    return ModEFormer(ModelConfig.from_mapping(self.model_config(remat)))

  def model_config(self, remat: bool) -> dict[str, Any]:
    mcfg = _as_dict(self.config["model"])
    mcfg.update(self.model_overrides, remat=remat)
    return mcfg

  def step_config(self, remat: bool) -> dict[str, Any]:
    """The plain-dict settings the step is traced with (a saved executable's signature)."""
    # Not the 3D-convolution form: it changes the program, not what the step computes.
    return {"model": self.model_config(remat), "loss": self.loss_cfg,
            "optim": self.optim_cfg, "microbatch": self.microbatch,
            "host_inputs": self.host_inputs}

  def lower(self, batch_size: int, num_hard: int, remat: bool) -> Any:
    """The step lowered for abstract inputs of the global batch on this mesh."""
    jax, ts = self.jax, self.ts
    self.mesh_lib.check_batch_size(batch_size, self.mesh, process_count=1)
    model = self.model(remat)
    rep = self.mesh_lib.replicated(self.mesh)
    state = jax.eval_shape(lambda r: ts.create_train_state(model, self.tx, r, self.loss_cfg),
                           jax.random.key(0))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    batch = ts.abstract_batch(batch_size, num_hard, self.mesh, model.config.video_channels,
                              host_inputs=self.host_inputs)
    step = ts.make_train_step(model, self.tx, self.mesh, self.loss_cfg,
                              microbatch=self.microbatch, host_inputs=self.host_inputs)
    with conv3d_form(self.conv3d):
      return step.lower(state, batch, rng)

  def compile(self, batch_size: int, num_hard: int, remat: bool) -> tuple[Any, dict[str, Any]]:
    """Lowers + compiles one step; returns ``(compiled, figures)`` and caches the figures.

    The executable takes a state and batch with the shapes and shardings of
    ``train_step.create_train_state`` / ``abstract_batch`` on this mesh, so a caller on the
    target platform can run exactly what was measured. A target compiler's own
    out-of-memory error raises (``aot.is_oom``); :meth:`measure` turns it into an 'over' row.
    """
    from modeformer_jax.training import aot
    t0 = time.perf_counter()
    lowered = self.lower(batch_size, num_hard, remat)
    with conv3d_form(self.conv3d):
      # The cached step keeps one chunk's residuals at a time.
      rows = min(self.microbatch, batch_size // self.n) if self.microbatch else (
          batch_size // self.n)
      residuals = residual_bytes(self.model(remat), rows, 1 + num_hard)
    compiled = lowered.compile(self.compiler_options)
    figures = aot.analyse(compiled, lowered, self.chip)
    if self.host_inputs and self.mesh.devices.flat[0].platform == "cpu":
      # XLA:CPU has one memory and counts pinned-host arguments with the rest; an
      # accelerator's compiler reports them apart (host_argument), so take them out here.
      host = sum(math.prod(x.shape) * x.dtype.itemsize
                 for k, x in self.ts.abstract_batch(batch_size, num_hard,
                                                    host_inputs=True).items()
                 if k in self.mesh_lib.HOST_INPUT_KEYS) // self.n
      figures.update(argument=figures["argument"] - host, peak=figures["peak"] - host,
                     host_argument=host)
    out = {"B": batch_size, "N_H": num_hard, "remat": remat,
           "stage": 2 if self.loss_cfg.get("easy_negatives", True) else 1,
           "per_device": batch_size // self.n, "microbatch": self.microbatch, **figures,
           "compile_s": time.perf_counter() - t0, "residuals": residuals}
    self.cache[(batch_size, num_hard, remat)] = out
    return compiled, out

  def measure(self, batch_size: int, num_hard: int, remat: bool) -> dict[str, Any]:
    """Lowers + compiles (never runs) one step; returns its figures (cached).

    A target compiler that refuses the program for want of memory gives a row with
    ``over_compiler`` set (and ``peak`` from its message where it states one).
    """
    from modeformer_jax.training import aot
    key = (batch_size, num_hard, remat)
    if key not in self.cache:
      t0 = time.perf_counter()
      try:
        self.compile(batch_size, num_hard, remat)
      except Exception as e:  # noqa: BLE001 - only the compiler's own OOM is a result
        if not aot.is_oom(e):
          raise
        self.cache[key] = {"B": batch_size, "N_H": num_hard, "remat": remat,
                           "stage": 2 if self.loss_cfg.get("easy_negatives", True) else 1,
                           "per_device": batch_size // self.n, "peak": aot.oom_bytes(e),
                           "over_compiler": str(e).strip().splitlines()[0][:300],
                           "compile_s": time.perf_counter() - t0}
    return self.cache[key]

  def largest_batch(self, num_hard: int, remat: bool, budget: int, multiple: int = 8,
                    max_batch: int = MAX_BATCH,
                    log: Callable[[str], None] = print,
                    guess: int | None = None) -> dict[str, Any] | None:
    """Largest global B (a multiple of ``multiple * devices``) whose peak fits ``budget``.

    Returns the measurement of that B (``_row``'s fields: ``'B'``, ``'peak'``, ...), or
    None when not even ``multiple * devices`` fits. ``guess`` (a predicted answer) starts
    the bracket there instead of at the smallest batch: fewer compiles when it is close.
    """
    g = multiple * self.n
    top = max(g, max_batch // g * g)
    if guess is not None and guess >= 2 * g:
      first = self.measure(min(top, guess // g * g), num_hard, remat)
      log(_row(first, budget))
      if fits(first, budget):
        lo, hi_b = first, min(top, first["B"] + g)
      else:
        hi = first
        lo = self.measure(max(g, int(first["B"] * 0.9) // g * g), num_hard, remat)
        log(_row(lo, budget))
        while not fits(lo, budget) and lo["B"] > g:
          hi = lo
          lo = self.measure(max(g, int(lo["B"] * 0.7) // g * g), num_hard, remat)
          log(_row(lo, budget))
        if not fits(lo, budget):
          return None
        hi_b = hi["B"]
    else:
      lo = self.measure(g, num_hard, remat)
      log(_row(lo, budget))
      if not fits(lo, budget):
        return None
      hi_b = min(top, 8 * g)
    hi = self.measure(hi_b, num_hard, remat)
    log(_row(hi, budget))
    if hi_b == lo["B"]:
      return lo
    base = lo
    # Grow the upper bracket along the measured slope until it no longer fits.
    while fits(hi, budget):
      if hi["B"] >= top:
        return hi
      lo = hi
      slope = max((hi["peak"] - base["peak"]) / max(hi["B"] - base["B"], 1), 1.0)
      guess = hi["B"] + (budget - hi["peak"]) / slope
      nxt = min(top, max(hi["B"] + g, int(guess * 1.05) // g * g + g))
      hi = self.measure(nxt, num_hard, remat)
      log(_row(hi, budget))
    # lo fits, hi does not: interpolate, never closer than one step to a bracket end.
    while hi["B"] - lo["B"] > g:
      if hi.get("peak") is not None:
        frac = (budget - lo["peak"]) / max(hi["peak"] - lo["peak"], 1)
        mid = int(lo["B"] + frac * (hi["B"] - lo["B"])) // g * g
      else:   # the compiler refused without saying how much: bisect
        mid = 0
      if mid <= lo["B"] or mid >= hi["B"]:
        mid = (lo["B"] + hi["B"]) // 2 // g * g
      # Probe just past the prediction as well as at it, so a good guess closes the bracket.
      r = self.measure(mid, num_hard, remat)
      log(_row(r, budget))
      if fits(r, budget):
        lo = r
        if mid + g < hi["B"]:
          r2 = self.measure(mid + g, num_hard, remat)
          log(_row(r2, budget))
          lo, hi = (r2, hi) if fits(r2, budget) else (lo, r2)
      else:
        hi = r
    return lo


def fits(r: dict[str, Any], budget: int) -> bool:
  """A row fits when the compiler accepted it and its peak is within ``budget``."""
  return not r.get("over_compiler") and r.get("peak") is not None and r["peak"] <= budget


def _gib(x: float) -> str:
  return f"{x / 2**30:8.3f}"


def _num(x: float | None, unit: str = "") -> str:
  if x is None:
    return "?"
  for div, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.2f} {prefix}{unit}"
  return f"{x:.0f} {unit}".strip()


def _row(r: dict[str, Any], budget: int | None = None) -> str:
  """One line per compile: the peak against the budget (the CPU estimate's row)."""
  mark = "" if budget is None else ("  fits" if fits(r, budget) else "  over")
  head = (f"  B={r['B']:>7} N_H={r['N_H']:>3} remat={'on ' if r['remat'] else 'off'} "
          f"per-device={r['per_device']:>6}  ")
  if r.get("over_compiler"):
    stated = f" (it states {_gib(r['peak']).strip()} GiB)" if r.get("peak") else ""
    return head + f"out of memory: the compiler refused it{stated}{mark}"
  return head + (f"peak GiB {_gib(r['peak'])} "
                 f"(temp {_gib(r['temp'])}, args {_gib(r['argument'])}; jax residuals "
                 f"{_gib(r['residuals'])}"
                 + (f"; batch in host memory {_gib(r['host_argument']).strip()}"
                    if r.get("host_argument") else "")
                 + f")  compile {r['compile_s']:5.1f}s{mark}")


def describe(r: dict[str, Any], budget: int, chips: int) -> str:
  """A target compiler's row: memory parts, fits/over, flops, estimated time, collectives."""
  lines = [_row(r, budget)]
  if r.get("over_compiler"):
    lines.append(f"      compiler: {r['over_compiler']}")
    return "\n".join(lines)
  g = lambda k: _gib(r[k]).strip()  # noqa: E731
  lines.append(f"      memory per chip (GiB): arguments {g('argument')}, outputs {g('output')}, "
               f"aliased {g('alias')}, temporaries {g('temp')}, generated code {g('code')}; "
               f"peak {g('peak')} of {_gib(budget).strip()} ({100 * r['peak'] / budget:.0f}%)")
  step = r.get("step_s_est")
  lines.append(f"      flops per chip per step {_num(r.get('flops'), 'FLOP')} "
               f"({r.get('cost_from')}); estimated step "
               + (f"{step:.3f} s ({r['step_s_from']}), an estimate, not a measurement"
                  if step else "time unknown"))
  coll = r.get("collectives") or {}
  if coll:
    parts = [f"{op} x{c['count']} ({_num(c['bytes'], 'B')}; largest {c['largest'][0]})"
             for op, c in sorted(coll.items())]
    lines.append("      collectives per step: " + "; ".join(parts))
  else:
    lines.append("      collectives per step: none" + (" (one chip)" if chips == 1 else ""))
  return "\n".join(lines)


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("target", "cpu", "What to compile for: a booking name (v4-8, v5e-4, "
                      "v5e-16, v5e-256, v5p-8, v5p-128, v6e-256, h100-8, h200-8, h100-16, ...; "
                      "the target's own compiler, no device needed), 'cpu' (XLA:CPU's "
                      "estimate for --devices simulated devices) or 'local' (this machine's "
                      "own devices).", flag_values=fv)
  flags.DEFINE_integer("devices", None, "Devices on the mesh's data axis (--target cpu or "
                       "local, default 1; a named target has its own count).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("num_slices", 1, "TPU multi-slice: this many slices of --target.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("memory_per_device", "", "Memory budget per device, e.g. 16GiB. "
                      "Default: the target chip's memory (GPUs: times "
                      "--gpu_memory_fraction); 80GiB for cpu.", flag_values=fv)
  flags.register_validator("memory_per_device", lambda t: not t or _is_bytes(t),
                           "not a size like 80GiB or 16GB", flag_values=fv)
  flags.DEFINE_float("gpu_memory_fraction", 0.75, "Share of a GPU's memory JAX may use "
                     "(its default preallocation, XLA_PYTHON_CLIENT_MEM_FRACTION).",
                     flag_values=fv)
  flags.DEFINE_string("batch_sizes", "", "Global batches for a table of peaks (comma list); "
                      "empty = none.", flag_values=fv)
  flags.DEFINE_string("num_hard", "", "N_H values (comma list); default: config.num_hard, "
                      "else 2,5,11.", flag_values=fv)
  flags.DEFINE_string("stages", "", "Loss forms (comma list): 1 = hard negatives only, 2 = "
                      "plus the gathered easy negatives. Default: the config's own stage, "
                      "or both when the config has no loss.", flag_values=fv)
  flags.DEFINE_enum("remat", "both", ["both", "on", "off"], "Rematerialisation settings to try.",
                    flag_values=fv)
  flags.DEFINE_string("model", "", "Override the model variant (e.g. micro).", flag_values=fv)
  flags.DEFINE_string("dtype", "", "Override the compute dtype (e.g. bfloat16). Named "
                      "targets default to bfloat16.", flag_values=fv)
  flags.DEFINE_integer("multiple", 8, "Search granularity: per-device batch is a multiple of "
                       "this.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_batch", MAX_BATCH, "Largest global batch the search considers.",
                       flag_values=fv)
  flags.DEFINE_enum("conv3d_impl", "native", ["native", "auto"], "3D-convolution form the "
                    "step is traced in: native, the one every accelerator runs; auto, the "
                    "CPU backend's own per-layer forms (what a CPU run executes).",
                    flag_values=fv)
  flags.DEFINE_bool("search", True, "Search for the largest batch that fits (--nosearch: "
                    "print only the table of the given batch sizes).", flag_values=fv)
  flags.DEFINE_bool("eval", True, "Also compile the evaluation's embedding of --eval_chunk "
                    "windows per chip (named targets).", flag_values=fv)
  flags.DEFINE_integer("eval_chunk", 256, "Windows per chip in one evaluation embedding call.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("save_compiled", "", "Write the compiled step (one stage, batch, N_H "
                      "and remat) with what it was compiled for; `train --compiled` runs it.",
                      flag_values=fv)
  flags.DEFINE_string("json", "", "Also write every row as JSON to this path.", flag_values=fv)


def _is_bytes(text: str) -> bool:
  try:
    parse_bytes(text)
  except ValueError:
    return False
  return True


def compile_eval(model: Any, mesh: Any, chunk_per_chip: int, chip: Any,
                 conv3d: str = "native") -> dict[str, dict[str, Any]]:
  """The evaluation's two embedding programs (``embedding.Embedder``: video windows and
  audio windows, sharded on the mesh) compiled for ``mesh``'s devices; figures per tower."""
  import jax
  import jax.numpy as jnp

  from modeformer_jax.model.models import NUM_MEL
  from modeformer_jax.model.windows import MEL_WINDOW
  from modeformer_jax.training import aot, mesh as mesh_lib
  n = mesh.shape[mesh_lib.AXIS]
  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  params = jax.eval_shape(model.init_variables, jax.random.key(0))["params"]
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), params)
  inputs = {"video": ((n * chunk_per_chip, *model.video_shape), jnp.uint8, model.embed_video),
            "audio": ((n * chunk_per_chip, NUM_MEL, MEL_WINDOW), jnp.float32,
                      model.embed_audio)}
  out = {}
  for name, (shape, dtype, fn) in inputs.items():
    t0 = time.perf_counter()
    x = jax.ShapeDtypeStruct(shape, dtype, sharding=data)
    with conv3d_form(conv3d):
      lowered = jax.jit(fn, in_shardings=(rep, data), out_shardings=data).lower(params, x)
    compiled = lowered.compile()
    r = aot.analyse(compiled, lowered, chip, devices=n)   # jit-partitioned: global module
    r["windows_per_chip"] = chunk_per_chip
    r["compile_s"] = time.perf_counter() - t0
    if r.get("step_s_est"):
      r["windows_per_s_est"] = n * chunk_per_chip / r["step_s_est"]
    out[name] = r
  return out


def _stages(args: Any, config: Any) -> list[int]:
  if args.stages:
    st = _ints(args.stages)
    if not st or set(st) - {1, 2}:
      raise ValueError(f"--stages takes 1 and/or 2, got {args.stages!r}")
    return st
  if "loss" in config:
    return [2 if config.loss.get("easy_negatives", True) else 1]
  return [1, 2]


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point (``argv`` without the program name); returns a process exit code."""
  # Here, not at the top: the Planner itself needs no ml_collections (bench/accelerator.py
  # runs it where ml_collections is not installed).
  from modeformer_jax.training import aot, config_utils
  args = config_utils.parse_flags(argv, __doc__, _define_flags)
  name = args.target.strip().lower()
  tgt = None if name in ("cpu", "local") else aot.target(name)  # raises on an unknown name
  if tgt is None and args.devices is None:
    args.devices = 1
  if tgt is not None and args.devices not in (None, tgt.chips * args.num_slices):
    raise SystemExit(f"--target {tgt.name} has {tgt.chips * args.num_slices} chips; "
                     f"drop --devices {args.devices}")
  if tgt is None and args.num_slices != 1:
    raise SystemExit("--num_slices is for TPU targets")
  if tgt is not None:
    from modeformer_jax import native_log
    # The compilers' native start-up lines (no CUDA driver here, by design) stay off stderr;
    # MODEFORMER_VERBOSE=1 shows them.
    native_log.silence()
    try:
      aot.prepare({tgt.platform})   # before JAX starts a backend
    except errors.CompilerMissing as e:
      raise SystemExit(f"plan: {e}") from None
    if tgt.platform == "tpu":
      import os
      os.environ.setdefault("TPU_ACCELERATOR_TYPE", tgt.name)

  import jax  # imported late: the CPU device count must be set before the backend starts
  if name == "cpu":
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)
  if tgt is not None:
    devices, chip = aot.devices(tgt, args.num_slices), aot.CHIPS[tgt.chip]
  else:
    devices, chip = jax.devices(), None
    if len(devices) < args.devices:
      raise SystemExit(f"--devices {args.devices} but only {len(devices)} "
                       f"{devices[0].platform} devices exist here; --target cpu simulates "
                       "them")
    devices = devices[:args.devices]
  n = len(devices)
  if args.memory_per_device:
    budget = parse_bytes(args.memory_per_device)
    budget_from = "--memory_per_device"
  elif chip is not None:
    frac = args.gpu_memory_fraction if chip.platform == "cuda" else 1.0
    budget = int(chip.memory * frac)
    budget_from = (f"{chip.kind}'s HBM as libtpu reports it" if chip.platform == "tpu" else
                   f"{frac:.0%} of the {chip.kind}'s {_gib(chip.memory).strip()} GiB "
                   "(--gpu_memory_fraction)")
  else:
    budget, budget_from = parse_bytes("80GiB"), "default"
  from modeformer_jax.model import models
  from modeformer_jax.training import mesh as mesh_lib

  config = args.config
  overrides: dict[str, Any] = {}
  if args.model:
    overrides.update(models.model_config(args.model).to_dict())  # raises if unknown
    overrides["dtype"] = config.model.get("dtype", "float32")
  if args.dtype:
    overrides["dtype"] = args.dtype
  elif tgt is not None:
    overrides["dtype"] = "bfloat16"
  num_hard = _ints(args.num_hard) if args.num_hard else (
      [int(config.num_hard)] if "num_hard" in config else [2, 5, 11])
  remats = {"both": [False, True], "on": [True], "off": [False]}[args.remat]
  stages = _stages(args, config)
  if args.save_compiled:
    if args.remat == "both":
      remats = [bool(config.model.get("remat", False))]
    sizes = _ints(args.batch_sizes) if args.batch_sizes else (
        [int(config.batch_size)] if "batch_size" in config else [])
    if len(sizes) != 1 or len(num_hard) != 1 or len(stages) != 1 or args.search:
      raise SystemExit("--save_compiled writes one step: give one --batch_sizes, one "
                       "--num_hard, one stage (--stages or the config's) and --nosearch")
    args.batch_sizes = str(sizes[0])
  mesh = mesh_lib.make_mesh(devices)
  conv3d = args.conv3d_impl if tgt is None else "native"   # 'auto' would be the CPU's forms
  planners = {st: Planner(config, mesh, overrides, conv3d=conv3d, chip=chip,
                          easy_negatives=(st == 2)) for st in stages}
  model_desc = dict(_as_dict(config.model), **overrides)
  where = (f"{tgt.name}{f' x {args.num_slices} slices' if args.num_slices > 1 else ''}: "
           f"{n} x {devices[0].device_kind}, {tgt.hosts * args.num_slices} hosts"
           if tgt is not None else f"{n} x {devices[0].device_kind} ({name})")
  print(f"planner: {config_utils.describe(args)}{' model=' + args.model if args.model else ''} "
        f"dtype={model_desc.get('dtype')} on {where}; budget {_gib(budget).strip()} GiB per "
        f"device ({budget_from}); stages {','.join(map(str, stages))}"
        + (f"; cached two-pass step, microbatch {planners[stages[0]].microbatch} entries per "
           "device" if planners[stages[0]].microbatch else "")
        + ("; lips and mel in host memory" if planners[stages[0]].host_inputs else ""))
  if planners[stages[0]].host_note:
    print(f"host_inputs: {planners[stages[0]].host_note}")
  if tgt is not None:
    comp = "the TPU compiler (libtpu)" if tgt.platform == "tpu" else (
        "the GPU compiler (XLA:GPU, sm_90; flags " + " ".join(aot.GPU_XLA_FLAGS) + ")")
    print(f"compiled by {comp} for {tgt.name}, not run: memory is that compiler's buffer "
          "assignment per chip; step times are estimates")
  elif name == "cpu":
    print(f"estimates are CPU-derived: XLA:CPU's buffer assignment for simulated devices "
          f"(3D convolutions in the {args.conv3d_impl} form), not an accelerator's own; "
          "--target NAME compiles with the target's own compiler (docs/training.md: "
          "'What fits where' says which to trust)")
  sys.stdout.flush()

  rows: list[dict[str, Any]] = []
  show = (lambda r: describe(r, budget, n)) if tgt is not None else (  # noqa: E731
      lambda r: _row(r, budget))
  if args.batch_sizes and not args.save_compiled:
    print("table (peak bytes per device from compiled.memory_analysis()):")
    for st in stages:
      print(f" stage {st}:", flush=True)
      for h in num_hard:
        for remat in remats:
          for b in _ints(args.batch_sizes):
            r = planners[st].measure(b, h, remat)
            rows.append(r)
            print(show(r), flush=True)
  if args.save_compiled:
    st, h, remat, b = stages[0], num_hard[0], remats[0], int(args.batch_sizes)
    pl = planners[st]
    compiled, r = pl.compile(b, h, remat)
    rows.append(r)
    print(f" stage {st}:\n{show(r)}", flush=True)
    sig = aot.signature(devices=devices, step_config=pl.step_config(remat), batch_size=b,
                        num_hard=h)
    aot.save_compiled(args.save_compiled, compiled, sig,
                      {"target": tgt.name if tgt else name, "stage": st, "remat": remat,
                       "jax": jax.__version__,
                       "step_config": json.loads(json.dumps(pl.step_config(remat),
                                                            default=str))})
    print(f"saved the compiled step to {args.save_compiled} ({sig['devices']} x "
          f"{sig['device_kind']}, B={b}, N_H={h}, stage {st}); "
          + ("`python -m modeformer_jax.train --compiled` runs it on a matching target only"
             if tgt is not None else "`python -m modeformer_jax.train --compiled` runs it"))
  if args.search:
    results = []
    for st in stages:
      for h in num_hard:
        for remat in remats:
          print(f"search stage {st} N_H={h} remat={'on' if remat else 'off'}:", flush=True)
          best = planners[st].largest_batch(h, remat, budget, args.multiple, args.max_batch,
                                            log=lambda s: print(s, flush=True))
          results.append((st, h, remat, best))
    print(f"largest global batch that fits {_gib(budget).strip()} GiB per device on "
          f"{n} devices (granularity {args.multiple * n}):")
    for st, h, remat, best in results:
      if best is None:
        print(f"  stage {st} N_H={h:>3} remat={'on ' if remat else 'off'}: none (even "
              f"{args.multiple * n} does not fit)")
      else:
        print(f"  stage {st} N_H={h:>3} remat={'on ' if remat else 'off'}: B={best['B']:>7} "
              f"({best['per_device']} per device, peak {_gib(best['peak']).strip()} GiB, "
              f"{best['B'] * (1 + h)} audio windows per step)")
    rows.extend(r for pl in planners.values() for r in pl.cache.values() if r not in rows)
  evals = None
  if tgt is not None and args.eval:
    pl = next(iter(planners.values()))
    evals = compile_eval(pl.model(False), mesh, args.eval_chunk, chip)
    for tower, r in evals.items():
      est = r.get("windows_per_s_est")
      print(f"eval ({tower} tower, {args.eval_chunk} windows per chip per call): peak "
            f"{_gib(r['peak']).strip()} GiB per chip, {_num(r.get('flops'), 'FLOP')} per "
            "chip per call" + (f", estimated {est:,.0f} windows/s on {n} chips ("
                               f"{r['step_s_from']})" if est else ""), flush=True)
  if name == "cpu" and True in remats:
    print("note: XLA's CPU backend does not realise rematerialisation's saving in its buffer "
          "assignment (measured: remat-on peaks are not lower); the 'jax residuals' column "
          "shows what remat saves. --target NAME gives the target compiler's own peaks.")
  total = [r for pl in planners.values() for r in pl.cache.values()]
  print(f"{len(total)} compiles, {sum(r['compile_s'] for r in total):.0f} s compiling")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"target": tgt.name if tgt else name, "devices": n,
                 "device_kind": devices[0].device_kind, "budget": budget,
                 "dtype": model_desc.get("dtype"), "rows": rows, "eval": evals}, f, indent=1,
                default=str)
  return 0


if __name__ == "__main__":
  sys.exit(main())
