"""One process of the two-process train-step test (and the shared single-process run).

  JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
      python tests/_multihost_worker.py --process_id 0 --num_processes 2 --port 12345 \\
      --params /tmp/p0.npz --out /tmp/mh.npz

Every process reads the same initial parameters, builds the same deterministic global
batches, keeps only the rows its own devices hold, and makes global arrays with
``jax.make_array_from_process_local_data``; all processes then run the same jitted train
step twice. Process 0 writes the per-step metrics and the final parameters to ``--out``.
``run`` is imported by ``tests/test_train_step.py`` to produce the single-process result;
``run_processes`` (launch processes, compute something meanwhile, collect their logs) by
that test and the two-process CLI test of ``tests/test_train.py``.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
from typing import Any, Callable

import numpy as np

GLOBAL_BATCH = 16
NUM_HARD = 2
STEPS = 2
LR = 0.5


def _local_rows(sharding, shape) -> slice:
  """The contiguous block of global rows this process's devices hold."""
  idx = sharding.addressable_devices_indices_map(shape).values()
  lo = min(i[0].start or 0 for i in idx)
  hi = max(shape[0] if i[0].stop is None else i[0].stop for i in idx)
  return slice(lo, hi)


def run(devices, param_leaves: list[np.ndarray]) -> dict[str, np.ndarray]:
  """Two train steps of the micro model on the mesh over ``devices``.

  Parameters come in as host arrays (the test initialises them once). Plain SGD makes the
  parameter change after a step exactly ``-lr * gradient``, so comparing parameters
  compares gradients (Adam's first step, ~``lr * sign(g)``, would hide them).
  """
  import jax
  import optax

  from modeformer_jax.model.models import ModEFormer
  from modeformer_jax.training import config_utils, mesh as mesh_lib, train_step as ts

  model = ModEFormer(config_utils.model_config("micro"))
  tx = optax.sgd(LR)
  loss_cfg = {"tau": 0.1, "easy_negatives": True, "tolerance": 1}
  mesh = mesh_lib.make_mesh(devices)
  mesh_lib.check_batch_size(GLOBAL_BATCH, mesh)
  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)

  def to_global(batch):
    out = {}
    for k, v in batch.items():
      rows = _local_rows(data, v.shape)
      out[k] = jax.make_array_from_process_local_data(data, v[rows], v.shape)
    return out

  treedef = jax.tree.structure(jax.eval_shape(model.init, jax.random.key(0)))
  params = jax.tree.unflatten(treedef, [
      jax.make_array_from_process_local_data(rep, np.array(x), x.shape) for x in param_leaves])
  state = {"params": params, "opt_state": tx.init(params),
           "step": jax.make_array_from_process_local_data(rep, np.zeros((), np.int32), ())}
  step = ts.make_train_step(model, tx, mesh, loss_cfg)
  # Replicated outputs: every process holds a full copy, so read the local one.
  local = lambda x: np.asarray(x.addressable_data(0))  # noqa: E731
  out: dict[str, list] = {"loss": [], "grad_norm": [], "accuracy": [], "neg_sim": []}
  for s in range(STEPS):
    batch = ts.random_batch(GLOBAL_BATCH, NUM_HARD, seed=10 + s, num_clips=5, max_time=24)
    state, m = step(state, to_global(batch), jax.random.key(1))
    for k in out:
      out[k].append(local(m[k]))
  res = {k: np.stack(v) for k, v in out.items()}
  res.update({f"param_{i:03d}": local(p)
              for i, p in enumerate(jax.tree.leaves(state["params"]))})
  return res


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_processes(commands: list[list[str]], meanwhile: Callable[[], Any], *, cwd: Any,
                  env: dict[str, str], timeout: float = 600) -> tuple[Any, list[str]]:
  """Runs ``commands`` as processes and ``meanwhile()`` here; returns its result and the logs.

  Every process must exit with 0 (the assertion shows the tails of their logs); none is
  left running, whatever happens.
  """
  procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for c in commands]
  try:
    result = meanwhile()
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert all(p.returncode == 0 for p in procs), "\n".join(x[-3000:] for x in logs)
  return result, logs


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--process_id", type=int, required=True)
  p.add_argument("--num_processes", type=int, default=2)
  p.add_argument("--port", type=int, required=True)
  p.add_argument("--params", required=True, help=".npz of the initial parameter leaves")
  p.add_argument("--out", required=True)
  args = p.parse_args()
  import jax
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                             num_processes=args.num_processes, process_id=args.process_id,
                             initialization_timeout=120)
  assert jax.process_count() == args.num_processes, jax.process_count()
  with np.load(args.params, allow_pickle=False) as f:
    leaves = [f[k] for k in sorted(f.files)]
  out = run(jax.devices(), leaves)
  out["process_count"] = np.asarray(jax.process_count())
  out["device_count"] = np.asarray(jax.device_count())
  if args.process_id == 0:
    np.savez(args.out, **out)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
