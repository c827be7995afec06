"""Lip-sync evaluation: offset score matrices, the LRS2 clip-length protocol, offset detection.

Everything here works on embeddings or score matrices, never on a model, so the ``eval`` and
``detect`` CLIs stay thin: they embed each clip's video windows and audio windows once and
hand the embeddings to :func:`batched_offset_scores`.

Conventions (shared by every function):

* A clip of ``T`` video frames has ``P = T - 4`` five-frame window positions.
  ``video_emb[i]`` embeds frames ``[i, i + 5)``; ``audio_emb[j]`` embeds the audio window
  that starts at video frame ``j``.
* A score matrix is ``[P, 2 * max_offset + 1]``; column ``c`` is the offset
  ``delta = c - max_offset`` and holds ``cos(video_i, audio_{i + delta + audio_shift})``.
  Audio windows outside the clip are *unavailable* and hold ``-inf``, so they can never win
  an argmax.
* Positive offset = audio late: the audio that belongs to video frame ``i`` is found at audio
  window ``i + k``.
* Accuracies are fractions in ``[0, 1]``; only the table and plots show percentages.

Protocol (the VocaLiST / LRS2 test protocol that the paper follows): for a clip length
``K`` in 5, 7, ..., 15 the score row of position ``i`` is the mean of the five-frame score
rows of positions ``i - h .. i + h``, ``h = (K - 5) // 2``, clipped at the clip's ends.
A position is correct when the best offset of that row is within ``tolerance`` frames of
zero; a clip's accuracy is the mean over its positions; the reported accuracy is the mean
over clips, and the pooled mean over all positions is reported beside it.

Two rules decide what "best offset" means when audio windows are missing (``rule=``):

* ``"vocalist"`` (default): VocaLiST's ``test_lrs2.py``, which the paper's Table 1 follows,
  so numbers are comparable with the literature. Its ``calc_pdist`` writes -1000 into the
  scores of missing audio, and that value drags any window mean containing it below every
  real mean: an offset missing in *any* row of the window is out. The best offset is the
  *first* (most negative) maximum, and a position is correct when it is within tolerance.
* ``"available"`` (stricter): each offset is averaged over the rows of the window where it
  is available, and stays ``-inf`` only where the centre row lacks it, so more offsets
  compete near the clip's ends; a position is correct only when an offset within tolerance
  scores *strictly* higher than every offset outside it (ties count against the model, so
  constant scores earn 0 %). Long-clip accuracies come out a few points lower.

Both rules agree at ``K = 5`` except on exact ties. Under ``"vocalist"`` a position where
every offset is out (impossible when the audio covers the video: offset 0 exists in every
row) counts as wrong, where VocaLiST's -1000 arithmetic would still pick the offset missing
in the fewest rows. Two quirks of VocaLiST's script are not reproduced: for a clip with
fewer than ``K - 5`` positions its slicing emits ``K - 5`` rows of prefix/suffix means (here:
one row per position), and for a clip with fewer than 30 positions ``calc_pdist`` masks only
one side of each edge row, scoring the other side's missing audio against zero padding,
which a score matrix cannot express. Offset detection takes the first (most negative)
maximum under either rule.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Literal, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from modeformer_jax.errors import ClipTooShortError
from modeformer_jax.model import windows

Array = jax.Array

NUM_FRAMES = windows.WINDOW_FRAMES   # video frames per window
MAX_OFFSET = 15             # offsets -15..+15 frames, the literature's standard range
CLIP_LENGTHS = (5, 7, 9, 11, 13, 15)
FRAME_MS = windows.FRAME_MS  # 40 ms: 25 fps video

Rule = Literal["vocalist", "available"]
RULES: tuple[str, ...] = ("vocalist", "available")
DEFAULT_RULE: Rule = "vocalist"   # the literature's rule (module docstring)

_EPS = 1e-6


# ----------------------------------------------------------------------------------------
# Score matrices.
# ----------------------------------------------------------------------------------------
def _check_embeddings(video: Any, audio: Any, batched: bool) -> None:
  ndim = 3 if batched else 2
  what = "[N, P, D]" if batched else "[P, D]"
  if video.ndim != ndim or audio.ndim != ndim:
    raise ValueError(f"video and audio embeddings must be {what}; got shapes "
                     f"{tuple(video.shape)} and {tuple(audio.shape)}")
  if video.shape[-1] != audio.shape[-1]:
    raise ValueError(f"embedding widths differ: video {video.shape[-1]} vs audio "
                     f"{audio.shape[-1]}")
  if batched and video.shape[0] != audio.shape[0]:
    raise ValueError(f"batch sizes differ: video {video.shape[0]} vs audio {audio.shape[0]}")


def _check_offsets(max_offset: int, audio_shift: int) -> None:
  if not isinstance(max_offset, (int, np.integer)) or max_offset < 0:
    raise ValueError(f"max_offset must be a non-negative int, got {max_offset!r}")
  if not isinstance(audio_shift, (int, np.integer)):
    raise ValueError(f"audio_shift must be an int (frames), got {audio_shift!r}")


def _unit(x: Array) -> Array:
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), _EPS)


def _clip_scores(video: Array, audio: Array, video_len: Array, audio_len: Array,
                 max_offset: int, audio_shift: int) -> Array:
  """Score matrix of one (possibly padded) clip; rows >= video_len are all -inf."""
  p, pa = video.shape[0], audio.shape[0]
  v, a = _unit(video), _unit(audio)
  # Zero-pad the audio so that every offset is a static slice of length P; the padded rows
  # are masked out below, so their value (a zero vector) never reaches the output.
  pad_left = max(0, max_offset - audio_shift)
  pad_right = max(0, p + max_offset + audio_shift - pa)
  a_pad = jnp.pad(a, ((pad_left, pad_right), (0, 0)))
  audio_index = jnp.arange(a_pad.shape[0]) - pad_left
  available = (audio_index >= 0) & (audio_index < audio_len)
  row_ok = jnp.arange(p) < video_len
  columns = []
  for delta in range(-max_offset, max_offset + 1):
    start = pad_left + delta + audio_shift
    window = jax.lax.slice_in_dim(a_pad, start, start + p)
    # Elementwise product + sum rather than einsum: exact f32 on every backend, and XLA
    # fuses the 31 reductions into one pass over the video embeddings.
    score = jnp.sum(v * window, axis=-1)
    ok = jax.lax.slice_in_dim(available, start, start + p) & row_ok
    columns.append(jnp.where(ok, score, -jnp.inf))
  return jnp.stack(columns, axis=1)


@functools.partial(jax.jit, static_argnames=("max_offset", "audio_shift"))
def offset_scores(video_emb: Array, audio_emb: Array, max_offset: int = MAX_OFFSET,
                  audio_shift: int = 0) -> Array:
  """Offset score matrix ``float32 [P, 2*max_offset+1]`` of one clip.

  ``video_emb [P, D]``, ``audio_emb [Pa, D]`` (normally ``Pa == P``); entry ``[i, c]`` is
  ``cos(video_i, audio_{i + c - max_offset + audio_shift})`` or ``-inf`` where that audio
  window is outside ``[0, Pa)``. Every offset is a dot product of embeddings computed once.
  """
  _check_embeddings(video_emb, audio_emb, batched=False)
  _check_offsets(max_offset, audio_shift)
  return _clip_scores(video_emb, audio_emb, video_emb.shape[0], audio_emb.shape[0],
                      max_offset, audio_shift)


@functools.partial(jax.jit, static_argnames=("max_offset", "audio_shift"))
def batched_offset_scores(video: Array, audio: Array, lengths: Array,
                          audio_lengths: Array | None = None, *,
                          max_offset: int = MAX_OFFSET, audio_shift: int = 0) -> Array:
  """Offset score matrices of ``N`` padded clips: ``float32 [N, Pmax, 2*max_offset+1]``.

  ``video [N, Pmax, D]`` and ``audio [N, Pamax, D]`` are zero- (or garbage-) padded;
  ``lengths [N]`` are the true window counts (``audio_lengths`` defaults to ``lengths``).
  Padded rows and columns that reach padded audio are ``-inf``; strip rows with
  :func:`unpad_scores`. Clips are independent, so sharding ``N`` over a mesh needs nothing
  more than sharded inputs.
  """
  _check_embeddings(video, audio, batched=True)
  _check_offsets(max_offset, audio_shift)
  lengths = jnp.asarray(lengths, jnp.int32)
  audio_lengths = lengths if audio_lengths is None else jnp.asarray(audio_lengths, jnp.int32)
  if lengths.shape != (video.shape[0],) or audio_lengths.shape != (video.shape[0],):
    raise ValueError(f"lengths must be [N={video.shape[0]}], got {lengths.shape} and "
                     f"{audio_lengths.shape}")
  per_clip = functools.partial(_clip_scores, max_offset=max_offset, audio_shift=audio_shift)
  return jax.vmap(per_clip)(video, audio, lengths, audio_lengths)


def offset_scores_np(video_emb: np.ndarray, audio_emb: np.ndarray,
                     max_offset: int = MAX_OFFSET, audio_shift: int = 0) -> np.ndarray:
  """Plain NumPy loop version of :func:`offset_scores`, kept as the reference."""
  video_emb, audio_emb = np.asarray(video_emb), np.asarray(audio_emb)
  _check_embeddings(video_emb, audio_emb, batched=False)
  _check_offsets(max_offset, audio_shift)
  v = video_emb.astype(np.float64)
  a = audio_emb.astype(np.float64)
  v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), _EPS)
  a /= np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), _EPS)
  out = np.full((v.shape[0], 2 * max_offset + 1), -np.inf, np.float32)
  for i in range(v.shape[0]):
    for c in range(2 * max_offset + 1):
      j = i + c - max_offset + audio_shift
      if 0 <= j < a.shape[0]:
        out[i, c] = v[i] @ a[j]
  return out


def unpad_scores(scores: Any, lengths: Sequence[int]) -> list[np.ndarray]:
  """Splits batched ``[N, Pmax, C]`` scores into per-clip ``[P_n, C]`` NumPy arrays."""
  scores = np.asarray(scores)
  lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
  if scores.ndim != 3 or len(lengths) != scores.shape[0]:
    raise ValueError(f"expected scores [N, Pmax, C] and N lengths, got {scores.shape} and "
                     f"{len(lengths)} lengths")
  if any(n < 0 or n > scores.shape[1] for n in lengths):
    raise ValueError(f"lengths {lengths} outside [0, {scores.shape[1]}]")
  return [scores[k, :n] for k, n in enumerate(lengths)]


# ----------------------------------------------------------------------------------------
# The clip-length protocol.
# ----------------------------------------------------------------------------------------
def _check_scores(scores: Any) -> tuple[np.ndarray, int]:
  """Returns float64 scores and max_offset; rejects NaN and +inf."""
  s = np.asarray(scores, dtype=np.float64)
  if s.ndim != 2 or s.shape[1] % 2 != 1:
    raise ValueError(f"scores must be [P, 2*max_offset+1] (odd column count), got {s.shape}")
  if np.isnan(s).any() or np.isposinf(s).any():
    raise ValueError("scores contain NaN or +inf; only -inf (unavailable) is allowed")
  return s, (s.shape[1] - 1) // 2


def _half_width(clip_length: int) -> int:
  if (not isinstance(clip_length, (int, np.integer)) or clip_length < NUM_FRAMES
      or (clip_length - NUM_FRAMES) % 2):
    raise ValueError(f"clip length must be an odd int >= {NUM_FRAMES}, got {clip_length!r}")
  return (clip_length - NUM_FRAMES) // 2


def _check_rule(rule: str) -> None:
  if rule not in RULES:
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def average_scores(scores: Any, clip_length: int, rule: Rule = DEFAULT_RULE) -> np.ndarray:
  """Clip-length-``K`` score rows: each row averaged with its ``(K-5)//2`` neighbours.

  Windows are clipped at the clip's ends. ``rule="vocalist"``: an offset unavailable in any
  row of the window is ``-inf``; ``rule="available"``: an offset is averaged over the rows
  where it is available and is ``-inf`` only where the centre row lacks it (module docstring).
  """
  s, _ = _check_scores(scores)
  _check_rule(rule)
  h = _half_width(clip_length)
  p = s.shape[0]
  finite = np.isfinite(s)
  values = np.where(finite, s, 0.0)
  total = np.zeros_like(s)
  count = np.zeros_like(s)        # rows of the window where the offset is available
  rows = np.zeros((p, 1))         # rows of the (clipped) window
  # Adding rows i-h..i+h in order (a missing row adds 0.0) keeps the result bit-identical
  # to a plain loop, so exact ties break the same way as in the reference implementation.
  for r in range(-h, h + 1):
    lo, hi = max(0, -r), min(p, p - r)
    if lo >= hi:
      continue
    total[lo:hi] += values[lo + r:hi + r]
    count[lo:hi] += finite[lo + r:hi + r]
    rows[lo:hi] += 1
  if rule == "vocalist":
    # VocaLiST's -1000 pad sinks any mean it enters: the offset needs every row of the window.
    keep, denominator = count == rows, rows
  else:
    keep, denominator = finite, count
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = total / denominator
  return np.where(keep, mean, -np.inf)


def best_offsets(scores: Any, clip_length: int = NUM_FRAMES,
                 rule: Rule = DEFAULT_RULE) -> np.ndarray:
  """Per-position argmax offset ``[P]`` (int) after clip-length averaging under ``rule``.

  Ties go to the first (most negative) offset. Rows where no offset is available get
  ``max_offset + 1`` (outside every tolerance below ``max_offset + 1``).
  """
  avg = average_scores(scores, clip_length, rule)
  max_offset = (avg.shape[1] - 1) // 2
  best = np.argmax(avg, axis=1) - max_offset
  return np.where(np.isfinite(avg).any(axis=1), best, max_offset + 1)


def clip_accuracy(scores: Any, clip_length: int, tolerance: int = 1,
                  rule: Rule = DEFAULT_RULE) -> tuple[int, int]:
  """``(num_correct, num_positions)`` of one clip at clip length ``K``.

  ``rule="vocalist"``: a position is correct when its first-maximum offset is within
  ``tolerance`` frames of zero. ``rule="available"``: when an offset within ``tolerance``
  scores strictly higher than every offset outside it (a tie counts as wrong). Either way a
  position without any available offset is wrong. Raises :class:`ClipTooShortError` for a
  clip without any window position.
  """
  s, max_offset = _check_scores(scores)
  _check_rule(rule)
  if s.shape[0] < 1:
    raise ClipTooShortError(
        f"clip has no {NUM_FRAMES}-frame window position (fewer than {NUM_FRAMES} frames)")
  if tolerance < 0:
    raise ValueError(f"tolerance must be >= 0 frames, got {tolerance}")
  avg = average_scores(s, clip_length, rule)
  if rule == "vocalist":
    best = np.argmax(avg, axis=1) - max_offset
    # The finite test, not best_offsets' sentinel, so a huge tolerance cannot accept it.
    correct = np.isfinite(avg).any(axis=1) & (np.abs(best) <= tolerance)
    return int(np.sum(correct)), int(s.shape[0])
  inside = np.abs(np.arange(-max_offset, max_offset + 1)) <= tolerance
  best_inside = avg[:, inside].max(axis=1)
  best_outside = (avg[:, ~inside].max(axis=1) if (~inside).any()
                  else np.full(s.shape[0], -np.inf))
  # Strict: ties with a wrong offset count as wrong (module docstring); -inf > -inf is False.
  correct = best_inside > best_outside
  return int(np.sum(correct)), int(s.shape[0])


def evaluate_scores(score_matrices: Iterable[Any], lengths: Sequence[int] = CLIP_LENGTHS,
                    tolerance: int = 1, names: Sequence[str] | None = None,
                    min_positions: int = 1, rule: Rule = DEFAULT_RULE) -> dict[str, Any]:
  """Runs the protocol over clips under ``rule``; returns accuracies per length and clip.

  Result keys: ``accuracy`` {K: mean over clips}, ``pooled_accuracy`` {K: correct positions /
  all positions}, ``clips`` (per clip: name, num_positions, correct {K}, accuracy {K}),
  ``skipped`` (name, num_positions, reason), ``num_clips``, ``num_positions``,
  ``num_skipped``, ``lengths``, ``tolerance``, ``rule``. Clips with fewer than
  ``min_positions`` window positions are skipped with a logged reason, never silently
  dropped. With no evaluated clip the accuracies are NaN.
  """
  _check_rule(rule)
  lengths = tuple(int(k) for k in lengths)
  for k in lengths:
    _half_width(k)
  if min_positions < 1:
    raise ValueError(f"min_positions must be >= 1, got {min_positions}")
  score_matrices = list(score_matrices)
  if names is not None and len(names) != len(score_matrices):
    raise ValueError(f"{len(names)} names for {len(score_matrices)} score matrices")
  clips, skipped = [], []
  totals = {k: 0 for k in lengths}
  for index, scores in enumerate(score_matrices):
    name = str(names[index]) if names is not None else f"clip_{index}"
    s, _ = _check_scores(scores)
    p = s.shape[0]
    if p < min_positions:
      reason = (f"{name}: {p} window position(s) ({p + NUM_FRAMES - 1} frames), need at "
                f"least {min_positions} ({min_positions + NUM_FRAMES - 1} frames)")
      logging.warning("skipping clip %s", reason)
      skipped.append({"name": name, "num_positions": p, "reason": reason})
      continue
    correct = {k: clip_accuracy(s, k, tolerance, rule)[0] for k in lengths}
    for k in lengths:
      totals[k] += correct[k]
    clips.append({"name": name, "num_positions": p, "correct": correct,
                  "accuracy": {k: correct[k] / p for k in lengths}})
  num_positions = sum(c["num_positions"] for c in clips)
  nan = float("nan")
  accuracy = {k: (float(np.mean([c["accuracy"][k] for c in clips])) if clips else nan)
              for k in lengths}
  pooled = {k: (totals[k] / num_positions if num_positions else nan) for k in lengths}
  return {"accuracy": accuracy, "pooled_accuracy": pooled, "clips": clips,
          "skipped": skipped, "num_clips": len(clips), "num_skipped": len(skipped),
          "num_positions": num_positions, "lengths": list(lengths), "tolerance": tolerance,
          "rule": rule}


# ----------------------------------------------------------------------------------------
# Offset detection.
# ----------------------------------------------------------------------------------------
def vote(hist: np.ndarray, key: np.ndarray, *, pool: bool = False,
         around: int | None = None) -> int:
  """The per-frame vote: the index of ``hist`` (votes per offset, offset 0 in the middle)
  with the most votes; ties to the larger ``key`` (the mean similarity), then to the
  smallest offset. The one vote rule of the protocol and of the analysis.

  ``pool``: each offset's votes pooled with its two neighbours' first (the analysis: a
  peak near a half frame splits its positions' votes between two frames). ``around``: only
  indices within one of it can win.
  """
  votes = np.convolve(hist, np.ones(3), "same") if pool else hist
  idx = np.arange(hist.size)
  if around is not None:
    votes = np.where(np.abs(idx - around) <= 1, votes, -np.inf)
  peaks = np.flatnonzero(votes == votes.max())
  # lexsort: the last key is the primary one.
  return int(peaks[np.lexsort((np.abs(idx[peaks] - hist.size // 2), -key[peaks]))[0]])


def detect_offset(scores: Any, clip_length: int = NUM_FRAMES, frame_ms: float = FRAME_MS,
                  rule: Rule = DEFAULT_RULE) -> dict[str, Any]:
  """Detects a clip's audio offset from its score matrix.

  * ``per_frame_best [P]``: best offset of every position (first maximum after
    ``clip_length`` averaging under ``rule``, as in :func:`best_offsets`; at the default
    ``clip_length=5`` both rules give the raw score rows).
  * ``histogram [C]``: counts of those offsets, column ``c`` = offset ``c - max_offset``.
  * ``mean_curve [C]``: each offset's score averaged over the positions where it is
    available (NaN where it never is).
  * ``offset_frames``: the largest histogram peak; ties go to the higher ``mean_curve``, then
    the offset nearest zero. ``offset_ms = offset_frames * frame_ms``; positive = audio late.
  * ``confidence``: ``mean_curve[offset] - median(mean_curve)``, the similarity form of
    SyncNet's median-minus-minimum distance margin, taken at the predicted offset so it
    describes the reported answer (~0: no evidence; larger: a sharper peak).
  * Also ``curve_offset_frames`` (argmax of ``mean_curve``), ``vote_fraction`` (share of
    positions voting for the prediction), ``offsets``, ``num_positions``, ``clip_length``,
    ``rule``.
  """
  s, max_offset = _check_scores(scores)
  p = s.shape[0]
  if p < 1:
    raise ClipTooShortError(
        f"clip has no {NUM_FRAMES}-frame window position (fewer than {NUM_FRAMES} frames)")
  avg = average_scores(s, clip_length, rule)
  finite = np.isfinite(avg)
  if not finite.any(axis=1).all():
    bad = int(np.flatnonzero(~finite.any(axis=1))[0])
    raise ValueError(f"position {bad} has no available audio window in +-{max_offset} "
                     "frames; is the audio missing or shifted past the clip?")
  offsets = np.arange(-max_offset, max_offset + 1)
  best_idx = np.argmax(avg, axis=1)
  histogram = np.bincount(best_idx, minlength=2 * max_offset + 1)
  n_avail = finite.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_curve = np.where(finite, avg, 0.0).sum(axis=0) / n_avail
  mean_curve = np.where(n_avail > 0, mean_curve, np.nan)
  curve_key = np.where(np.isnan(mean_curve), -np.inf, mean_curve)
  pick = vote(histogram, curve_key)
  median = float(np.nanmedian(mean_curve))
  offset = int(offsets[pick])
  return {
      "offset_frames": offset,
      "offset_ms": offset * float(frame_ms),
      "confidence": float(mean_curve[pick] - median),
      "histogram": histogram.astype(np.int64),
      "mean_curve": mean_curve.astype(np.float64),
      "per_frame_best": (best_idx - max_offset).astype(np.int64),
      "offsets": offsets,
      "curve_offset_frames": int(offsets[np.argmax(curve_key)]),
      "vote_fraction": float(histogram[pick] / p),
      "num_positions": int(p),
      "clip_length": int(clip_length),
      "rule": rule,
  }


def dataset_histogram(results: Sequence[Mapping[str, Any]],
                      max_offset: int | None = None) -> dict[str, Any]:
  """Dataset-level offset histogram (the paper's Fig. 4) from :func:`detect_offset` results.

  ``counts``: clips per predicted offset; ``frame_counts``: per-position votes summed over
  clips; plus ``offsets``, ``num_clips`` and ``mean_offset`` (NaN without clips).
  """
  results = list(results)
  if max_offset is None:
    max_offset = (len(results[0]["histogram"]) - 1) // 2 if results else MAX_OFFSET
  width = 2 * max_offset + 1
  counts = np.zeros(width, np.int64)
  frame_counts = np.zeros(width, np.int64)
  for k, r in enumerate(results):
    hist = np.asarray(r["histogram"])
    off = int(r["offset_frames"])
    if hist.shape != (width,) or abs(off) > max_offset:
      raise ValueError(f"result {k}: histogram of {hist.shape[0]} offsets / offset {off} "
                       f"does not fit max_offset={max_offset}")
    counts[off + max_offset] += 1
    frame_counts += hist
  offsets = np.arange(-max_offset, max_offset + 1)
  mean = float((counts * offsets).sum() / len(results)) if results else float("nan")
  return {"offsets": offsets, "counts": counts, "frame_counts": frame_counts,
          "num_clips": len(results), "mean_offset": mean}
