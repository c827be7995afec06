"""modeformer_jax: ModEFormer lip-sync detection (ICASSP 2023) in JAX/Flax."""
import glob as _glob
import os as _os

__version__ = "0.1.0"


def _cpu_unless_accelerator() -> None:
  """JAX on the CPU where this machine has no accelerator and nobody chose a platform.

  With the target compilers installed (``make aot``: libtpu), a JAX process that is left to
  choose loads libtpu (690 MB) and prints its warnings when it finds no TPU. The planner
  turns the target compilers on itself (``aot.prepare``); every other command stays on what
  the machine has. TPUs show as /dev/accel* (v4, v5e) or /dev/vfio/N (v5p, v6e), NVIDIA GPUs
  as /dev/nvidia*; JAX_PLATFORMS set by the user always wins.
  """
  if "JAX_PLATFORMS" in _os.environ:
    return
  if (_glob.glob("/dev/accel*") or _glob.glob("/dev/vfio/[0-9]*")
      or _glob.glob("/dev/nvidia[0-9]*") or _os.path.exists("/dev/nvidiactl")):
    return
  _os.environ["JAX_PLATFORMS"] = "cpu"
  import sys as _sys
  if "jax" in _sys.modules:   # jax read the environment already: tell its config too
    try:
      _sys.modules["jax"].config.update("jax_platforms", "cpu")
    except Exception:  # noqa: BLE001 - a backend already started: nothing left to choose
      pass


_cpu_unless_accelerator()


def _short_blas_spin() -> None:
  """OpenBLAS's idle worker threads wait for work spinning, not sleeping: ~40 ms of a core
  after every threaded product (numpy's; ``OPENBLAS_THREAD_TIMEOUT``, default 2^28 cycles).
  The analysis makes a few small ones a second (the mel filterbank, the similarity curves),
  so its workers spun on the core the face landmarks, the towers and the decoder share. A
  short wait (2^4 cycles, then sleep) computes the same numbers on the same threads.
  OpenBLAS reads it when numpy loads it: a process that imported numpy first keeps its own
  setting, as does a user who set it."""
  _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


_short_blas_spin()
