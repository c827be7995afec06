"""ml_collections configs for modeformer_jax (load with `modeformer_jax/configs/<file>.py:<arg>`)."""
