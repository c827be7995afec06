"""The clock and frame format that every part of the synthetic generator agrees on."""

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS    # 640
MS_PER_FRAME = 1000 // FPS                # 40: the mouth tracks run at 1 kHz
FRAME_SIZE = 160                          # LRS2 face crops are 160x160
