"""Sync evaluation tests: offset scores, the clip-length protocol, offset detection, plots."""
import json
import math

import jax
import numpy as np
import pytest

from modeformer_jax import plots
from modeformer_jax import sync_eval as se

M = se.MAX_OFFSET
C = 2 * M + 1


# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------
def _ref_clip_accuracy(scores, k, tol):
  """Literal reading of the protocol, one position and one offset at a time."""
  p, width = scores.shape
  m = (width - 1) // 2
  h = (k - 5) // 2
  correct = 0
  for i in range(p):
    row = []
    for c in range(width):
      if not math.isfinite(scores[i, c]):
        row.append(-math.inf)   # unavailable in the centre row stays unavailable
        continue
      vals = [scores[r, c] for r in range(max(0, i - h), min(p - 1, i + h) + 1)
              if math.isfinite(scores[r, c])]
      row.append(sum(vals) / len(vals))
    inside = [v for c, v in enumerate(row) if abs(c - m) <= tol]
    outside = [v for c, v in enumerate(row) if abs(c - m) > tol]
    # A tie with a wrong offset is wrong; nothing available is wrong.
    if max(inside) > max(outside, default=-math.inf):
      correct += 1
  return correct, p


def _availability(p, max_offset=M, shift=0, pa=None):
  pa = p if pa is None else pa
  i = np.arange(p)[:, None]
  j = i + np.arange(-max_offset, max_offset + 1)[None, :] + shift
  return (j >= 0) & (j < pa)


def _random_scores(rng, p, peak=None, sprinkle=0.0):
  """Random scores with the geometric -inf pattern, an optional bump and random holes."""
  s = rng.uniform(-1, 1, size=(p, C))
  if peak is not None:
    s[:, M + peak] += 0.6
  avail = _availability(p) & (rng.random((p, C)) >= sprinkle)
  return np.where(avail, s, -np.inf)


def _embeddings(rng, n, d=8):
  return rng.normal(size=(n, d)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Offset score matrices.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 3, 20])
@pytest.mark.parametrize("shift", [0, 1, -2])
def test_offset_scores_matches_numpy(p, shift):
  rng = np.random.default_rng(p * 10 + shift)
  v, a = _embeddings(rng, p), _embeddings(rng, p)
  got = np.asarray(se.offset_scores(v, a, audio_shift=shift))
  ref = se.offset_scores_np(v, a, audio_shift=shift)
  assert got.shape == ref.shape == (p, C) and got.dtype == np.float32
  np.testing.assert_array_equal(np.isinf(got), ~_availability(p, shift=shift))
  np.testing.assert_allclose(got, ref, atol=1e-5)
  # One entry by the definition: cos(v_i, a_{i+delta+shift}).
  i = p - 1
  delta = -shift - (p - 1) // 2
  j = i + delta + shift
  cos = v[i] @ a[j] / np.linalg.norm(v[i]) / np.linalg.norm(a[j])
  assert got[i, M + delta] == pytest.approx(cos, abs=1e-5)


def test_offset_scores_different_audio_length_and_small_range():
  rng = np.random.default_rng(0)
  v, a = _embeddings(rng, 9), _embeddings(rng, 6)
  got = np.asarray(se.offset_scores(v, a, max_offset=3, audio_shift=1))
  ref = se.offset_scores_np(v, a, max_offset=3, audio_shift=1)
  assert got.shape == (9, 7)
  np.testing.assert_allclose(got, ref, atol=1e-5)
  np.testing.assert_array_equal(np.isinf(got), ~_availability(9, 3, 1, pa=6))


def test_batched_with_padding_equals_per_clip():
  rng = np.random.default_rng(1)
  lengths = [1, 7, 20, 0]
  audio_lengths = [3, 7, 18, 0]
  pmax, d = 20, 8
  # Garbage (not zeros) in the padding: it must never reach a finite score.
  video = rng.normal(size=(4, pmax, d)).astype(np.float32) * 5
  audio = rng.normal(size=(4, pmax, d)).astype(np.float32) * 5
  for shift in (0, 2):
    for audio_len in (None, audio_lengths):
      out = se.batched_offset_scores(video, audio, np.array(lengths), audio_len,
                                     audio_shift=shift)
      out = np.asarray(out)
      assert out.shape == (4, pmax, C)
      alens = lengths if audio_len is None else audio_len
      for n, (p, pa) in enumerate(zip(lengths, alens)):
        assert np.isneginf(out[n, p:]).all()
        if p == 0:
          continue
        single = se.offset_scores_np(video[n, :p], audio[n, :pa], audio_shift=shift)
        np.testing.assert_allclose(out[n, :p], single, atol=1e-5)
      split = se.unpad_scores(out, lengths)
      assert [s.shape[0] for s in split] == lengths


def test_batched_sharded_over_devices_matches_unsharded():
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  rng = np.random.default_rng(2)
  video = rng.normal(size=(n, 12, 8)).astype(np.float32)
  audio = rng.normal(size=(n, 12, 8)).astype(np.float32)
  lengths = rng.integers(1, 13, size=n).astype(np.int32)
  plain = se.batched_offset_scores(video, audio, lengths)
  sharded = se.batched_offset_scores(*(jax.device_put(x, sharding)
                                       for x in (video, audio, lengths)))
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(plain))


def test_unavailable_windows_never_win():
  # Every real pair has negative cosine, so a zero-padded window (cos 0) or a wrapped-around
  # window would win if unavailable windows leaked into the scores.
  rng = np.random.default_rng(3)
  p = 6
  audio = np.abs(rng.normal(size=(p, 8))).astype(np.float32) + 0.1
  video = -np.abs(rng.normal(size=(p, 8))).astype(np.float32) - 0.1
  s = np.asarray(se.offset_scores(video, audio))
  avail = _availability(p)
  assert (s[avail] < 0).all() and np.isneginf(s[~avail]).all()
  best = np.argmax(s, axis=1)
  assert avail[np.arange(p), best].all()
  for k in se.CLIP_LENGTHS:
    assert avail[np.arange(p), np.argmax(se.average_scores(s, k), axis=1)].all()
  assert set(se.detect_offset(s)["per_frame_best"]) <= set(range(-(p - 1), p))


def test_bad_embeddings_raise():
  v = np.zeros((4, 8), np.float32)
  with pytest.raises(ValueError, match="widths differ"):
    se.offset_scores(v, np.zeros((4, 7), np.float32))
  with pytest.raises(ValueError, match=r"\[P, D\]"):
    se.offset_scores(v[None], v[None])
  with pytest.raises(ValueError, match="max_offset"):
    se.offset_scores_np(v, v, max_offset=-1)


# ----------------------------------------------------------------------------------------
# The clip-length protocol.
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2, 3, 4, 6, 10, 31])
def test_clip_accuracy_matches_loop_reference(p):
  rng = np.random.default_rng(100 + p)
  for trial in range(4):
    s = _random_scores(rng, p, peak=int(rng.integers(-2, 3)), sprinkle=0.1 * trial)
    for k in se.CLIP_LENGTHS:
      for tol in (0, 1, 2):
        assert se.clip_accuracy(s, k, tol) == _ref_clip_accuracy(s, k, tol), (trial, k, tol)


def test_evaluate_scores_matches_reference():
  rng = np.random.default_rng(7)
  clips = [_random_scores(rng, p, peak=int(rng.integers(-1, 2)), sprinkle=0.05)
           for p in (1, 4, 9, 17, 40)]
  res = se.evaluate_scores(clips)
  for k in se.CLIP_LENGTHS:
    refs = [_ref_clip_accuracy(s, k, 1) for s in clips]
    assert res["accuracy"][k] == pytest.approx(np.mean([c / n for c, n in refs]))
    assert res["pooled_accuracy"][k] == pytest.approx(
        sum(c for c, _ in refs) / sum(n for _, n in refs))
    assert [c["correct"][k] for c in res["clips"]] == [c for c, _ in refs]
  assert res["num_clips"] == 5 and res["num_skipped"] == 0
  assert res["num_positions"] == 1 + 4 + 9 + 17 + 40


def test_known_answers():
  p = 12

  def peaked(offset):   # every offset available here; edges have their own test
    s = np.zeros((p, C))
    s[:, M + offset] = 1.0
    return s

  for k in se.CLIP_LENGTHS:
    assert se.clip_accuracy(peaked(0), k) == (p, p)
    assert se.clip_accuracy(peaked(1), k) == (p, p)
    assert se.clip_accuracy(peaked(-1), k) == (p, p)
    assert se.clip_accuracy(peaked(2), k, tolerance=1) == (0, p)
    assert se.clip_accuracy(peaked(2), k, tolerance=2) == (p, p)
    assert se.clip_accuracy(peaked(1), k, tolerance=0) == (0, p)
  res = se.evaluate_scores([peaked(0), peaked(3)])
  assert all(res["accuracy"][k] == 0.5 for k in se.CLIP_LENGTHS)


def test_ties_count_as_wrong():
  # A degenerate model (constant scores) earns nothing, also at the edges where the first
  # available offset is close to zero.
  s = np.where(_availability(8), 0.3, -np.inf)
  for k in se.CLIP_LENGTHS:
    assert se.clip_accuracy(s, k) == (0, 8)
  s = np.zeros((3, C))
  s[:, M] = s[:, M + 4] = 1.0
  assert se.clip_accuracy(s, 5) == (0, 3)
  s[:, M + 4] = 0.999
  assert se.clip_accuracy(s, 5) == (3, 3)
  # A one-position clip has only offset 0 available: trivially correct, whatever the score.
  assert se.clip_accuracy(np.where(_availability(1), -0.7, -np.inf), 5) == (1, 1)


def test_edge_position_with_true_offset_unavailable():
  p = 8
  s = np.where(_availability(p), 0.0, -np.inf)
  s[:, M] = 1.0                   # the true offset is the peak ...
  s[0, M] = -np.inf               # ... but unavailable at position 0,
  s[0, M + 5] = 0.5               # where a wrong offset is the best available one.
  assert se.clip_accuracy(s, 5) == (p - 1, p)
  # Neighbours do not resurrect an offset missing in the centre row.
  assert se.clip_accuracy(s, 7) == (p - 1, p)
  avg = se.average_scores(s, 7)
  assert np.isneginf(avg[0, M])
  # Position 1 averages delta=0 over rows 1 and 2 only (row 0 unavailable there).
  assert avg[1, M] == pytest.approx(1.0)
  # Offset +5 at position 1 averages rows 0..2 where available: (0.5 + 0 + 0) / 3.
  assert avg[1, M + 5] == pytest.approx(0.5 / 3)


def test_averaging_clips_at_ends():
  rng = np.random.default_rng(11)
  s = rng.normal(size=(5, C))
  avg = se.average_scores(s, 9)   # h = 2
  np.testing.assert_allclose(avg[0], s[0:3].mean(0))
  np.testing.assert_allclose(avg[2], s.mean(0))
  np.testing.assert_allclose(avg[4], s[2:5].mean(0))
  np.testing.assert_array_equal(se.average_scores(s, 5), s)


def test_short_clips_are_counted_as_skipped():
  rng = np.random.default_rng(5)
  clips = [np.zeros((0, C)), _random_scores(rng, 3, peak=0), _random_scores(rng, 10, peak=0)]
  res = se.evaluate_scores(clips, names=["a.mp4", "b.mp4", "c.mp4"])
  assert res["num_clips"] == 2 and res["num_skipped"] == 1
  assert res["skipped"][0]["name"] == "a.mp4" and "a.mp4" in res["skipped"][0]["reason"]
  assert "4 frames" in res["skipped"][0]["reason"]
  res = se.evaluate_scores(clips, min_positions=5)
  assert res["num_skipped"] == 2 and [c["name"] for c in res["clips"]] == ["clip_2"]
  res = se.evaluate_scores([np.zeros((0, C))])
  assert res["num_clips"] == 0 and math.isnan(res["accuracy"][5])
  with pytest.raises(se.ClipTooShortError, match="fewer than 5 frames"):
    se.clip_accuracy(np.zeros((0, C)), 5)
  with pytest.raises(ValueError, match="names"):
    se.evaluate_scores(clips, names=["x"])


def test_bad_scores_raise():
  with pytest.raises(ValueError, match="odd"):
    se.clip_accuracy(np.zeros((3, 30)), 5)
  with pytest.raises(ValueError, match="NaN"):
    se.clip_accuracy(np.full((3, C), np.nan), 5)
  with pytest.raises(ValueError, match="clip length"):
    se.clip_accuracy(np.zeros((3, C)), 6)


# ----------------------------------------------------------------------------------------
# Offset detection.
# ----------------------------------------------------------------------------------------
def test_detect_offset_recovers_injected_offsets():
  rng = np.random.default_rng(9)
  p = 50
  avail = _availability(p)
  for k in range(-7, 8):
    curve = -0.08 * np.abs(np.arange(-M, M + 1) - k)
    s = curve[None, :] + 0.05 * rng.normal(size=(p, C))
    s = np.where(avail, s, -np.inf)
    r = se.detect_offset(s)
    assert r["offset_frames"] == k and r["offset_ms"] == pytest.approx(40.0 * k)
    assert r["confidence"] > 0.3
    assert r["histogram"].sum() == p and r["histogram"].shape == (C,)
    np.testing.assert_array_equal(r["per_frame_best"], np.argmax(s, axis=1) - M)
    assert r["curve_offset_frames"] == k


@pytest.mark.parametrize("k", [-7, -2, 0, 3, 7])
def test_sign_convention_audio_late_is_positive(k):
  # The audio that belongs to video frame i sits at audio window j = i + k.
  rng = np.random.default_rng(20 + k)
  p = 40
  base = _embeddings(rng, p + 2 * abs(k) + 1, d=16)
  video = base[:p]
  audio = np.stack([base[j - k] if 0 <= j - k < p else base[p + abs(k) + j % abs(k or 1)]
                    for j in range(p)])
  s = np.asarray(se.offset_scores(video, audio))
  r = se.detect_offset(s)
  assert r["offset_frames"] == k
  # The same clip with the audio moved back by k frames reads as in sync.
  shifted = se.detect_offset(np.asarray(se.offset_scores(video, audio, audio_shift=k)))
  assert shifted["offset_frames"] == 0


def test_detect_offset_tie_break_and_clip_length():
  s = np.full((4, C), 0.0)
  s[0:2, M + 2] = 1.0
  s[2:4, M - 3] = 0.9
  assert se.detect_offset(s)["offset_frames"] == 2       # histogram tie, higher curve
  s[2:4, M - 3] = 1.1
  assert se.detect_offset(s)["offset_frames"] == -3
  # Clip-length averaging smooths the per-frame votes before the histogram.
  r = se.detect_offset(s, clip_length=15)
  assert r["clip_length"] == 15 and r["histogram"].sum() == 4


def test_detect_offset_errors():
  with pytest.raises(se.ClipTooShortError):
    se.detect_offset(np.zeros((0, C)))
  s = np.zeros((3, C))
  s[1] = -np.inf
  with pytest.raises(ValueError, match="position 1 has no available audio"):
    se.detect_offset(s)


def test_dataset_histogram_and_json():
  rng = np.random.default_rng(4)
  offsets = [1, 1, 0, -2, 1]
  results = []
  for k in offsets:
    curve = -0.1 * np.abs(np.arange(-M, M + 1) - k)
    results.append(se.detect_offset(curve[None] + 0.01 * rng.normal(size=(20, C))))
  h = se.dataset_histogram(results)
  np.testing.assert_array_equal(h["counts"], np.bincount(np.array(offsets) + M, minlength=C))
  assert h["frame_counts"].sum() == 100 and h["num_clips"] == 5
  assert h["mean_offset"] == pytest.approx(np.mean(offsets))
  text = json.dumps(se.jsonable({"hist": h, "res": results[0],
                                 "eval": se.evaluate_scores([np.zeros((0, C))])}))
  assert "NaN" not in text and json.loads(text)["hist"]["counts"][M + 1] == 3


# ----------------------------------------------------------------------------------------
# Plots and the table.
# ----------------------------------------------------------------------------------------
def _is_png(path):
  with open(path, "rb") as f:
    data = f.read()
  return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_plots_write_pngs(tmp_path):
  accs = {"ModEFormer": {k: 0.9 + 0.01 * i for i, k in enumerate(se.CLIP_LENGTHS)},
          "3D-SyncNet": {str(k): 0.7 + 0.02 * i for i, k in enumerate(se.CLIP_LENGTHS)}}
  curve = -0.1 * np.abs(np.arange(-M, M + 1) - 3)
  scores = np.where(_availability(8), curve[None] + np.zeros((8, 1)), -np.inf)
  det = se.detect_offset(scores)
  det_json = json.loads(json.dumps(se.jsonable(det)))   # NaN curve ends -> None -> NaN
  det_json["mean_curve"] = [np.nan if x is None else x for x in det_json["mean_curve"]]
  paths = [
      plots.plot_accuracy_by_length(accs, tmp_path / "acc.png"),
      plots.plot_offset(det, tmp_path / "sub" / "offset.png", title="clip.mp4"),
      plots.plot_offset(det_json, tmp_path / "offset_json.png"),
      plots.plot_offset_histogram(se.dataset_histogram([det, det]), tmp_path / "h1.png"),
      plots.plot_offset_histogram([1, 1, 0, -3, 2], tmp_path / "h2.png"),
      plots.plot_offset_histogram({0: 4, 1: 9, -1: 2}, tmp_path / "h3.png"),
      plots.plot_training_curves({"loss": [(0, 2.0), (10, 1.5), (20, 1.1)],
                                  "val_accuracy": [(10, 0.4), (20, 0.55)],
                                  "lr": []}, tmp_path / "train.png"),
      plots.plot_ablation({2: {5: 0.5, 15: 0.7}, 10: {5: 0.6, 15: 0.8},
                           "25": {"5": 0.62, "15": 0.85}}, tmp_path / "ablate.png"),
  ]
  for p in paths:
    assert _is_png(p), p


def test_format_table_has_every_row_and_column():
  rows = {"ModEFormer (paper)": {k: 0.5 + 0.0123 * i for i, k in enumerate(se.CLIP_LENGTHS)},
          "tiny": {"5": 0.25, "9": None}}
  table = plots.format_table(rows)
  lines = table.splitlines()
  assert len(lines) == 4
  for k in se.CLIP_LENGTHS:
    assert f"{k} frames" in lines[0]
  for name, accs in rows.items():
    line = next(x for x in lines if name in x)
    for k, a in accs.items():
      if a is not None:
        assert f"{100 * a:.2f}" in line
  assert lines[3].count("-") == 5   # tiny: 7, 9 (None), 11, 13, 15 missing
