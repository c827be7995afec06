"""ml_collections configs for modeformer_jax (load with `configs/<file>.py:<arg>`)."""
