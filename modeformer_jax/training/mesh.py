"""The device mesh, global batches and multi-process start-up.

Training and embedding use one 1-D mesh whose single axis, :data:`AXIS`, spans every device
of every process: the batch is sharded on it, parameters are replicated. Each process
builds only its own slice of a global batch (``batch_size // process_count`` rows) and
:func:`to_global` assembles the global array from the slices, as big_vision's
``make_fsarray_from_local_slice`` does.

:func:`init_distributed` starts ``jax.distributed`` when (and only when) the run has more
than one process, from explicit arguments or from a cluster scheduler's environment.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"

log = logging.getLogger("modeformer_jax.training.mesh")


def make_mesh(devices: Sequence[Any] | None = None) -> Mesh:
  """1-D :data:`AXIS` mesh over ``devices`` (default: all devices of all processes).

  Auto axis types: jax 0.10's ``make_mesh`` defaults to Explicit sharding, and the train
  step relies on GSPMD propagation outside its ``shard_map``.
  """
  devices = list(devices if devices is not None else jax.devices())
  slices = {getattr(d, "slice_index", 0) for d in devices}
  if len(slices) > 1:
    # Multi-slice TPU (devices over DCN): the physical-mesh ordering jax.make_mesh uses
    # covers one slice only; a hybrid mesh orders chips within each slice (ICI), then
    # slices (DCN), so the data axis's collectives stay on ICI as long as they can.
    from jax.experimental import mesh_utils
    per_slice = len(devices) // len(slices)
    arr = mesh_utils.create_hybrid_device_mesh((per_slice,), (len(slices),), devices)
    return Mesh(arr.reshape(-1), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,))
  return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: Mesh, memory_kind: str | None = None) -> NamedSharding:
  """Leading (batch) dimension split over :data:`AXIS` (in ``memory_kind``, default HBM)."""
  return NamedSharding(mesh, P(AXIS), memory_kind=memory_kind)


# The batch's bulk: the lips and mel windows. With ``host_inputs`` they stay in the host
# memory beside each chip and the cached step copies one chunk at a time to the chip.
HOST_INPUT_KEYS = ("video", "audio")
# Lips in host memory are float32 holding the pixel values 0..255 (exact); the chip casts
# each chunk back to uint8. Host memory is plentiful and uint8 there cost chip memory:
# libtpu tiles uint8 in host memory unlike on the chip and re-laid out the WHOLE host batch
# through the chip for every chunk; bfloat16 made XLA:CPU upcast the whole batch at once.
HOST_VIDEO_DTYPE = np.float32


def input_sharding(mesh: Mesh, key: str, host_inputs: bool = False) -> NamedSharding:
  """The sharding of a batch entry ``key``: on :data:`AXIS`; lips and mel in pinned host
  memory with ``host_inputs`` (the cached step's form, whose chip holds no whole batch)."""
  on_host = host_inputs and key in HOST_INPUT_KEYS
  return batch_sharding(mesh, "pinned_host" if on_host else None)


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, process_count: int | None = None) -> None:
  """Raises a clear error unless the global batch splits evenly over devices and processes."""
  n = mesh.shape[AXIS]
  pc = jax.process_count() if process_count is None else process_count
  if batch_size <= 0 or batch_size % n:
    raise ValueError(f"global batch_size {batch_size} must be a positive multiple of the "
                     f"{n} devices on the '{AXIS}' mesh axis")
  if batch_size % pc:
    raise ValueError(f"global batch_size {batch_size} must divide by the {pc} processes")


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh,
              host_inputs: bool = False) -> dict[str, jax.Array]:
  """This process's rows of a batch -> global arrays sharded on :data:`AXIS`.

  Every process passes its own ``B / process_count`` rows; where they land in the global
  batch follows the mesh's device order, which the loss does not depend on.
  ``host_inputs``: lips and mel go to pinned host memory (:func:`input_sharding`).
  """
  def local(k: str, v: Any) -> np.ndarray:
    v = np.asarray(v)
    return v.astype(HOST_VIDEO_DTYPE) if host_inputs and k == "video" else v

  return {k: jax.make_array_from_process_local_data(input_sharding(mesh, k, host_inputs),
                                                    local(k, v))
          for k, v in batch.items()}


# ------------------------------------------------------------------ multi-process start-up
# Environment variables a launcher sets on each process, and how many processes they say
# the job has. Only these are read before deciding to start jax.distributed; the actual
# addresses and ids are then found by jax's own cluster detection
# (jax._src.clusters: Slurm, Open MPI, GKE TPU).
def _scheduler_process_count(env: Mapping[str, str]) -> tuple[str, int] | None:
  if all(k in env for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                            "SLURM_PROCID", "SLURM_LOCALID")):
    return "Slurm", int(env["SLURM_NTASKS"])
  if "OMPI_MCA_orte_hnp_uri" in env and "OMPI_COMM_WORLD_SIZE" in env:
    return "Open MPI", int(env["OMPI_COMM_WORLD_SIZE"])
  hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
  if hosts:
    slices = int(env.get("MEGASCALE_NUM_SLICES", "1") or 1)
    return "TPU pod", len(hosts.split(",")) * slices
  return None


def distributed_args(coordinator_address: str | None = None,
                     num_processes: int | None = None, process_id: int | None = None,
                     mode: str = "auto",
                     env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
  """Keyword arguments for ``jax.distributed.initialize``, or None for a one-process run.

  ``mode``: ``'auto'`` starts it for explicit arguments with ``num_processes > 1`` or
  when a scheduler's environment says the job has several processes; ``'on'`` always calls
  it (jax then detects the cluster, e.g. a Cloud TPU VM pod whose worker list is only in
  the metadata server); ``'off'`` never does. Missing explicit values are read from
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"distributed mode {mode!r}; expected 'auto', 'on' or 'off'")
  if mode == "off":
    return None
  env = os.environ if env is None else env
  addr = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  n = num_processes if num_processes is not None else env.get("JAX_NUM_PROCESSES")
  pid = process_id if process_id is not None else env.get("JAX_PROCESS_ID")
  n = int(n) if n not in (None, "") else None
  pid = int(pid) if pid not in (None, "") else None
  explicit = {k: v for k, v in (("coordinator_address", addr), ("num_processes", n),
                                ("process_id", pid)) if v is not None}
  if mode == "on":
    return explicit
  found = _scheduler_process_count(env)
  count = n if n is not None else (found[1] if found else 1)
  if count <= 1:
    return None
  if found is None and len(explicit) < 3:
    raise ValueError("multi-process training needs all of --coordinator_address, "
                     f"--num_processes and --process_id (got {sorted(explicit)})")
  log.info("%d processes (%s): starting jax.distributed", count,
           "explicit" if n is not None else found[0])
  return explicit


def init_distributed(coordinator_address: str | None = None,
                     num_processes: int | None = None, process_id: int | None = None,
                     mode: str = "auto", timeout_s: int = 300) -> bool:
  """Starts ``jax.distributed`` for a multi-process run; returns whether it did.

  Must run before anything touches a JAX backend (``jax.devices()`` included).
  """
  kwargs = distributed_args(coordinator_address, num_processes, process_id, mode)
  if kwargs is None:
    return False
  jax.distributed.initialize(**kwargs, initialization_timeout=timeout_s)
  log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
  return True
