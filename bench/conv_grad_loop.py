"""XLA:CPU and convolution gradients inside a loop (why the cached step is slow on CPU).

  python -m bench.conv_grad_loop

Times the gradient of one 3x3 convolution on [192, 40, 8, 64] (the shape of an audio
tower layer of the tiny model) three ways in one run: plain, inside ``lax.map`` and as a
``vjp`` inside ``lax.scan`` (the cached two-pass step's second pass), and prints the ratios.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from bench.common import machine, time_fn
from modeformer_jax import cli


def conv(w: jax.Array, x: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def main() -> None:
  cli.parser(__name__, __doc__.split("\n\n")[0]).parse_args()
  x, w = jnp.ones((192, 40, 8, 64)), jnp.ones((3, 3, 64, 64))
  plain = jax.jit(jax.grad(lambda w, x: conv(w, x).sum(), argnums=(0, 1)))
  in_map = jax.jit(jax.grad(lambda w, x: jax.lax.map(lambda y: conv(w, y), x[None]).sum(),
                            argnums=(0, 1)))

  def vjp_in_scan(w, x):
    def body(total, y):
      out, vjp = jax.vjp(conv, w, y)
      gw, gy = vjp(jnp.ones_like(out))
      return total + gw, gy
    return jax.lax.scan(body, jnp.zeros_like(w), x[None])
  in_scan = jax.jit(vjp_in_scan)
  print("machine:", machine())
  times = {name: time_fn(lambda f=f: f(w, x), min_seconds=3.0)
           for name, f in (("plain", plain), ("in lax.map", in_map), ("vjp in lax.scan", in_scan))}
  for name, sec in times.items():
    print(f"{name:<16} {sec:8.3f} s  x{sec / times['plain']:.1f}")


if __name__ == "__main__":
  main()
