"""Memory planner: the largest global batch per hard-negative count that fits a device.

  python -m modeformer_jax.plan --config configs/modeformer.py:paper --devices 8 \\
      --memory_per_device 80GiB
  python -m modeformer_jax.plan --config configs/lrs.py:stage=2 --devices 64 \\
      --memory_per_device 16GiB --num_hard 2,5,11 --batch_sizes 512,1024,2048 --remat off

Approach: the real train step (``train_step.make_train_step``: shard_map, audio all-gather,
optimizer update, donated state) is lowered with abstract inputs (``jax.ShapeDtypeStruct``,
nothing is allocated or run) for the GLOBAL batch on a mesh of ``--devices`` devices and
compiled; ``compiled.memory_analysis()`` describes the per-device program. On CPU the
devices are simulated host devices (``jax_num_cpu_devices``), so the per-device program is
exactly the one a pod runs, gathered audio ``[B*A, D]`` and logits ``[B/n, B*A]`` included;
compile time hardly depends on the device count. Peak bytes per device are
``argument + output - alias + temp``: the donated state's buffers are reused for the new
state, so aliased bytes count once.

Caveat: the numbers are XLA's buffer assignment for the platform that compiled them. By
default (``--platform cpu``) that is XLA:CPU, so every figure is CPU-derived: an estimate
for an accelerator, never its own measurement. 3D convolutions are traced in the native
form (``--conv3d_impl``): the one every accelerator runs, where XLA:CPU would pick other
per-layer forms whose gradients keep more memory (paper model, B = 2000, N_H = 2: 149.3 GiB
in the CPU's forms against 113.5 native). The CPU backend fuses and schedules differently; in particular its buffer assignment does not show rematerialisation's saving
(measured on the paper model: remat-on peaks come out slightly HIGHER, while the backward
pass's saved residuals drop from 1.30 to 0.49 GiB at 32 per device). Each row therefore
also prints the bytes JAX saves for the backward pass (``residual_bytes``), which is
backend-independent. Run the planner on the target platform (``--platform gpu`` with as
many real devices as ``--devices``) for its own peaks; ``bench/accelerator.py`` compares
both with what one accelerator actually allocated.

The search per (N_H, remat) brackets the largest fitting B (a multiple of ``--multiple``
times the device count) with interpolation on the measured peak, which is close to linear
in B, guarded by bisection; typically 4-6 compiles each. A paper-model compile takes about
17 s on a 2-core CPU.
"""
from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from absl import flags

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
  from modeformer_jax import models
  with _FORM_LOCK:
    old, models.CONV3D_IMPL = models.CONV3D_IMPL, impl
    try:
      yield
    finally:
      models.CONV3D_IMPL = old


def peak_bytes(stats: Any) -> int:
  """Peak per-device bytes of a compiled program from its ``memory_analysis()``."""
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def residual_bytes(model: Any, per_device: int, windows: int) -> int:
  """Bytes the backward pass keeps from one device's forward pass, counted by JAX.

  These are the leaves of the ``jax.vjp`` closure of both towers on the per-device batch
  (``per_device`` videos, ``per_device * windows`` mel windows), parameters included.
  Unlike XLA's buffer assignment this does not depend on the backend, so it shows what
  rematerialisation saves even where a backend's scheduler does not realise it.
  """
  import jax
  import jax.numpy as jnp

  from modeformer_jax.models import NUM_MEL
  from modeformer_jax.windows import MEL_WINDOW
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
  """Compiles the train step for (B, N_H, remat) and caches the memory analysis.

  ``config`` is a ConfigDict or a plain dict with ``model`` (a model config mapping) and
  optionally ``loss`` and ``optim``, as in ``config_utils.training_config``. The devices of
  ``mesh`` decide the platform compiled for. ``compiler_options`` are passed to every
  ``compile`` (e.g. a lower XLA optimisation level for quick CPU runs). ``conv3d`` is the
  form 3D convolutions are traced in (``conv3d_form``): 'native' for an estimate of an
  accelerator made on the CPU, whose own per-layer forms differ in memory as well as speed
  (paper model, B = 2000, N_H = 2, one device: 149.3 GiB in the CPU's forms, 113.5 native);
  'auto' for the program this backend itself runs.
  """

  def __init__(self, config: Any, mesh: Any, model_overrides: dict | None = None,
               compiler_options: dict | None = None, conv3d: str = "auto"):
    import jax

    from modeformer_jax import mesh as mesh_lib
    from modeformer_jax import train_step
    self.jax, self.ts, self.mesh_lib = jax, train_step, mesh_lib
    self.config, self.mesh = config, mesh
    self.n = mesh.shape[mesh_lib.AXIS]
    self.model_overrides = dict(model_overrides or {})
    self.compiler_options = compiler_options
    self.conv3d = conv3d
    self.loss_cfg = _as_dict(config.get("loss", None) or {})
    self.tx, _ = train_step.make_optimizer(_as_dict(config.get("optim", None) or {}))
    self.cache: dict[tuple[int, int, bool], dict[str, Any]] = {}

  def model(self, remat: bool) -> Any:
    """The ``ModEFormer`` the step is compiled for (config's model + overrides + remat)."""
    from modeformer_jax.models import ModEFormer, ModelConfig
    mcfg = _as_dict(self.config["model"])
    mcfg.update(self.model_overrides, remat=remat)
    return ModEFormer(ModelConfig.from_mapping(mcfg))

  def compile(self, batch_size: int, num_hard: int, remat: bool) -> tuple[Any, dict[str, Any]]:
    """Lowers + compiles one step; returns ``(compiled, figures)`` and caches the figures.

    The executable takes a state and batch with the shapes and shardings of
    ``train_step.create_train_state`` / ``abstract_batch`` on this mesh, so a caller on the
    target platform can run exactly what was measured.
    """
    jax, ts = self.jax, self.ts
    self.mesh_lib.check_batch_size(batch_size, self.mesh, process_count=1)
    model = self.model(remat)
    rep = self.mesh_lib.replicated(self.mesh)
    state = jax.eval_shape(lambda r: ts.create_train_state(model, self.tx, r, self.loss_cfg),
                           jax.random.key(0))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
    batch = ts.abstract_batch(batch_size, num_hard, self.mesh, model.config.video_channels)
    step = ts.make_train_step(model, self.tx, self.mesh, self.loss_cfg)
    t0 = time.perf_counter()
    with conv3d_form(self.conv3d):
      lowered = step.lower(state, batch, rng)
      residuals = residual_bytes(model, batch_size // self.n, 1 + num_hard)
    compiled = lowered.compile(self.compiler_options)
    stats = compiled.memory_analysis()
    out = {"B": batch_size, "N_H": num_hard, "remat": remat,
           "per_device": batch_size // self.n, "peak": peak_bytes(stats),
           "temp": int(stats.temp_size_in_bytes), "argument": int(stats.argument_size_in_bytes),
           "compile_s": time.perf_counter() - t0, "residuals": residuals}
    self.cache[(batch_size, num_hard, remat)] = out
    return compiled, out

  def measure(self, batch_size: int, num_hard: int, remat: bool) -> dict[str, Any]:
    """Lowers + compiles (never runs) one step; returns its memory figures (cached)."""
    key = (batch_size, num_hard, remat)
    if key not in self.cache:
      self.compile(batch_size, num_hard, remat)
    return self.cache[key]

  def largest_batch(self, num_hard: int, remat: bool, budget: int, multiple: int = 8,
                    max_batch: int = MAX_BATCH,
                    log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Largest global B (a multiple of ``multiple * devices``) whose peak fits ``budget``.

    Returns the measurement of that B (``_row``'s fields: ``'B'``, ``'peak'``, ...), or
    None when not even ``multiple * devices`` fits.
    """
    g = multiple * self.n
    fits = lambda r: r["peak"] <= budget  # noqa: E731
    lo = self.measure(g, num_hard, remat)
    log(_row(lo, budget))
    if not fits(lo):
      return None
    top = max(g, max_batch // g * g)
    hi_b = min(top, 8 * g)
    hi = self.measure(hi_b, num_hard, remat)
    log(_row(hi, budget))
    if hi_b == lo["B"]:
      return lo
    # Grow the upper bracket along the measured slope until it no longer fits.
    while fits(hi):
      if hi["B"] >= top:
        return hi
      lo = hi
      slope = max((hi["peak"] - self.cache[(g, num_hard, remat)]["peak"]) / (hi["B"] - g), 1.0)
      guess = hi["B"] + (budget - hi["peak"]) / slope
      nxt = min(top, max(hi["B"] + g, int(guess * 1.05) // g * g + g))
      hi = self.measure(nxt, num_hard, remat)
      log(_row(hi, budget))
    # lo fits, hi does not: interpolate, never closer than one step to a bracket end.
    while hi["B"] - lo["B"] > g:
      frac = (budget - lo["peak"]) / max(hi["peak"] - lo["peak"], 1)
      guess = lo["B"] + frac * (hi["B"] - lo["B"])
      mid = int(guess) // g * g
      if mid <= lo["B"] or mid >= hi["B"]:
        mid = (lo["B"] + hi["B"]) // 2 // g * g
      # Probe just past the prediction as well as at it, so a good guess closes the bracket.
      r = self.measure(mid, num_hard, remat)
      log(_row(r, budget))
      if fits(r):
        lo = r
        if mid + g < hi["B"]:
          r2 = self.measure(mid + g, num_hard, remat)
          log(_row(r2, budget))
          lo, hi = (r2, hi) if fits(r2) else (lo, r2)
      else:
        hi = r
    return lo


def _gib(x: float) -> str:
  return f"{x / 2**30:8.3f}"


def _row(r: dict[str, Any], budget: int | None = None) -> str:
  mark = "" if budget is None else ("  fits" if r["peak"] <= budget else "  over")
  return (f"  B={r['B']:>7} N_H={r['N_H']:>3} remat={'on ' if r['remat'] else 'off'} "
          f"per-device={r['per_device']:>6}  peak GiB {_gib(r['peak'])} "
          f"(temp {_gib(r['temp'])}, args {_gib(r['argument'])}; jax residuals "
          f"{_gib(r['residuals'])})  "
          f"compile {r['compile_s']:5.1f}s{mark}")


def _define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("devices", None, "Devices on the mesh's data axis.", lower_bound=1,
                       flag_values=fv)
  flags.mark_flag_as_required("devices", flag_values=fv)
  flags.DEFINE_string("memory_per_device", "80GiB", "Memory budget per device, e.g. 16GiB.",
                      flag_values=fv)
  flags.register_validator("memory_per_device", _is_bytes, "not a size like 80GiB or 16GB",
                           flag_values=fv)
  flags.DEFINE_string("batch_sizes", "", "Global batches for a table of peaks (comma list); "
                      "empty = none.", flag_values=fv)
  flags.DEFINE_string("num_hard", "", "N_H values (comma list); default: config.num_hard, "
                      "else 2,5,11.", flag_values=fv)
  flags.DEFINE_enum("remat", "both", ["both", "on", "off"], "Rematerialisation settings to try.",
                    flag_values=fv)
  flags.DEFINE_string("model", "", "Override the model variant (e.g. micro).", flag_values=fv)
  flags.DEFINE_string("dtype", "", "Override the compute dtype (e.g. bfloat16).",
                      flag_values=fv)
  flags.DEFINE_integer("multiple", 8, "Search granularity: per-device batch is a multiple of "
                       "this.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("max_batch", MAX_BATCH, "Largest global batch the search considers.",
                       flag_values=fv)
  flags.DEFINE_string("platform", "cpu", "Backend to compile for; 'cpu' simulates --devices "
                      "host devices.", flag_values=fv)
  flags.DEFINE_enum("conv3d_impl", "native", ["native", "auto"], "3D-convolution form the "
                    "step is traced in: native, the one every accelerator runs; auto, the "
                    "--platform backend's own (XLA:CPU's per-layer forms).", flag_values=fv)
  flags.DEFINE_bool("search", True, "Search the largest fitting batch (--nosearch: only the "
                    "--batch_sizes table).", flag_values=fv)


def _is_bytes(text: str) -> bool:
  try:
    parse_bytes(text)
  except ValueError:
    return False
  return True


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point (``argv`` without the program name); returns a process exit code."""
  # Here, not at the top: the Planner itself needs no ml_collections (bench/accelerator.py
  # runs it where ml_collections is not installed).
  from modeformer_jax import config_utils
  args = config_utils.parse_flags(argv, __doc__, _define_flags)
  budget = parse_bytes(args.memory_per_device)

  import jax  # imported late: the CPU device count must be set before the backend starts
  jax.config.update("jax_platforms", args.platform)
  if args.platform == "cpu":
    jax.config.update("jax_num_cpu_devices", args.devices)
  devices = jax.devices()
  if len(devices) < args.devices:
    raise SystemExit(f"--devices {args.devices} but only {len(devices)} {args.platform} "
                     "devices exist; use --platform cpu to simulate them")
  from modeformer_jax import mesh as mesh_lib
  from modeformer_jax import models

  config = args.config
  overrides: dict[str, Any] = {}
  if args.model:
    overrides.update(models.model_config(args.model).to_dict())  # raises if unknown
    overrides["dtype"] = config.model.get("dtype", "float32")
  if args.dtype:
    overrides["dtype"] = args.dtype
  num_hard = _ints(args.num_hard) if args.num_hard else (
      [int(config.num_hard)] if "num_hard" in config else [2, 5, 11])
  remats = {"both": [False, True], "on": [True], "off": [False]}[args.remat]
  mesh = mesh_lib.make_mesh(devices[:args.devices])
  planner = Planner(config, mesh, overrides, conv3d=args.conv3d_impl)
  model_desc = dict(_as_dict(config.model), **overrides)
  print(f"planner: {config_utils.describe(args)}{' model=' + args.model if args.model else ''} "
        f"dtype={model_desc.get('dtype')} on {args.devices} x {devices[0].device_kind} "
        f"({args.platform}); budget {_gib(budget).strip()} GiB per device; "
        f"loss.easy_negatives={planner.loss_cfg.get('easy_negatives', True)}")
  if args.platform == "cpu":
    print(f"estimates are CPU-derived: XLA:CPU's buffer assignment for simulated devices "
          f"(3D convolutions in the {args.conv3d_impl} form), not an accelerator's own "
          f"(--platform gpu|tpu on the target gives its own)")
  sys.stdout.flush()

  if args.batch_sizes:
    print("table (peak bytes per device from compiled.memory_analysis()):")
    for h in num_hard:
      for remat in remats:
        for b in _ints(args.batch_sizes):
          print(_row(planner.measure(b, h, remat), budget), flush=True)
  if args.search:
    results = []
    for h in num_hard:
      for remat in remats:
        print(f"search N_H={h} remat={'on' if remat else 'off'}:", flush=True)
        best = planner.largest_batch(h, remat, budget, args.multiple, args.max_batch,
                                     log=lambda s: print(s, flush=True))
        results.append((h, remat, best))
    print(f"largest global batch that fits {_gib(budget).strip()} GiB per device on "
          f"{args.devices} devices (granularity {args.multiple * args.devices}):")
    for h, remat, best in results:
      if best is None:
        print(f"  N_H={h:>3} remat={'on ' if remat else 'off'}: none (even "
              f"{args.multiple * args.devices} does not fit)")
      else:
        print(f"  N_H={h:>3} remat={'on ' if remat else 'off'}: B={best['B']:>7} "
              f"({best['per_device']} per device, peak {_gib(best['peak']).strip()} GiB, "
              f"{best['B'] * (1 + h)} audio windows per video)")
  if args.platform == "cpu" and True in remats:
    print("note: XLA's CPU backend does not realise rematerialisation's saving in its buffer "
          "assignment (measured: remat-on peaks are not lower); the 'jax residuals' column "
          "shows what remat saves. Run with --platform on the target accelerator for its "
          "own peaks.")
  print(f"{len(planner.cache)} compiles, "
        f"{sum(r['compile_s'] for r in planner.cache.values()):.0f} s compiling")
  return 0


if __name__ == "__main__":
  sys.exit(main())
