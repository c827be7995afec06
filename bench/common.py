"""Shared bits of the benchmarks: machine description, matmul peak, timing."""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp


def machine() -> str:
  """One line naming the CPU/accelerator the numbers were taken on."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  devs = jax.devices()
  return (f"{cpu}; {os.cpu_count()} cores; jax {jax.__version__}; "
          f"{len(devs)} x {devs[0].device_kind} ({devs[0].platform})")


def time_fn(fn: Callable[[], Any], warmup: int = 1, min_seconds: float = 2.0,
            min_iters: int = 3) -> float:
  """Median-free simple timing: mean seconds per call after warm-up, blocking on results."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  n, start = 0, time.perf_counter()
  while n < min_iters or time.perf_counter() - start < min_seconds:
    jax.block_until_ready(fn())
    n += 1
  return (time.perf_counter() - start) / n


def matmul_peak(n: int = 2048, dtype=jnp.float32, min_seconds: float = 2.0) -> float:
  """Achieved FLOP/s of a large square matmul: the practical peak of this device.

  The operands are random: GPUs multiply zeros or constants faster than random data (less
  switching power, so higher clocks), which would overstate the peak.
  """
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  sec = time_fn(lambda: f(a, b), min_seconds=min_seconds)
  return 2 * n ** 3 / sec


def memory_stats() -> dict[str, int] | None:
  """The first local device's allocator statistics; None where the backend keeps none (CPU)."""
  return jax.local_devices()[0].memory_stats() or None


def compiled_flops(compiled) -> float:
  """FLOPs from XLA's cost analysis of a compiled executable (nan when unknown)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost.get("flops", float("nan"))) if cost else float("nan")
