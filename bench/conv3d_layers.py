"""Where the 3D video trunk's time goes: each conv layer shape, native 3D vs the 2D form.

  python -m bench.conv3d_layers --variant paper --windows 96
  python -m bench.conv3d_layers --map_sweep     # 3x3 convs, 64 channels, small maps
  python -m bench.conv3d_layers --split_grads --variant paper --windows 8   # training's

Times the forward of one ``models.Conv`` per distinct layer shape of the variant's video
trunk (the input of one 100-frame clip's windows: ``--windows`` x 5 frames), once with each
formulation (``models.CONV3D_IMPL`` 'native' and '2d'), interleaved, best of ``--repeats``;
prints ms, GFLOP/s and the fraction of a same-process matmul peak. ``--map_sweep`` instead
times one 3x3 2D conv (batch 480) and one 3x3x3 3D conv (96 x 5 frames), 64 channels, on
maps of 1..6 x 2..12, and prints the GFLOP/s of each. ``--split_grads`` times, per layer,
the forward in each form and each gradient (input, kernel) alone in each form, the matmul
forms included, and marks what ``CONV3D_IMPL='auto'`` picks: the evidence for its rule.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import machine, matmul_peak
from modeformer_jax import cli
from modeformer_jax.model import input_spec, models


def layer_shapes(cfg: models.ModelConfig, windows: int, frames: int = 5) -> list[dict]:
  """(input shape, features, kernel, strides) of every distinct 3D conv of the video trunk."""
  h, w = input_spec.LIP_SIZE
  shapes = []
  sh, sw = cfg.video_stem_strides[1:]
  shapes.append(dict(name="stem", x=(windows, frames, h, w, cfg.video_channels),
                     f=cfg.cnn_widths[0], k=cfg.video_stem_kernel,
                     s=cfg.video_stem_strides))
  h, w = -(-h // sh), -(-w // sw)
  h, w = -(-h // 2), -(-w // 2)           # the max-pool after the stem
  c = cfg.cnn_widths[0]
  for i, width in enumerate(cfg.cnn_widths):
    stride = (1, 1, 1) if i == 0 else (1, 2, 2)
    if stride != (1, 1, 1) or c != width:
      shapes.append(dict(name=f"stage{i + 1}.down", x=(windows, frames, h, w, c), f=width,
                         k=(3, 3, 3), s=stride))
      h, w = -(-h // 2), -(-w // 2)
    shapes.append(dict(name=f"stage{i + 1}", x=(windows, frames, h, w, width), f=width,
                       k=(3, 3, 3), s=(1, 1, 1)))
    c = width
  return shapes


def _time(fn, x, repeats: int) -> float:
  jax.block_until_ready(fn(x))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(x))
    best = min(best, time.perf_counter() - t0)
  return best


def map_sweep(repeats: int, channels: int = 64) -> None:
  """GFLOP/s of a 3x3 2D conv and a 3x3x3 3D conv over the same work, by map size."""
  print(f"machine: {machine()}; {channels} channels; GFLOP/s as '2d / 3d'")
  rng = np.random.default_rng(0)
  dn2, dn3 = ("NHWC", "HWIO", "NHWC"), ("NDHWC", "DHWIO", "NDHWC")
  conv2 = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                            dimension_numbers=dn2))
  conv3 = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1, 1), "SAME",
                                                            dimension_numbers=dn3))
  c = channels
  for h in (1, 2, 3, 4, 6):
    row = []
    for w in (2, 3, 4, 6, 12):
      x2 = jnp.asarray(rng.standard_normal((480, h, w, c), np.float32))
      k2 = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32))
      x3 = jnp.asarray(rng.standard_normal((96, 5, h, w, c), np.float32))
      k3 = jnp.asarray(rng.standard_normal((3, 3, 3, c, c), np.float32))
      flops2 = 2 * 480 * h * w * 9 * c * c
      g2 = flops2 / _time(functools.partial(conv2, k=k2), x2, repeats) / 1e9
      g3 = 3 * flops2 / _time(functools.partial(conv3, k=k3), x3, repeats) / 1e9
      row.append(f"{h}x{w}: {g2:5.1f} / {g3:5.1f}")
    print(" | ".join(row), flush=True)


def split_grads(cfg: models.ModelConfig, windows: int, repeats: int) -> None:
  """Forward, input gradient and kernel gradient of each layer, alone, in every form."""
  print(f"machine: {machine()}; ms per call, best of {repeats}; * = what 'auto' picks")
  rng = np.random.default_rng(0)
  for L in layer_shapes(cfg, windows):
    s, k = tuple(L["s"]), tuple(L["k"])
    x = jnp.asarray(rng.standard_normal(L["x"], np.float32))
    kern = jnp.asarray(rng.standard_normal((*k, L["x"][-1], L["f"]), np.float32)) * 0.05
    g = jnp.asarray(rng.standard_normal(
        jax.eval_shape(lambda a, q: models.conv3d_native(a, q, s), x, kern).shape, np.float32))
    # The conv is linear: each gradient is one VJP, timed without the forward. The kernel and
    # the output gradient are arguments (as constants XLA would fold the input gradient away).
    fns = {}
    for name, f in models.CONV3D_FORWARD.items():
      fns[("fwd", name)] = jax.jit(lambda a, q, r, f=f: f(a, q, s))
      fns[("dx", name)] = jax.jit(
          lambda a, q, r, f=f: jax.vjp(lambda v: f(v, q, s), a)[1](r)[0])
      fns[("dw", name)] = jax.jit(
          lambda a, q, r, f=f: jax.vjp(lambda u: f(a, u, s), q)[1](r)[0])
    fns[("dx", "matmul")] = jax.jit(lambda a, q, r: models.conv3d_dx_matmul(a.shape, r, q, s))
    fns[("dw", "matmul")] = jax.jit(lambda a, q, r: models.conv3d_dw_matmul(a, r, k, s))
    fns = {key: functools.partial(fn, q=kern, r=g) for key, fn in fns.items()}
    res = {key: _time(fn, x, repeats) for key, fn in fns.items()}
    auto = dict(zip(("fwd", "dx", "dw"), models.conv3d_forms("auto", L["x"], s, L["f"])))
    cells = []
    for part in ("fwd", "dx", "dw"):
      cells.append(part + " " + " ".join(
          f"{form}{'*' if auto[part] == form else ' '}{1e3 * t:7.1f}"
          for (p, form), t in res.items() if p == part))
    print(f"{L['name']:12} {str(L['x']):>22} {L['f']:4d} | " + " | ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
  ap = cli.parser(__name__, __doc__.split("\n\n")[0])
  ap.add_argument("--variant", default="paper")
  ap.add_argument("--windows", type=int, default=96)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--grad", action="store_true",
                  help="time forward + backward (gradients for the input and the kernel)")
  ap.add_argument("--map_sweep", action="store_true")
  ap.add_argument("--split_grads", action="store_true",
                  help="forward and each gradient alone, in every form (native, 2d, matmul)")
  a = ap.parse_args(argv)
  if a.map_sweep:
    map_sweep(a.repeats)
    return
  if a.split_grads:
    split_grads(models.model_config(a.variant), a.windows, a.repeats)
    return
  peak = matmul_peak()
  print(f"machine: {machine()}; matmul peak {peak / 1e9:.1f} GFLOP/s")
  cfg = models.model_config(a.variant)
  print(f"{'layer':12} {'input':>24} {'out':>4} {'GFLOP':>7} {'native ms':>10} {'2d ms':>8} "
        f"{'native %pk':>10} {'2d %pk':>7}")
  rng = np.random.default_rng(0)
  for L in layer_shapes(cfg, a.windows):
    x = jnp.asarray(rng.standard_normal(L["x"], np.float32))
    conv = models.Conv(L["f"], L["k"], strides=L["s"])
    params = conv.init(jax.random.key(0), x)
    out = jax.eval_shape(conv.apply, params, x).shape
    passes = (2 if L["name"] == "stem" else 3) if a.grad else 1
    flops = 2 * np.prod(out) * np.prod(L["k"]) * L["x"][-1] * passes
    res = {}
    for impl in ("native", "2d", "native", "2d"):
      models.CONV3D_IMPL = impl
      if a.grad:   # d(sum y * r)/d(params, x): the backward convolutions of training
        r = jnp.asarray(rng.standard_normal(out, np.float32))
        # The stem's input is the frames: training needs only its kernel's gradient.
        argnums = 0 if L["name"] == "stem" else (0, 1)
        g = jax.jit(jax.grad(lambda p, v, c=conv, r=r: jnp.vdot(c.apply(p, v), r),
                             argnums=argnums))
        fn = functools.partial(g, params)
      else:
        fn = jax.jit(lambda v, p=params, c=conv: c.apply(p, v))   # traced under this impl
      res[impl] = min(res.get(impl, float("inf")), _time(fn, x, a.repeats))
    models.CONV3D_IMPL = "auto"
    print(f"{L['name']:12} {str(L['x']):>24} {L['f']:4d} {flops / 1e9:7.2f} "
          f"{1e3 * res['native']:10.1f} {1e3 * res['2d']:8.1f} "
          f"{flops / res['native'] / peak:10.1%} {flops / res['2d'] / peak:7.1%}", flush=True)


if __name__ == "__main__":
  main()
