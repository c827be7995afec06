"""The training layer: the sharded step and what it runs on.

``train_step`` (optimizer, state, the jitted InfoNCE step: one pass or the cached two-pass
form), ``mesh`` (the ``data`` axis, global arrays, ``jax.distributed``), ``aot`` (deviceless
compilation for TPU pods and GPU targets, used by ``plan``), ``config_utils`` (config files
and flags). The loops and their CLIs are ``modeformer_jax.train`` and ``train_device``.
"""
