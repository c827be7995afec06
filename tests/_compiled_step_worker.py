"""Runs a saved compiled train step and the jitted step on one batch; prints both results.

  JAX_PLATFORMS=cpu python tests/_compiled_step_worker.py STEP.pkl CONFIG DEVICES

Used by tests/test_aot.py in a fresh process (the executable is loaded, never compiled here).
"""
import json
import sys

import jax
import numpy as np


def main(path: str, config_arg: str, devices: int) -> None:
  jax.config.update("jax_num_cpu_devices", devices)
  from modeformer_jax import train
  from modeformer_jax.model.models import ModEFormer
  from modeformer_jax.training import config_utils, mesh as mesh_lib, train_step
  config = config_utils.load_config(config_arg)
  mesh = mesh_lib.make_mesh()
  step = train.compiled_step(path, config, mesh)
  model = ModEFormer(config.model)
  optim = dict(config.optim.to_dict())
  optim["total_steps"] = optim.get("total_steps") or config.total_steps
  tx, _ = train_step.make_optimizer(optim)
  rep = mesh_lib.replicated(mesh)
  init = jax.jit(lambda r: train_step.create_train_state(model, tx, r, config.loss),
                 out_shardings=rep)
  rng = jax.jit(lambda: jax.random.key(config.seed), out_shardings=rep)()
  batch = mesh_lib.to_global(train_step.random_batch(config.batch_size, config.num_hard,
                                                     seed=3), mesh)
  jitted = train_step.make_train_step(model, tx, mesh, config.loss)
  out = {}
  for name, fn in (("compiled", step), ("jitted", jitted)):
    state, metrics = fn(init(rng), batch, rng)
    leaves = jax.tree.leaves(jax.device_get(state["params"]))
    out[name] = {"metrics": {k: float(v) for k, v in jax.device_get(metrics).items()},
                 "param_sum": float(sum(np.sum(np.asarray(x, np.float64)) for x in leaves)),
                 "param_abs": float(sum(np.sum(np.abs(np.asarray(x, np.float64)))
                                        for x in leaves))}
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
