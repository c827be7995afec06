"""The clock and frame format that every part of the synthetic generator agrees on (the clock
itself is ``modeformer_jax.windows``')."""
from modeformer_jax.windows import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401

MS_PER_FRAME = 1000 // FPS                # 40: the mouth tracks run at 1 kHz
FRAME_SIZE = 160                          # LRS2 face crops are 160x160
