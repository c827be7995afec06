"""Clip packages: prepared training clips in a few compact files, readable without grain.

A package carries the training split of prepared datasets (``data_prep.prepare`` shards) to a
machine that has numpy, OpenCV and jax but no grain, ArrayRecord, PyAV or librosa, in a size
that travels with the repository (``python -m data_prep.device_package build`` writes it,
``... check`` compares it with the shards; ``train_device`` reads it).

Folder::

  package.json     format, input spec, sources, codec, tolerances, one row per clip
  lips-00000.mp4   lip frames of consecutive clips back to back: H.264 High 4:4:4 (yuv444p,
  lips-00001.mp4   no chroma subsampling), 96x48, 25 fps; a clip never spans two files
  mel.u8.xz        every clip's mel as uint8, ``lo + q * scale`` with the clip's own lo and
                   scale (its min and max over 255 steps), [80, sum Tm], lzma-compressed

A clip row: ``clip_id`` (``<dataset>/<record clip_id>``), ``num_frames``, ``frame`` (its first
frame in the concatenation of the lips files), ``mel`` (its first mel frame), ``mel_frames``,
``mel_lo``, ``mel_scale`` and ``lips_mean`` (the mean pixel value of its decoded frames where
the package was built, so a machine whose decoder differs finds out before training).

Tolerances against the shards (asserted by ``check``): lips per clip within the codec's
error (``LIPS_MIN_PSNR_DB``, ``LIPS_MAX_MEAN_ABS``); mel within half its quantisation step.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import lzma
import os
import pathlib
from typing import Any

import numpy as np

from modeformer_jax.errors import PackageError

FORMAT = "modeformer_jax.data.clip_package"
VERSION = 1
INDEX = "package.json"
MEL_FILE = "mel.u8.xz"
LIPS_FILE = "lips-{:05d}.mp4"
LIP_SHAPE = (48, 96, 3)
# Lips against the shards' decoded frames, per clip: H.264 at crf 18 measured at worst
# 37.1 dB PSNR and 2.68 mean absolute difference over the 2495 LRC-AR and GRID s1 training
# clips (much of it the JPEG grain of the records, which H.264 smooths); a wrong or shifted
# frame falls far below.
LIPS_MIN_PSNR_DB = 33.0
LIPS_MAX_MEAN_ABS = 4.0
# The decoded mean of a clip's frames may differ by this much between two OpenCV builds
# (YUV -> BGR rounding); a dropped or reordered frame moves it more in most clips.
LIPS_MEAN_TOLERANCE = 0.5


@dataclasses.dataclass
class Package:
  """A decoded package: every clip's lips and mel, back to back."""
  index: dict[str, Any]
  lips: np.ndarray      # uint8 [sum T, 48, 96, 3]
  mel: np.ndarray       # float32 [80, sum Tm]

  def __len__(self) -> int:
    return len(self.index["clips"])

  @property
  def clips(self) -> list[dict[str, Any]]:
    return self.index["clips"]

  @property
  def input_spec(self) -> dict[str, Any]:
    return self.index["input_spec"]

  def clip(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Views ``(lips [T, 48, 96, 3], mel [80, Tm])`` of clip ``i``."""
    c = self.clips[i]
    return (self.lips[c["frame"]:c["frame"] + c["num_frames"]],
            self.mel[:, c["mel"]:c["mel"] + c["mel_frames"]])


def quantise_mel(mel: np.ndarray) -> tuple[np.ndarray, float, float]:
  """``(q uint8, lo, scale)`` with ``|lo + q * scale - mel| <= scale / 2``."""
  mel = np.asarray(mel, np.float32)
  lo, hi = np.float32(mel.min()), np.float32(mel.max())
  scale = np.float32((hi - lo) / 255) if hi > lo else np.float32(1.0)
  q = np.clip(np.rint((mel - lo) / scale), 0, 255).astype(np.uint8)
  return q, float(lo), float(scale)


def dequantise_mel(q: np.ndarray, lo: float, scale: float) -> np.ndarray:
  """The float32 mel of ``quantise_mel``'s output."""
  return np.float32(lo) + q.astype(np.float32) * np.float32(scale)


def read_index(path: str | os.PathLike) -> dict[str, Any]:
  """``package.json`` of a finished package (written last by the builder)."""
  f = pathlib.Path(path) / INDEX
  if not f.is_file():
    raise PackageError(f"{f}: no index; {path} is not a finished clip package")
  index = json.loads(f.read_text())
  if index.get("format") != FORMAT or index.get("version") != VERSION:
    raise PackageError(f"{f}: format {index.get('format')!r} version {index.get('version')}; "
                       f"this code reads {FORMAT!r} version {VERSION}")
  return index


def decode_lips_file(path: str | os.PathLike, out: np.ndarray) -> None:
  """Decodes an H.264 lips file into ``out`` (``uint8 [frames, 48, 96, 3]``, RGB).

  Raises PackageError unless the file holds exactly ``len(out)`` frames of the lip size.
  """
  import cv2  # lazily: the builder and tests import this module for its format constants
  cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
  if not cap.isOpened():
    raise PackageError(f"{path}: OpenCV cannot open it (no FFmpeg backend with H.264?)")
  n = 0
  try:
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      if n >= len(out) or frame.shape != LIP_SHAPE:
        raise PackageError(f"{path}: frame {n} of shape {frame.shape}; the index expects "
                           f"{len(out)} frames of {LIP_SHAPE}")
      cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[n])
      n += 1
  finally:
    cap.release()
  if n != len(out):
    raise PackageError(f"{path}: {n} frames decoded; the index expects {len(out)}")


def clip_means(lips: np.ndarray, clips: list[dict[str, Any]]) -> np.ndarray:
  """Mean pixel value of each clip's frames (``lips`` = the concatenation)."""
  return np.array([float(lips[c["frame"]:c["frame"] + c["num_frames"]].mean())
                   for c in clips])


def load(path: str | os.PathLike, *, threads: int = 8, verify: bool = True) -> Package:
  """Decodes a package: lips files in ``threads`` threads (OpenCV releases the GIL).

  ``verify`` compares each clip's decoded mean with the builder's (``LIPS_MEAN_TOLERANCE``)
  and raises PackageError naming the clips that differ.
  """
  path = pathlib.Path(path)
  index = read_index(path)
  files = index["lips"]["files"]
  total = sum(f["frames"] for f in files)
  lips = np.empty((total,) + LIP_SHAPE, np.uint8)
  starts = np.cumsum([0] + [f["frames"] for f in files])
  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    jobs = [pool.submit(decode_lips_file, path / f["name"], lips[s:s + f["frames"]])
            for f, s in zip(files, starts)]
    for j in jobs:
      j.result()
  q = np.frombuffer(lzma.decompress((path / MEL_FILE).read_bytes()), np.uint8)
  total_mel = int(index["mel"]["frames"])
  if q.size != 80 * total_mel:
    raise PackageError(f"{path / MEL_FILE}: {q.size} bytes; the index expects 80 x {total_mel}")
  q = q.reshape(80, total_mel)
  mel = np.empty((80, total_mel), np.float32)
  for c in index["clips"]:
    sl = slice(c["mel"], c["mel"] + c["mel_frames"])
    mel[:, sl] = dequantise_mel(q[:, sl], c["mel_lo"], c["mel_scale"])
  pkg = Package(index, lips, mel)
  if verify:
    got = clip_means(lips, index["clips"])
    want = np.array([c["lips_mean"] for c in index["clips"]])
    bad = np.flatnonzero(np.abs(got - want) > LIPS_MEAN_TOLERANCE)
    if bad.size:
      names = ", ".join(f"{index['clips'][i]['clip_id']} ({got[i]:.2f} vs {want[i]:.2f})"
                        for i in bad[:5])
      raise PackageError(f"{path}: {bad.size} clips decode differently from where the "
                         f"package was built (mean pixel value): {names}")
  return pkg
