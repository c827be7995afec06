"""The window contract between video frames and mel frames (numpy only).

The one home of the clock constants. Video runs at 25 fps, audio at 16 kHz and the mel at 80
frames per second, so there are exactly 3.2 mel
frames per video frame. The model reads windows:

* a video window is ``WINDOW_FRAMES`` = 5 consecutive lip crops, frames ``t .. t + 4``;
* its audio window is the ``MEL_WINDOW`` = 16 mel frames starting at mel frame
  ``mel_start(t) = round(3.2 t)`` (computed in integers, so it is exact and never ties).

A clip of ``num_frames`` video frames stores ``num_mel_frames(num_frames) = ceil(3.2 T)``
mel frames, enough for every window (``mel_start(T - 5) + 16 <= ceil(3.2 T)``), and has
``num_positions(T) = T - 4`` window positions.

This module is imported by the training input pipeline, so it must not import PyAV,
OpenCV or anything else heavy.
"""
from __future__ import annotations

import numpy as np

FPS = 25                     # video frames per second
FRAME_MS = 1000.0 / FPS      # 40 ms per video frame
SAMPLE_RATE = 16000          # audio samples per second
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS   # 640 audio samples per video frame
MEL_PER_FRAME = 3.2          # mel frames per video frame (80 mel frames per second)
MEL_MS = 1000.0 / 80         # 12.5 ms: one mel hop
WINDOW_FRAMES = 5            # video frames in one model window
MEL_WINDOW = 16              # mel frames in one model window (= 3.2 * 5)


def mel_start(t: int) -> int:
  """First mel frame of the audio window of video frame ``t``: ``round(3.2 t)``, exactly."""
  # 16 t / 5 has a fractional part in {0, .2, .4, .6, .8}, so there is never a tie.
  return (16 * int(t) + 2) // 5


def mel_starts(frames: np.ndarray) -> np.ndarray:
  """``mel_start`` of an integer array of video frames (negative frames allowed)."""
  return (16 * np.asarray(frames, np.int64) + 2) // 5


def num_mel_frames(num_frames: int) -> int:
  """Mel frames stored for a clip of ``num_frames`` video frames: ``ceil(3.2 num_frames)``."""
  return (16 * int(num_frames) + 4) // 5


def num_positions(num_frames: int) -> int:
  """Window positions of a clip of ``num_frames`` frames (0 when it is too short)."""
  return max(0, int(num_frames) - WINDOW_FRAMES + 1)


def video_windows(lips: np.ndarray) -> np.ndarray:
  """All video windows ``[P, 5, H, W, C]`` of lip crops ``[T, H, W, C]`` (P = T - 4)."""
  p = num_positions(lips.shape[0])
  if p < 1:
    raise ValueError(f"clip has {lips.shape[0]} frames; at least {WINDOW_FRAMES} are needed")
  idx = np.arange(p)[:, None] + np.arange(WINDOW_FRAMES)[None]
  return lips[idx]


def audio_windows(mel: np.ndarray, positions: int) -> np.ndarray:
  """The mel windows ``float32 [positions, n_mels, 16]`` of positions ``0..positions-1``.

  A mel that is a few frames short at the end (a short audio tail) is padded with its
  quietest value rather than rejected.
  """
  if positions < 1:
    raise ValueError(f"need at least one window position, got {positions}")
  starts = mel_starts(np.arange(positions))
  need = int(starts[-1]) + MEL_WINDOW
  if mel.shape[1] < need:
    mel = np.pad(mel, ((0, 0), (0, need - mel.shape[1])), constant_values=float(mel.min()))
  return mel[:, starts[:, None] + np.arange(MEL_WINDOW)[None]].transpose(1, 0, 2).astype(
      np.float32)


def clip_windows(lips: np.ndarray, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All video windows of a clip and the audio windows at the same positions."""
  video = video_windows(lips)
  return video, audio_windows(mel, video.shape[0])
