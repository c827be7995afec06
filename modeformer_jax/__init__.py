"""modeformer_jax: ModEFormer lip-sync detection (ICASSP 2023) in JAX/Flax."""
__version__ = "0.1.0"
