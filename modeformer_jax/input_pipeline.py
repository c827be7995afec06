"""Training input pipeline: grain over the ArrayRecord shards written by ``data_prep.prepare``.

One training example is a clip, a start frame ``t``, the 5 lip frames ``[t, t+5)``, the
positive mel window (16 mel frames from ``round(3.2 t)``) and ``num_hard`` hard-negative mel
windows of the same clip at shifts ``delta`` with ``min_shift <= |delta| <= max_shift``.
``min_shift`` defaults to 2 so a hard negative is never inside the +-1 frame tolerance that
the evaluation accepts as "in sync".

Batches are dicts of numpy arrays (B = local batch, A = 1 + num_hard, index 0 = positive)::

  video       uint8   [B, 5, 48, 96, 3]
  audio       float32 [B, A, 80, 16]
  clip        int32   [B]        index of the clip record in its split (global id)
  video_time  int32   [B]        t
  audio_time  int32   [B, A]     frame each audio window starts at (t, t + delta_j)

Stage 1 (``clips_per_entry == 1``): consecutive entries of a shuffled epoch, so every entry
of a global batch comes from a different clip. Stage 2 (``clips_per_entry == K``): each clip
contributes K entries at different start frames, so same-clip easy negatives appear in the
batch (the loss masks the ones within the tolerance).

Per host: the dataset is batched to ``global_batch / process_count`` entries and process p
takes batches p, p + P, p + 2P, ... . Everything random is derived from the seed and the
element index (grain's ``random_map``), so the stream is identical for any number of
worker processes, and the iterator state (``get_state``/``set_state``) restores mid-epoch.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import grain
import numpy as np

from modeformer_jax import features, records

NUM_FRAMES = 5
MEL_WINDOW = 16


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """How examples are cut from a clip (see the module docstring)."""
  num_hard: int = 2              # hard negatives per entry (N_H)
  min_shift: int = 2             # smallest |delta| of a hard negative, in video frames
  max_shift: int = 15            # largest |delta|
  clips_per_entry: int = 1       # K entries per clip in a batch (stage 2 uses > 1)
  brightness: float = 0.0        # max additive brightness jitter, in pixel values
  contrast: float = 0.0          # max relative contrast jitter (0.1 = +-10%)
  max_crop_shift: int = 0        # max translation of the lip crop, in pixels


def sample_shifts(t: int, num_frames: int, spec: ExampleSpec,
                  rng: np.random.Generator) -> np.ndarray:
  """Hard-negative shifts for start frame ``t`` that keep the window inside the clip.

  Without replacement when the clip allows it; with replacement for short clips.
  """
  last = num_frames - NUM_FRAMES
  cand = np.concatenate([np.arange(-spec.max_shift, -spec.min_shift + 1),
                         np.arange(spec.min_shift, spec.max_shift + 1)])
  cand = cand[(t + cand >= 0) & (t + cand <= last)]
  if cand.size == 0:
    raise ValueError(f"clip of {num_frames} frames has no hard negative for t={t}")
  return rng.choice(cand, size=spec.num_hard, replace=cand.size < spec.num_hard)


def _augment(video: np.ndarray, spec: ExampleSpec, rng: np.random.Generator) -> np.ndarray:
  """Same brightness/contrast/translation for all frames of one entry."""
  if spec.max_crop_shift:
    dy, dx = rng.integers(-spec.max_crop_shift, spec.max_crop_shift + 1, size=2)
    s = spec.max_crop_shift
    padded = np.pad(video, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    video = padded[:, s + dy:s + dy + video.shape[1], s + dx:s + dx + video.shape[2]]
  if spec.brightness or spec.contrast:
    c = 1.0 + rng.uniform(-spec.contrast, spec.contrast)
    b = rng.uniform(-spec.brightness, spec.brightness)
    mean = video.mean()
    video = np.clip((video.astype(np.float32) - mean) * c + mean + b, 0, 255).astype(np.uint8)
  return np.ascontiguousarray(video)


class MakeEntries(grain.transforms.RandomMap):
  """Serialized clip record -> ``clips_per_entry`` stacked training entries."""

  def __init__(self, spec: ExampleSpec, augment: bool):
    self.spec = spec
    self.augment = augment

  def random_map(self, element: tuple[int, bytes], rng: np.random.Generator) -> dict:
    index, raw = element
    rec = records.decode_record(raw)
    return make_entries(rec, index, self.spec, rng, self.augment)


def make_entries(rec: Mapping[str, Any], clip_index: int, spec: ExampleSpec,
                 rng: np.random.Generator, augment: bool = False) -> dict[str, np.ndarray]:
  """``spec.clips_per_entry`` entries from one decoded record (leading axis K)."""
  n = int(rec["num_frames"])
  if n < NUM_FRAMES + spec.min_shift:
    raise ValueError(f"clip {rec.get('clip_id')} has {n} frames; too short for training")
  mel = records.decode_mel(rec)
  k = spec.clips_per_entry
  starts = rng.choice(n - NUM_FRAMES + 1, size=k, replace=(n - NUM_FRAMES + 1) < k)
  out = {"video": [], "audio": [], "video_time": [], "audio_time": []}
  for t in starts:
    t = int(t)
    times = np.concatenate([[t], t + sample_shifts(t, n, spec, rng)]).astype(np.int32)
    wins = []
    for s in times:
      m0 = features.mel_start(int(s))
      wins.append(mel[:, m0:m0 + MEL_WINDOW])
    video = records.decode_lips(rec, t, NUM_FRAMES)
    if augment:
      video = _augment(video, spec, rng)
    out["video"].append(video)
    out["audio"].append(np.stack(wins).astype(np.float32))
    out["video_time"].append(t)
    out["audio_time"].append(times)
  batch = {key: np.stack(v) for key, v in out.items()}
  batch["video_time"] = batch["video_time"].astype(np.int32)
  batch["clip"] = np.full((k,), clip_index, np.int32)
  return batch


def _flatten_entries(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """[elements, K, ...] -> [elements * K, ...]."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def _with_index(index: int, raw: bytes) -> tuple[int, bytes]:
  return index, raw


def train_dataset(data_dir: str, split: str, *, global_batch: int, spec: ExampleSpec,
                  seed: int, process_index: int = 0, process_count: int = 1,
                  augment: bool = False) -> grain.MapDataset:
  """Infinite, shuffled MapDataset of this process's local batches."""
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} does not divide by {process_count} processes")
  local = global_batch // process_count
  if local % spec.clips_per_entry:
    raise ValueError(f"per-process batch {local} does not divide by clips_per_entry "
                     f"{spec.clips_per_entry}")
  source = records.open_split(data_dir, split)
  if len(source) == 0:
    raise ValueError(f"{data_dir}: split {split!r} has no clips")
  ds = grain.MapDataset.source(source).map_with_index(_with_index)
  ds = ds.shuffle(seed=seed).repeat(None)
  ds = ds.random_map(MakeEntries(spec, augment), seed=seed + 1)
  ds = ds.batch(local // spec.clips_per_entry).map(_flatten_entries)
  return ds.slice(slice(process_index, None, process_count))


def train_iterator(data_dir: str, split: str, *, global_batch: int, spec: ExampleSpec,
                   seed: int, process_index: int = 0, process_count: int = 1,
                   augment: bool = False, workers: int = 0,
                   prefetch: int = 2) -> grain.DatasetIterator:
  """Checkpointable iterator over local batches, with multiprocess prefetch if workers > 0."""
  ds = train_dataset(data_dir, split, global_batch=global_batch, spec=spec, seed=seed,
                     process_index=process_index, process_count=process_count,
                     augment=augment).to_iter_dataset()
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=prefetch))
  return iter(ds)


def spec_from_config(config: Any) -> ExampleSpec:
  """ExampleSpec from a training config (``config.num_hard`` and ``config.data``)."""
  d = config.data
  return ExampleSpec(num_hard=int(config.num_hard), min_shift=int(d.min_shift),
                     max_shift=int(d.max_shift), clips_per_entry=int(d.clips_per_entry),
                     brightness=float(d.get("brightness", 0.0)),
                     contrast=float(d.get("contrast", 0.0)),
                     max_crop_shift=int(d.get("max_crop_shift", 0)))


def to_global(batch: Mapping[str, np.ndarray], mesh: Any, axis: str = "data") -> dict:
  """Local numpy batch -> global jax.Arrays sharded on ``axis`` across all processes."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  sharding = NamedSharding(mesh, P(axis))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
