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

Stage 1 (``entries_per_clip == 1``): consecutive entries of a shuffled epoch, so every entry
of a global batch comes from a different clip. Stage 2 (``entries_per_clip == K``): each clip
contributes K entries at different start frames, so same-clip easy negatives appear in the
batch (the loss masks the ones within the tolerance).

Per host: the dataset is batched to ``global_batch / process_count`` entries and process p
takes batches p, p + P, p + 2P, ... . Everything random is derived from the seed and the
element index (grain's ``random_map``), so the stream is identical for any number of
worker processes, and the iterator state (``get_state``/``set_state``) restores mid-epoch.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

# windows, not features: the mel offsets must not pull in PyAV and OpenCV.
from modeformer_jax.data import records
from modeformer_jax.model.input_spec import MEL_CONFIG
from modeformer_jax.model.windows import MEL_WINDOW, WINDOW_FRAMES, mel_start, num_positions

if TYPE_CHECKING:
  # Imported where a dataset is built: the entry functions run where grain is not installed
  # (``train_device`` on an accelerator machine).
  import grain


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """How examples are cut from a clip (see the module docstring)."""
  num_hard: int = 2              # hard negatives per entry (N_H)
  min_shift: int = 2             # smallest |delta| of a hard negative, in video frames
  max_shift: int = 15            # largest |delta|
  entries_per_clip: int = 1      # K entries per clip in a batch (stage 2 uses > 1)
  brightness: float = 0.0        # max additive brightness jitter, in pixel values
  contrast: float = 0.0          # max relative contrast jitter (0.1 = +-10%)
  max_crop_shift: int = 0        # max translation of the lip crop, in pixels
  color: float = 0.0             # max relative gain per colour channel (skin tones, white balance)
  scale: float = 0.0             # max relative zoom of the crop (0.1 = 0.9x..1.1x)
  rotation: float = 0.0          # max in-plane rotation, degrees
  flip: bool = False             # mirror left-right with probability 1/2
  audio_gain_db: float = 0.0     # max +- gain of each mel window, dB
  noise_snr_db: float = 0.0      # > 0: add white noise at SNR uniform in [this, this + 20] dB
  noise_prob: float = 0.5        # share of audio windows that get noise (when enabled)


def sample_shifts(t: int, num_frames: int, spec: ExampleSpec,
                  rng: np.random.Generator) -> np.ndarray:
  """Hard-negative shifts for start frame ``t`` that keep the window inside the clip.

  Without replacement when the clip allows it; with replacement for short clips.
  """
  last = num_positions(num_frames) - 1   # the last start frame of a window
  cand = np.concatenate([np.arange(-spec.max_shift, -spec.min_shift + 1),
                         np.arange(spec.min_shift, spec.max_shift + 1)])
  cand = cand[(t + cand >= 0) & (t + cand <= last)]
  if cand.size == 0:
    raise ValueError(f"clip of {num_frames} frames has no hard negative for t={t}")
  return rng.choice(cand, size=spec.num_hard, replace=cand.size < spec.num_hard)


def _augment(video: np.ndarray, spec: ExampleSpec, rng: np.random.Generator) -> np.ndarray:
  """Same photometric and geometric change for all frames of one entry.

  Each augmentation draws random numbers only when it is enabled, so a config without the
  newer ones (colour, scale, rotation, flip) keeps its exact random stream.
  """
  if spec.max_crop_shift:
    dy, dx = rng.integers(-spec.max_crop_shift, spec.max_crop_shift + 1, size=2)
    s = spec.max_crop_shift
    padded = np.pad(video, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    video = padded[:, s + dy:s + dy + video.shape[1], s + dx:s + dx + video.shape[2]]
  if spec.scale or spec.rotation:
    import cv2  # lazily: importing the pipeline must not load OpenCV (records loads it)
    zoom = 1.0 + rng.uniform(-spec.scale, spec.scale) if spec.scale else 1.0
    angle = rng.uniform(-spec.rotation, spec.rotation) if spec.rotation else 0.0
    h, w = video.shape[1:3]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, zoom)
    video = np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE) for f in video])
  if spec.flip and rng.random() < 0.5:
    video = video[:, :, ::-1]
  if spec.brightness or spec.contrast or spec.color:
    c = 1.0 + rng.uniform(-spec.contrast, spec.contrast)
    b = rng.uniform(-spec.brightness, spec.brightness)
    mean = video.mean()
    out = (video.astype(np.float32) - mean) * c + mean + b
    if spec.color:
      out *= 1.0 + rng.uniform(-spec.color, spec.color, size=3).astype(np.float32)
    video = np.clip(out, 0, 255).astype(np.uint8)
  return np.ascontiguousarray(video)


# log-mel <-> dB, from the mel scaling (input_spec.MEL_CONFIG): mel = a (db - m) / -m * 2 - a
_MEL_A = MEL_CONFIG["max_abs_value"]
_MEL_MIN_DB = MEL_CONFIG["min_level_db"]
_DB_PER_MEL = -_MEL_MIN_DB / (2 * _MEL_A)


def augment_audio(windows: np.ndarray, spec: ExampleSpec,
                  rng: np.random.Generator) -> np.ndarray:
  """Gain and noise on mel windows ``[A, n_mels, 16]`` (each window drawn independently).

  The records hold log-mels, not waveforms, so both act on the mel. A gain of g dB adds
  ``g / _DB_PER_MEL`` to every unclipped value (exact above the -100 dB floor). Noise adds
  white noise power equally to every mel bin at a signal-to-noise ratio (over the window)
  drawn from ``[noise_snr_db, noise_snr_db + 20]`` dB: magnitudes combine as
  ``sqrt(M^2 + N^2)`` with Rayleigh-distributed ``N`` (the expected power of a sum of
  independent signals). Every window gets its own draw, so loudness and noise cannot tell
  the positive from its hard negatives.
  """
  if not spec.audio_gain_db and not spec.noise_snr_db:
    return windows
  out = windows.astype(np.float32, copy=True)
  for i in range(out.shape[0]):
    if spec.noise_snr_db and rng.random() < spec.noise_prob:
      db = (out[i] + _MEL_A) * _DB_PER_MEL + _MEL_MIN_DB
      power = 10.0 ** (db / 10.0)
      snr = rng.uniform(spec.noise_snr_db, spec.noise_snr_db + 20.0)
      noise = power.mean() / 10.0 ** (snr / 10.0)
      power = power + noise * rng.exponential(1.0, size=power.shape)
      db = 10.0 * np.log10(np.maximum(power, 1e-30))
      out[i] = np.clip((db - _MEL_MIN_DB) / _DB_PER_MEL - _MEL_A, -_MEL_A, _MEL_A)
    if spec.audio_gain_db:
      gain = rng.uniform(-spec.audio_gain_db, spec.audio_gain_db)
      out[i] = np.clip(out[i] + gain / _DB_PER_MEL, -_MEL_A, _MEL_A)
  return out


class MakeEntries:
  """Serialized clip record -> ``entries_per_clip`` stacked training entries.

  A plain callable for grain's ``random_map`` (which hands it the same per-element
  generator as a ``RandomMap`` subclass), so this module imports without grain.
  """

  def __init__(self, spec: ExampleSpec, augment: bool):
    self.spec = spec
    self.augment = augment

  def __call__(self, element: tuple[int, bytes], rng: np.random.Generator) -> dict:
    index, raw = element
    rec = records.decode_record(raw)
    return make_entries(rec, index, self.spec, rng, self.augment)


def make_entries(rec: Mapping[str, Any], clip_index: int, spec: ExampleSpec,
                 rng: np.random.Generator, augment: bool = False) -> dict[str, np.ndarray]:
  """``spec.entries_per_clip`` entries from one decoded record (leading axis K)."""
  return clip_entries(lambda t: records.decode_lips(rec, t, WINDOW_FRAMES),
                      records.decode_mel(rec), int(rec["num_frames"]), clip_index, spec, rng,
                      augment, name=rec.get("clip_id"))


def clip_entries(read_lips: Callable[[int], np.ndarray], mel: np.ndarray, num_frames: int,
                 clip_index: int, spec: ExampleSpec, rng: np.random.Generator,
                 augment: bool = False, name: str | None = None) -> dict[str, np.ndarray]:
  """``spec.entries_per_clip`` entries of one clip given as arrays (leading axis K).

  ``read_lips(t)`` returns the 5 lip frames from ``t`` (``uint8 [5, 48, 96, 3]``) and
  ``mel`` is the clip's ``float32 [80, Tm]``; records go through ``make_entries``, decoded
  clip packages (``train_device``) come here directly.
  """
  n = int(num_frames)
  if n < WINDOW_FRAMES + spec.min_shift:
    raise ValueError(f"clip {name} has {n} frames; too short for training")
  k = spec.entries_per_clip
  positions = num_positions(n)
  starts = rng.choice(positions, size=k, replace=positions < k)
  out = {"video": [], "audio": [], "video_time": [], "audio_time": []}
  for t in starts:
    t = int(t)
    times = np.concatenate([[t], t + sample_shifts(t, n, spec, rng)]).astype(np.int32)
    wins = []
    for s in times:
      m0 = mel_start(int(s))
      wins.append(mel[:, m0:m0 + MEL_WINDOW])
    video = read_lips(t)
    audio = np.stack(wins).astype(np.float32)
    if augment:
      video = _augment(video, spec, rng)
      audio = augment_audio(audio, spec, rng)
    out["video"].append(video)
    out["audio"].append(audio)
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
  import grain
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} does not divide by {process_count} processes")
  local = global_batch // process_count
  if local % spec.entries_per_clip:
    raise ValueError(f"per-process batch {local} does not divide by entries_per_clip "
                     f"{spec.entries_per_clip}")
  source = records.open_split(data_dir, split)
  if len(source) == 0:
    raise ValueError(f"{data_dir}: split {split!r} has no clips")
  ds = grain.MapDataset.source(source).map_with_index(_with_index)
  ds = ds.shuffle(seed=seed).repeat(None)
  ds = ds.random_map(MakeEntries(spec, augment), seed=seed + 1)
  ds = ds.batch(local // spec.entries_per_clip).map(_flatten_entries)
  return ds.slice(slice(process_index, None, process_count))


def train_iterator(data_dir: str, split: str, *, global_batch: int, spec: ExampleSpec,
                   seed: int, process_index: int = 0, process_count: int = 1,
                   augment: bool = False, workers: int = 0,
                   prefetch: int = 2) -> grain.DatasetIterator:
  """Checkpointable iterator over local batches, with multiprocess prefetch if workers > 0."""
  import grain
  ds = train_dataset(data_dir, split, global_batch=global_batch, spec=spec, seed=seed,
                     process_index=process_index, process_count=process_count,
                     augment=augment).to_iter_dataset()
  if workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=prefetch))
  return iter(ds)


def spec_from_config(config: Any) -> ExampleSpec:
  """ExampleSpec from a training config (``config.num_hard`` and ``config.data``).

  Raises ValueError when every hard negative would fall inside the loss's tolerance (the
  loss masks those windows, so the run would silently train without hard negatives).
  """
  d = config.data
  tolerance = config.get("loss", {}).get("tolerance", None)
  if tolerance is not None and int(config.num_hard) > 0 and int(d.min_shift) <= int(tolerance):
    raise ValueError(f"data.min_shift={d.min_shift} <= loss.tolerance={tolerance}: hard "
                     "negatives that close are masked by the loss; raise min_shift or lower "
                     "the tolerance")
  return ExampleSpec(num_hard=int(config.num_hard), min_shift=int(d.min_shift),
                     max_shift=int(d.max_shift), entries_per_clip=int(d.entries_per_clip),
                     brightness=float(d.get("brightness", 0.0)),
                     contrast=float(d.get("contrast", 0.0)),
                     max_crop_shift=int(d.get("max_crop_shift", 0)),
                     color=float(d.get("color", 0.0)), scale=float(d.get("scale", 0.0)),
                     rotation=float(d.get("rotation", 0.0)), flip=bool(d.get("flip", False)),
                     audio_gain_db=float(d.get("audio_gain_db", 0.0)),
                     noise_snr_db=float(d.get("noise_snr_db", 0.0)))
