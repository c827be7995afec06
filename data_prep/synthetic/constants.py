"""The clock and frame format that every part of the synthetic generator agrees on (the clock
itself is ``modeformer_jax.model.windows``')."""
from modeformer_jax.model.windows import FPS, SAMPLES_PER_FRAME, SAMPLE_RATE  # noqa: F401

MS_PER_FRAME = 1000 // FPS                # 40: the mouth tracks run at 1 kHz
FRAME_SIZE = 160                          # LRS2 face crops are 160x160
