"""Embedding whole clips once and scoring them with the standard sync protocol.

Used by ``python -m modeformer_jax.eval``, by offset detection and by the in-training
validation. A clip of T frames has P = T - 4 five-frame windows; its P video windows and P
audio windows are each embedded exactly once (in fixed-size chunks, batched across clips
and sharded over the devices), and all 31 offsets are then dot products
(``protocol.batched_offset_scores``).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np

from modeformer_jax.data import records
from modeformer_jax.evaluation import protocol
from modeformer_jax.model import windows
from modeformer_jax.model.models import ModEFormer
from modeformer_jax.training import mesh as mesh_lib


class Embedder:
  """Jitted, device-sharded embedding of video and audio windows in fixed-size chunks."""

  def __init__(self, model: ModEFormer, params: Any, chunk: int = 256,
               mesh: jax.sharding.Mesh | None = None):
    self.model = model
    self.mesh = mesh or mesh_lib.make_mesh()
    n = self.mesh.devices.size
    self.chunk = int(math.ceil(chunk / n) * n)
    self.sharding = mesh_lib.batch_sharding(self.mesh)
    rep = mesh_lib.replicated(self.mesh)
    self._rep = rep
    self.set_params(params)
    self._video = jax.jit(model.embed_video, in_shardings=(rep, self.sharding),
                          out_shardings=self.sharding)
    self._audio = jax.jit(model.embed_audio, in_shardings=(rep, self.sharding),
                          out_shardings=self.sharding)

  def set_params(self, params: Any) -> None:
    """Swaps in new parameters (e.g. during training) without recompiling."""
    self.params = jax.device_put(params, self._rep)

  def _submit(self, fn, x: np.ndarray) -> "Pending":
    parts = []
    for s in range(0, x.shape[0], self.chunk):
      part = x[s:s + self.chunk]
      n = part.shape[0]
      if n < self.chunk:  # pad to the fixed chunk: one compiled shape, no retrace
        part = np.concatenate([part, np.repeat(part[-1:], self.chunk - n, axis=0)])
      parts.append((fn(self.params, jax.device_put(part, self.sharding)), n))
    return Pending(parts, self.model.config.embed_dim)

  def video(self, windows: np.ndarray) -> np.ndarray:
    """Embeddings ``[N, D]`` of video windows ``[N, 5, H, W, 3]``."""
    return self._submit(self._video, windows).result()

  def audio(self, windows: np.ndarray) -> np.ndarray:
    """Embeddings ``[N, D]`` of audio windows ``[N, 80, MEL_WINDOW]``."""
    return self._submit(self._audio, windows).result()

  def video_async(self, windows: np.ndarray) -> "Pending":
    """``video``, started and not waited for: JAX dispatches asynchronously, so the tower
    computes in XLA's threads while the caller does other work until ``result()``. The same
    chunks and programs as ``video``: the same numbers."""
    return self._submit(self._video, windows)

  def audio_async(self, windows: np.ndarray) -> "Pending":
    """``audio``, started and not waited for (see ``video_async``)."""
    return self._submit(self._audio, windows)


class Pending:
  """Embeddings being computed (``Embedder.video_async``): ``result()`` waits for them."""

  def __init__(self, parts: list[tuple[jax.Array, int]], dim: int):
    self._parts, self._dim = parts, dim

  def ready(self) -> bool:
    """Whether ``result()`` would return without waiting."""
    return all(y.is_ready() for y, _ in self._parts)

  def result(self) -> np.ndarray:
    """The embeddings ``[N, D]`` (blocks until the tower is done)."""
    out = [np.asarray(y)[:n] for y, n in self._parts]
    return np.concatenate(out) if out else np.zeros((0, self._dim))


def embedded_scores(v: np.ndarray, a: np.ndarray, lengths: list[int], *, audio_shift: int = 0,
                    max_offset: int = protocol.MAX_OFFSET) -> list[np.ndarray]:
  """Offset score matrices ``[P_i, 31]`` from the concatenated window embeddings of clips
  of ``lengths`` positions (``v``, ``a``: ``[sum(lengths), D]``)."""
  pmax = int(math.ceil(max(lengths) / 32) * 32)  # bucketed: few compiled shapes
  d = v.shape[-1]
  vp = np.zeros((len(lengths), pmax, d), np.float32)
  ap = np.zeros((len(lengths), pmax, d), np.float32)
  o = 0
  for i, n in enumerate(lengths):
    vp[i, :n], ap[i, :n] = v[o:o + n], a[o:o + n]
    o += n
  scores = protocol.batched_offset_scores(vp, ap, np.array(lengths), max_offset=max_offset,
                                           audio_shift=audio_shift)
  return list(protocol.unpad_scores(scores, lengths))


def score_clips(embedder: Embedder, clips: Iterable[tuple[str, np.ndarray, np.ndarray]],
                *, audio_shift: int = 0, max_offset: int = protocol.MAX_OFFSET,
                group: int = 16) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
  """Yields ``(name, scores [P, 31] or None, skip reason or None)`` per clip.

  ``clips`` yields ``(name, lips [T,48,96,3], mel [80,Tm])``. Clips are grouped so that
  several short clips share one embedding chunk.
  """
  def flush(batch):
    if not batch:
      return
    v = embedder.video(np.concatenate([b[1] for b in batch]))
    a = embedder.audio(np.concatenate([b[2] for b in batch]))
    lengths = [b[1].shape[0] for b in batch]
    for (name, *_), s in zip(batch, embedded_scores(v, a, lengths, audio_shift=audio_shift,
                                                    max_offset=max_offset)):
      yield name, s, None

  pending: list = []
  for name, lips, mel in clips:
    try:
      vw, aw = windows.clip_windows(lips, mel)
    except ValueError as e:
      yield name, None, f"{name}: {e}"
      continue
    pending.append((name, vw, aw))
    if len(pending) >= group:
      yield from flush(pending)
      pending = []
  yield from flush(pending)


def record_clips(data_dir: str, split: str, max_clips: int | None = None,
                 indices: Sequence[int] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """``(clip_id, lips, mel)`` of a prepared split (all clips, a prefix, or given indices)."""
  source = records.open_split(data_dir, split)
  if indices is None:
    indices = range(len(source) if max_clips is None else min(max_clips, len(source)))
  for i in indices:
    rec = records.decode_record(source[int(i)])
    n = int(rec["num_frames"])
    yield str(rec["clip_id"]), records.decode_lips(rec, 0, n), records.decode_mel(rec)


def evaluate(model: ModEFormer, params: Any, clips: Iterable[tuple[str, np.ndarray, np.ndarray]],
             *, audio_shift: int = 0, lengths: Sequence[int] = protocol.CLIP_LENGTHS,
             max_offset: int = protocol.MAX_OFFSET, rule: str = protocol.DEFAULT_RULE,
             embedder: Embedder | None = None, progress: bool = False,
             total: int | None = None) -> dict:
  """Runs the protocol on clips; returns ``protocol.evaluate_scores``'s dict + skips."""
  embedder = embedder or Embedder(model, params)
  names, mats, skipped = [], [], []
  it = score_clips(embedder, clips, audio_shift=audio_shift, max_offset=max_offset)
  if progress:
    from tqdm import tqdm
    it = tqdm(it, total=total, desc="eval", unit="clip")
  for name, scores, reason in it:
    if scores is None:
      skipped.append({"name": name, "num_positions": 0, "reason": reason})
    else:
      names.append(name)
      mats.append(scores)
  result = protocol.evaluate_scores(mats, lengths=lengths, names=names, rule=rule)
  result["skipped"] = list(result.get("skipped", [])) + skipped
  result["num_skipped"] = len(result["skipped"])
  return result
