"""Clip records in ArrayRecord shards: encoding, decoding and opening a prepared dataset.

``data_prep.prepare`` writes one record per clip; the training loader (``input_pipeline``)
and the evaluation read them back through this module, so the format lives in one place.

Record (format_version 1)
  A msgpack map, never pickle, because shards may come from elsewhere and must be safe to
  open. Keys::

    format_version  1
    clip_id         str     e.g. 'spk003v001/00002' (unique within its split)
    speaker         str
    split           str
    source          str     path of the source file relative to the dataset root
    fps             float   25.0 (the lips' frame rate)
    source_fps      float   frame rate of the source file
    num_frames      int     T
    lip_codec       str     'jpeg' or 'raw'
    lips            'jpeg': list of T JPEG byte strings (quality 95, RGB frames), so a
                    loader that takes 5 frames of a clip of hundreds decodes only those 5;
                    'raw': {'dtype': 'uint8', 'shape': [T, 48, 96, 3], 'data': bytes}
    mel             {'dtype': 'float16', 'shape': [80, Tm], 'data': bytes}, Tm = ceil(3.2 T)
    mel_frames      int     Tm

  float16 keeps the mel's [-4, 4] range to within 0.002, far below its frame-to-frame change.

Dataset folder
  ``manifest.json`` (features, splits and their shard files), ``report.json`` (what was
  skipped and why) and shards named ``{split}.array_record-{i:05d}-of-{n:05d}``, written
  with ``group_size:1`` so every record can be read on its own.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping

import msgpack
import numpy as np

FORMAT_VERSION = 1
LIP_CODECS = ("jpeg", "raw")
JPEG_QUALITY = 95
MANIFEST = "manifest.json"
REPORT = "report.json"
# Every record is its own chunk: random access reads (and decompresses) one record.
WRITER_OPTIONS = "group_size:1"

_REQUIRED = ("format_version", "clip_id", "speaker", "split", "source", "fps", "source_fps",
             "num_frames", "lip_codec", "lips", "mel", "mel_frames")


def shard_name(split: str, index: int, num_shards: int) -> str:
  """TFDS-style shard file name ``{split}.array_record-{index:05d}-of-{num_shards:05d}``."""
  return f"{split}.array_record-{index:05d}-of-{num_shards:05d}"


def _array_map(a: np.ndarray) -> dict:
  a = np.ascontiguousarray(a)
  return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def _array_from_map(m: Mapping[str, Any], what: str) -> np.ndarray:
  dtype = np.dtype(m["dtype"])
  if dtype.kind not in "uif":
    raise ValueError(f"record {what}: unsupported dtype {dtype}")
  shape = tuple(int(s) for s in m["shape"])
  data = m["data"]
  if len(data) != int(np.prod(shape)) * dtype.itemsize:
    raise ValueError(f"record {what}: {len(data)} bytes do not hold {dtype} {list(shape)}")
  return np.frombuffer(data, dtype).reshape(shape)


def encode_lips(lips: np.ndarray, lip_codec: str = "jpeg",
                quality: int = JPEG_QUALITY) -> list[bytes] | dict:
  """The ``lips`` field of a record from ``uint8 [T, H, W, 3]`` RGB frames."""
  lips = np.asarray(lips)
  if lips.dtype != np.uint8 or lips.ndim != 4 or lips.shape[-1] != 3:
    raise ValueError(f"lips must be uint8 [T, H, W, 3], got {lips.dtype} {lips.shape}")
  if lip_codec == "raw":
    return _array_map(lips)
  if lip_codec != "jpeg":
    raise ValueError(f"unknown lip_codec {lip_codec!r}; expected one of {LIP_CODECS}")
  import cv2  # lazily, like in decode_lips
  out = []
  params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
  for frame in lips:
    # OpenCV encodes BGR; swapping here keeps the stored JPEG a normal RGB image.
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params)
    if not ok:
      raise ValueError("JPEG encoding of a lip frame failed")
    out.append(buf.tobytes())
  return out


def encode_clip(clip: Any, clip_id: str, speaker: str, split: str, source: str,
                lip_codec: str = "jpeg") -> bytes:
  """Serialises a ``features.Clip`` and its identity to one record (msgpack bytes)."""
  lips = np.asarray(clip.lips)
  mel = np.asarray(clip.mel)
  t = int(clip.num_frames)
  if lips.shape[0] != t:
    raise ValueError(f"{clip_id}: {lips.shape[0]} lip frames but num_frames={t}")
  if mel.ndim != 2:
    raise ValueError(f"{clip_id}: mel must be [80, Tm], got shape {mel.shape}")
  rec = {
      "format_version": FORMAT_VERSION,
      "clip_id": str(clip_id),
      "speaker": str(speaker),
      "split": str(split),
      "source": str(source),
      "fps": float(clip.fps),
      "source_fps": float(clip.source_fps),
      "num_frames": t,
      "lip_codec": lip_codec,
      "lips": encode_lips(lips, lip_codec),
      "mel": _array_map(mel.astype(np.float16)),
      "mel_frames": int(mel.shape[1]),
  }
  return msgpack.packb(rec, use_bin_type=True)


def decode_record(b: bytes) -> dict:
  """Parses a record; lips stay encoded (see ``decode_lips``), the mel stays bytes.

  Raises:
    ValueError: the bytes are not a record of a known format version.
  """
  try:
    rec = msgpack.unpackb(b, raw=False)
  except (msgpack.UnpackException, ValueError) as e:
    raise ValueError(f"not a clip record (msgpack decoding failed: {e})") from e
  if not isinstance(rec, dict):
    raise ValueError(f"not a clip record: a msgpack {type(rec).__name__}, not a map")
  missing = [k for k in _REQUIRED if k not in rec]
  if missing:
    raise ValueError(f"clip record {rec.get('clip_id', '?')!r} lacks fields {missing}")
  if rec["format_version"] != FORMAT_VERSION:
    raise ValueError(f"clip record {rec['clip_id']!r} has format_version "
                     f"{rec['format_version']}; this code reads {FORMAT_VERSION}")
  if rec["lip_codec"] not in LIP_CODECS:
    raise ValueError(f"clip record {rec['clip_id']!r}: unknown lip_codec {rec['lip_codec']!r}")
  if rec["lip_codec"] == "jpeg" and len(rec["lips"]) != rec["num_frames"]:
    raise ValueError(f"clip record {rec['clip_id']!r}: {len(rec['lips'])} JPEG frames, "
                     f"num_frames={rec['num_frames']}")
  return rec


def decode_lips(rec: Mapping[str, Any], start: int = 0, count: int | None = None) -> np.ndarray:
  """Lip frames ``[start, start + count)`` as ``uint8 [count, 48, 96, 3]``, decoding only those."""
  n = int(rec["num_frames"])
  count = n - start if count is None else int(count)
  if start < 0 or count < 0 or start + count > n:
    raise IndexError(f"clip {rec['clip_id']!r}: frames [{start}, {start + count}) outside "
                     f"its {n} frames")
  if rec["lip_codec"] == "raw":
    return _array_from_map(rec["lips"], "lips")[start:start + count].copy()
  # Imported here so that importing the training pipeline does not load OpenCV.
  import cv2
  frames = []
  for data in rec["lips"][start:start + count]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
      raise ValueError(f"clip {rec['clip_id']!r}: a JPEG lip frame does not decode")
    frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
  if not frames:
    return np.zeros((0, 48, 96, 3), np.uint8)
  return np.stack(frames)


def decode_mel(rec: Mapping[str, Any]) -> np.ndarray:
  """The clip's mel spectrogram, ``float32 [80, Tm]``."""
  mel = _array_from_map(rec["mel"], "mel")
  if mel.ndim != 2 or mel.shape[1] != int(rec["mel_frames"]):
    raise ValueError(f"clip {rec['clip_id']!r}: mel shape {mel.shape} disagrees with "
                     f"mel_frames={rec['mel_frames']}")
  return mel.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Prepared dataset folders.
# ----------------------------------------------------------------------------------------

def read_manifest(data_dir: str | os.PathLike) -> dict:
  """``manifest.json`` of a prepared dataset folder."""
  path = pathlib.Path(data_dir) / MANIFEST
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no manifest; {data_dir} is not a finished dataset "
                            "folder (run python -m data_prep.prepare, again to finish an interrupted run)")
  manifest = json.loads(path.read_text())
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {manifest.get('format_version')}; this code "
                     f"reads {FORMAT_VERSION}")
  return manifest


def data_dirs(data_dir: str | os.PathLike) -> list[str]:
  """The prepared dataset folders named by ``data_dir``: one path, or several joined by
  commas (training on several datasets at once, e.g. ``data/lrc_ar,data/grid_s1``)."""
  dirs = [d.strip() for d in str(data_dir).split(",") if d.strip()]
  if not dirs:
    raise ValueError("no dataset folder given")
  return dirs


def split_files(data_dir: str | os.PathLike, split: str) -> list[str]:
  """Absolute paths of a split's shards, in order (dataset after dataset for a list)."""
  paths = []
  for one in data_dirs(data_dir):
    splits = read_manifest(one)["splits"]
    if split not in splits:
      raise KeyError(f"{one}: no split {split!r}; it has {sorted(splits)}")
    root = pathlib.Path(one).resolve()
    paths += [str(root / name) for name in splits[split]["shards"]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{data_dir}: split {split!r} misses shard files {missing}")
  return paths


def open_split(data_dir: str | os.PathLike, split: str):
  """A grain ``ArrayRecordDataSource`` over a split: ``len`` clips, ``source[i]`` -> bytes.

  ``data_dir`` may list several datasets (``data_dirs``); their clips are concatenated, so
  a clip's index stays a unique id across them (the loss's same-clip mask relies on it).
  """
  import grain  # lazily: data preparation does not need it
  return grain.sources.ArrayRecordDataSource(split_files(data_dir, split))
