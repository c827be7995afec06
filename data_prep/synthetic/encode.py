"""Writing a clip to disk: h264 (yuv420p) + AAC mp4 files that are byte-identical run to run.

Byte-identical files need two precautions (both measured on this project's machine): our own
RGB->YUV conversion instead of swscale's, and x264 without its AVX-512 code, which gave
run-to-run differences for identical frames.
"""
from __future__ import annotations

import fractions
import functools
import os
import pathlib
import platform

import av
import cv2
import numpy as np

from data_prep.synthetic.constants import FPS, SAMPLE_RATE

# BT.601 limited range: rows give Y, U, V from R, G, B in 0-255 (offsets added after).
RGB_TO_YUV = np.array([[65.481, 128.553, 24.966],
                        [-37.797, -74.203, 112.0],
                        [112.0, -93.786, -18.214]], np.float32) / 255.0
YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def rgb_to_i420(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """BT.601 limited-range Y, U, V planes (chroma averaged over 2x2) of RGB ``[T, H, W, 3]``.

  This is the conversion FFmpeg's decoders invert by default for untagged SD video.
  """
  t, h, w, _ = frames.shape
  if h % 2 or w % 2:
    raise ValueError(f"yuv420p needs even frame sizes, got {h}x{w}")
  # cv2.transform: a per-pixel affine map with rounding and saturation to uint8; unlike a
  # BLAS matmul it spawns no threads.
  affine = np.concatenate([RGB_TO_YUV, YUV_OFFSET[:, None]], 1)
  yuv = cv2.transform(np.ascontiguousarray(frames).reshape(t * h, w, 3), affine)
  yuv = yuv.reshape(t, h, w, 3)
  uv = yuv[..., 1:].astype(np.uint16)
  uv = (uv[:, 0::2, 0::2] + uv[:, 1::2, 0::2] + uv[:, 0::2, 1::2] + uv[:, 1::2, 1::2] + 2) // 4
  uv = uv.astype(np.uint8)
  return (np.ascontiguousarray(yuv[..., 0]), np.ascontiguousarray(uv[..., 0]),
          np.ascontiguousarray(uv[..., 1]))


def yuv_frame(planes: tuple[np.ndarray, ...]) -> av.VideoFrame:
  """A yuv420p ``av.VideoFrame`` holding the given Y, U, V planes."""
  # Filling a frame that FFmpeg allocated (padding included) keeps the encoder input fully
  # defined and the colour conversion ours rather than swscale's.
  h, w = planes[0].shape
  frame = av.VideoFrame(w, h, "yuv420p")
  for plane, src in zip(frame.planes, planes):
    rows = plane.buffer_size // plane.line_size
    if plane.line_size == src.shape[1] and rows == src.shape[0]:
      plane.update(np.ascontiguousarray(src))
    else:
      buf = np.zeros((rows, plane.line_size), np.uint8)
      buf[:src.shape[0], :src.shape[1]] = src
      plane.update(buf)
  return frame


# x264's instruction sets by /proc/cpuinfo flag name. AVX-512 is left out on purpose: with it,
# encoding the same frames twice gave different h264 bytes in up to a third of the runs on
# a loaded AMD EPYC machine (without it: 0 of 300), so files would not be reproducible.
_X264_ASM = (("MMX2", "sse"), ("SSE", "sse"), ("SSE2", "sse2"), ("SSE3", "pni"),
             ("SSSE3", "ssse3"), ("SSE4.1", "sse4_1"), ("SSE4.2", "sse4_2"), ("LZCNT", "abm"),
             ("AVX", "avx"), ("AVX2", "avx2"), ("FMA3", "fma"), ("BMI1", "bmi1"),
             ("BMI2", "bmi2"))


@functools.lru_cache(maxsize=1)
def x264_params() -> str:
  """``x264-params`` limiting x264 to this CPU's pre-AVX-512 instruction sets (x86 Linux)."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return ""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((line.split(":", 1)[1].split() for line in f
                    if line.startswith("flags")), [])
  except OSError:
    return ""
  names = [name for name, flag in _X264_ASM if flag in flags]
  return "asm=" + ",".join(names) if names else ""


def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, crf: int = 20,
              gop: int | None = None) -> None:
  """Writes h264 (yuv420p, ``crf``) + AAC (16 kHz mono) mp4, atomically (temp file, rename).

  Args:
    path: the ``.mp4`` to write; a ``.part`` file beside it is renamed on success.
    frames: uint8 ``[T, H, W, 3]`` RGB at 25 fps (H and W even).
    audio: float32 ``[N]`` mono at 16 kHz, clipped to [-1, 1].
    crf: x264 constant rate factor (18-23 keeps the lips crisp at 160x160).
    gop: frames between keyframes (None: x264's 250); live streams use about a second, so
      a receiver that joins late can start decoding soon.
  """
  path = pathlib.Path(path)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                     f"{frames.shape}")
  ys, us, vs_ = rgb_to_i420(frames)
  tmp = path.with_name(path.name + ".part")
  container = av.open(str(tmp), "w", format="mp4")
  try:
    vs = container.add_stream("libx264", rate=FPS)
    vs.width, vs.height = frames.shape[2], frames.shape[1]
    vs.pix_fmt = "yuv420p"
    vs.options = {"crf": str(int(crf)), "preset": "veryfast"}
    if x264_params():
      vs.options = dict(vs.options, **{"x264-params": x264_params()})
    vs.codec_context.thread_count = 1   # one process per clip already; also keeps bytes stable
    if gop:
      vs.codec_context.gop_size = int(gop)
    ast = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
    ast.bit_rate = 64000
    for i in range(len(frames)):
      vf = yuv_frame((ys[i], us[i], vs_[i]))
      vf.pts = i
      container.mux(vs.encode(vf))
    container.mux(vs.encode())
    tb = fractions.Fraction(1, SAMPLE_RATE)
    clipped = np.clip(audio, -1, 1).astype(np.float32)
    for s in range(0, clipped.size, 1024):
      af = av.AudioFrame.from_ndarray(np.ascontiguousarray(clipped[None, s:s + 1024]),
                                      format="flt", layout="mono")
      af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, s, tb
      container.mux(ast.encode(af))
    container.mux(ast.encode())
  finally:
    container.close()
  os.replace(tmp, path)
