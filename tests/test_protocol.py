"""Sync evaluation tests: offset scores, the clip-length protocol, offset detection, plots."""
import json
import math

import jax
import numpy as np
import pytest

from modeformer_jax import jsonio
from modeformer_jax.evaluation import plots, protocol as se
from modeformer_jax.training import mesh as mesh_lib

M = se.MAX_OFFSET
C = 2 * M + 1


# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------
def _ref_clip_accuracy(scores, k, tol):
  """Literal reading of the ``rule="available"`` protocol, one position and offset at a time."""
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


_PAD = -1000.0   # what VocaLiST's calc_pdist writes into the scores of missing audio


def _vocalist_reference(scores, k):
  """Plain transcription of VocaLiST's ``test_lrs2.py`` (vskadandale/vocalist) for one K.

  Returns the offsets in *their* sign convention, ``v_shift - argmax`` (a positive offset is
  audio early), one per row that the script emits; it emits ``max(P, K - 5)`` rows.
  """
  p, width = scores.shape
  v_shift = (width - 1) // 2
  # calc_pdist: the score of a missing audio window is set to -1000.
  d = []
  for i in range(p):
    row = []
    for c in range(width):
      row.append(scores[i, c] if math.isfinite(scores[i, c]) else _PAD)
    d.append(row)
  d = np.array(d, dtype=np.float64)
  h = (k - 5) // 2
  # Middle rows: sum of the 2h+1 shifted slices d[h+r : -(h-r)] divided by K - 4, exactly
  # like "(dist_tensor_k5[1:-1] + dist_tensor_k5[2:] + dist_tensor_k5[:-2]) / 3" for K = 7.
  middle = None
  for r in [0] + [s for j in range(1, h + 1) for s in (j, -j)]:
    end = -(h - r) if h - r > 0 else None
    part = d[h + r:end]
    middle = part.copy() if middle is None else middle + part
  middle = middle / (2 * h + 1)
  # Edge rows: "dk15_m5 = torch.mean(dist_tensor_k5[:6])", ..., "dk15_m1 = ...[:10]" on the
  # left, "dk15_p1 = torch.mean(dist_tensor_k5[-10:])", ..., "dk15_p5 = ...[-6:]" on the right.
  left = [d[:2 * h + 1 - j].mean(axis=0) for j in range(h, 0, -1)]
  right = [d[-(2 * h + 1 - j):].mean(axis=0) for j in range(1, h + 1)]
  rows = left + list(middle) + right
  offsets = []
  for row in rows:
    best = 0
    for c in range(width):   # torch.argmax: the first maximum wins
      if row[c] > row[best]:
        best = c
    offsets.append(v_shift - best)
  return offsets


def _vocalist_correct(offsets, tol=1):
  """Counts the script's "offsets_k == -1, 0 or 1", generalised to a tolerance."""
  return sum(1 for o in offsets if -tol <= o <= tol)


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
  mesh = mesh_lib.make_mesh(jax.devices()[:n])
  sharding = mesh_lib.batch_sharding(mesh)
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
def test_available_rule_matches_loop_reference(p):
  rng = np.random.default_rng(100 + p)
  for trial in range(4):
    s = _random_scores(rng, p, peak=int(rng.integers(-2, 3)), sprinkle=0.1 * trial)
    for k in se.CLIP_LENGTHS:
      for tol in (0, 1, 2):
        got = se.clip_accuracy(s, k, tol, rule="available")
        assert got == _ref_clip_accuracy(s, k, tol), (trial, k, tol)


def test_evaluate_scores_available_rule_matches_reference():
  rng = np.random.default_rng(7)
  clips = [_random_scores(rng, p, peak=int(rng.integers(-1, 2)), sprinkle=0.05)
           for p in (1, 4, 9, 17, 40)]
  res = se.evaluate_scores(clips, rule="available")
  assert res["rule"] == "available"
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


def test_available_rule_ties_count_as_wrong():
  # A degenerate model (constant scores) earns nothing, also at the edges where the first
  # available offset is close to zero.
  s = np.where(_availability(8), 0.3, -np.inf)
  for k in se.CLIP_LENGTHS:
    assert se.clip_accuracy(s, k, rule="available") == (0, 8)
  s = np.zeros((3, C))
  s[:, M] = s[:, M + 4] = 1.0
  assert se.clip_accuracy(s, 5, rule="available") == (0, 3)
  s[:, M + 4] = 0.999
  assert se.clip_accuracy(s, 5, rule="available") == (3, 3)
  # A one-position clip has only offset 0 available: trivially correct, whatever the score.
  one = np.where(_availability(1), -0.7, -np.inf)
  assert se.clip_accuracy(one, 5, rule="available") == (1, 1)
  assert se.clip_accuracy(one, 5) == (1, 1)


def test_edge_position_with_true_offset_unavailable():
  p = 8
  s = np.where(_availability(p), 0.0, -np.inf)
  s[:, M] = 1.0                   # the true offset is the peak ...
  s[0, M] = -np.inf               # ... but unavailable at position 0,
  s[0, M + 5] = 0.5               # where a wrong offset is the best available one.
  for rule in se.RULES:
    assert se.clip_accuracy(s, 5, rule=rule) == (p - 1, p)
  # "available": neighbours do not resurrect an offset missing in the centre row.
  assert se.clip_accuracy(s, 7, rule="available") == (p - 1, p)
  avg = se.average_scores(s, 7, rule="available")
  assert np.isneginf(avg[0, M])
  # Position 1 averages delta=0 over rows 1 and 2 only (row 0 unavailable there).
  assert avg[1, M] == pytest.approx(1.0)
  # Offset +5 at position 1 averages rows 0..2 where available: (0.5 + 0 + 0) / 3.
  assert avg[1, M + 5] == pytest.approx(0.5 / 3)
  # "vocalist": delta=0 is missing in row 0, so it is out at positions 0 and 1 (rows 0..2),
  # where +5 (mean 0.25 over rows 0..1, 0.5 / 3 over rows 0..2) wins instead.
  assert se.clip_accuracy(s, 7) == (p - 2, p)
  avg = se.average_scores(s, 7)
  assert np.isneginf(avg[:2, M]).all() and avg[2, M] == 1.0
  assert avg[0, M + 5] == 0.25 and avg[1, M + 5] == pytest.approx(0.5 / 3)
  np.testing.assert_array_equal(se.best_offsets(s, 7)[:3], [5, 5, 0])


@pytest.mark.parametrize("rule", se.RULES)
def test_averaging_clips_at_ends(rule):
  rng = np.random.default_rng(11)
  s = rng.normal(size=(5, C))
  avg = se.average_scores(s, 9, rule=rule)   # h = 2
  np.testing.assert_allclose(avg[0], s[0:3].mean(0))
  np.testing.assert_allclose(avg[1], s[0:4].mean(0))
  np.testing.assert_allclose(avg[2], s.mean(0))
  np.testing.assert_allclose(avg[3], s[1:5].mean(0))
  np.testing.assert_allclose(avg[4], s[2:5].mean(0))
  np.testing.assert_array_equal(se.average_scores(s, 5, rule=rule), s)


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
# The default rule against the VocaLiST transcription.
# ----------------------------------------------------------------------------------------
def _vocalist_case(rng, p, peak, holes):
  """Scores in [-1, 1] with the geometric -inf pattern, a bump and random holes.

  Offset 0 never gets a hole, as in VocaLiST's setting (audio as long as the video), so
  some offset always has audio in every row of a window (see the all-out test below).
  """
  s = rng.uniform(-1, 1, size=(p, C))
  if peak is not None:
    s[:, M + peak] = np.minimum(s[:, M + peak] + 0.6, 1.0)
  holes = rng.random((p, C)) < holes
  holes[:, M] = False
  return np.where(_availability(p) & ~holes, s, -np.inf)


@pytest.mark.parametrize("p", [1, 2, 3, 6, 10, 11, 16, 31, 45])
def test_vocalist_rule_matches_transcription(p):
  rng = np.random.default_rng(300 + p)
  for trial in range(6):
    peak = None if trial == 5 else int(rng.integers(-3, 4))
    s = _vocalist_case(rng, p, peak, holes=0.08 * trial)
    for k in se.CLIP_LENGTHS:
      if p < k - 5:   # the script's slicing emits K - 5 rows there (test below)
        continue
      ref = _vocalist_reference(s, k)
      assert len(ref) == p
      np.testing.assert_array_equal(se.best_offsets(s, k), -np.array(ref), err_msg=str(k))
      for tol in (0, 1, 2):
        assert se.clip_accuracy(s, k, tol) == (_vocalist_correct(ref, tol), p), (trial, k)


def test_vocalist_averages_match_transcription_values():
  # Where an offset is in, the mean is the script's mean; where it is out, the script's mean
  # carries at least one -1000 and sits far below every real score.
  rng = np.random.default_rng(12)
  s = _vocalist_case(rng, 23, peak=1, holes=0.2)
  d = np.where(np.isfinite(s), s, _PAD)
  for k in se.CLIP_LENGTHS:
    h = (k - 5) // 2
    avg = se.average_scores(s, k)
    for i in range(s.shape[0]):
      ref = d[max(0, i - h):i + h + 1].mean(axis=0)
      inside = np.isfinite(avg[i])
      np.testing.assert_allclose(avg[i, inside], ref[inside], rtol=0, atol=1e-12)
      assert (ref[~inside] < _PAD / k + 1).all()


def test_vocalist_edges_use_raggedly_clipped_windows():
  # One bump per row, so every row's verdict names the rows its window spans.
  p, k = 12, 11   # h = 3
  s = np.zeros((p, C))
  s[0, M + 4] = 5.0   # a wrong offset, strong in row 0 only
  ref = _vocalist_reference(s, k)
  best = se.best_offsets(s, k)
  np.testing.assert_array_equal(best, -np.array(ref))
  # Positions 0..3 have row 0 in their window ([0, i + 3]); position 4 starts at row 1.
  np.testing.assert_array_equal(best[:5], [4, 4, 4, 4, -M])
  # Right edge, mirrored: windows [i - 3, P - 1].
  s = np.zeros((p, C))
  s[p - 1, M - 4] = 5.0
  best = se.best_offsets(s, k)
  np.testing.assert_array_equal(best, -np.array(_vocalist_reference(s, k)))
  np.testing.assert_array_equal(best[-5:], [-M, -4, -4, -4, -4])


def test_vocalist_offset_missing_in_a_neighbour_row_is_out():
  # Fails under the old "average over available rows" rule. The true offset 0 scores 0.5
  # everywhere; the wrong offset -3 scores 1.0 wherever its audio exists (rows >= 3).
  p = 10
  s = np.where(_availability(p), 0.0, -np.inf)
  s[:, M] = 0.5
  s[3:, M - 3] = 1.0
  for k in (7, 9, 11, 13, 15):
    h = (k - 5) // 2
    ref = _vocalist_reference(s, k)
    # Offset -3 is out until the window [i - h, i + h] starts at row 3 or later.
    expected = [0 if i - h < 3 else -3 for i in range(p)]
    np.testing.assert_array_equal(se.best_offsets(s, k), expected)
    np.testing.assert_array_equal(se.best_offsets(s, k), -np.array(ref))
    assert se.clip_accuracy(s, k) == (_vocalist_correct(ref), p) == (min(p, 3 + h), p)
    # The stricter rule lets -3 compete from its centre row on: only positions 0..2 pass.
    assert se.clip_accuracy(s, k, rule="available") == (3, p)
  res = se.evaluate_scores([s], lengths=(5, 15))
  assert res["rule"] == "vocalist"
  assert res["accuracy"] == {5: 0.3, 15: 0.8}
  assert se.evaluate_scores([s], lengths=(5, 15), rule="available")["accuracy"] == {
      5: 0.3, 15: 0.3}


def test_vocalist_ties_go_to_the_first_maximum():
  # Fails under the old rule, which counted every tie against the model.
  s = np.zeros((3, C))
  s[:, M] = s[:, M + 4] = 1.0          # tie between 0 and +4: 0 comes first, correct
  assert se.clip_accuracy(s, 5) == (3, 3) == (_vocalist_correct(_vocalist_reference(s, 5)), 3)
  assert se.clip_accuracy(s, 5, rule="available") == (0, 3)
  s = np.zeros((3, C))
  s[:, M - 4] = s[:, M] = 1.0          # tie between -4 and 0: -4 comes first, wrong
  assert se.clip_accuracy(s, 5) == (0, 3) == (_vocalist_correct(_vocalist_reference(s, 5)), 3)
  np.testing.assert_array_equal(se.best_offsets(s, 5), [-4, -4, -4])
  # Constant scores: the first offset with audio in the whole window wins. It is -M in the
  # middle of a long clip and near 0 at its start, as in VocaLiST's script.
  p = 40
  s = np.where(_availability(p), 0.25, -np.inf)
  for k in se.CLIP_LENGTHS:
    h = (k - 5) // 2
    ref = _vocalist_reference(s, k)
    best = se.best_offsets(s, k)
    np.testing.assert_array_equal(best, -np.array(ref))
    np.testing.assert_array_equal(best, [-min(M, max(0, i - h)) for i in range(p)])
    assert se.clip_accuracy(s, k) == (_vocalist_correct(ref), p) == (2 + h, p)


def test_vocalist_rule_with_every_offset_out_counts_as_wrong():
  # Not VocaLiST's setting (offset 0 always has audio there), so we part from the script:
  # its -1000 means still pick the offset missing in the fewest rows; we call it wrong.
  s = np.zeros((5, C))
  s[0, :M] = -np.inf
  s[2, M:] = -np.inf
  # K = 9: the windows of positions 0..2 hold rows 0 and 2, so no offset is in there.
  avg = se.average_scores(s, 9)
  assert np.isneginf(avg[:3]).all() and np.isfinite(avg[3:]).any(axis=1).all()
  assert np.isfinite(se.average_scores(s, 5)).any(axis=1).all()
  np.testing.assert_array_equal(se.best_offsets(s, 9)[:3], [M + 1] * 3)
  # Even a tolerance that accepts every offset leaves those positions wrong.
  assert se.clip_accuracy(s, 9, tolerance=M + 1) == (2, 5)
  assert all(abs(o) <= M for o in _vocalist_reference(s, 9)[:3])   # the script names one


def test_vocalist_script_short_clip_quirk_is_not_reproduced():
  # With fewer than K - 5 positions the script's slices emit K - 5 rows of prefix/suffix
  # means; we keep one row per position (module docstring).
  rng = np.random.default_rng(8)
  s = _vocalist_case(rng, 4, peak=0, holes=0.0)
  assert len(_vocalist_reference(s, 15)) == 10
  assert se.best_offsets(s, 15).shape == (4,) and se.clip_accuracy(s, 15)[1] == 4


def test_rules_agree_at_five_frames_without_ties():
  rng = np.random.default_rng(13)
  clips = [_vocalist_case(rng, p, peak=0, holes=0.1) for p in (3, 12, 30)]
  a = se.evaluate_scores(clips, lengths=(5,))
  b = se.evaluate_scores(clips, lengths=(5,), rule="available")
  assert a["clips"] == b["clips"] and a["accuracy"] == b["accuracy"]


def test_unknown_rule_raises():
  s = np.zeros((3, C))
  for call in (lambda: se.average_scores(s, 5, rule="first"),
               lambda: se.clip_accuracy(s, 5, rule="strict"),
               lambda: se.evaluate_scores([s], rule="vocaList"),
               lambda: se.detect_offset(s, rule="")):
    with pytest.raises(ValueError, match="rule must be one of"):
      call()


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
  text = json.dumps(jsonio.jsonable({"hist": h, "res": results[0],
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
  det_json = json.loads(json.dumps(jsonio.jsonable(det)))   # NaN curve ends -> None -> NaN
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


def test_vote_is_the_protocol_rule_and_the_pooled_analysis_rule():
  """protocol.vote against a brute-force reference: most votes (pooled with neighbours when
  asked), then the larger key, then the smallest |offset|; ties are made common on purpose."""
  rng = np.random.default_rng(3)
  for _ in range(500):
    n = 2 * int(rng.integers(1, 8)) + 1
    hist = rng.integers(0, 3, n)
    key = rng.integers(0, 2, n).astype(float)
    for pool in (False, True):
      around = int(rng.integers(0, n)) if pool and rng.random() < 0.5 else None
      votes = [sum(hist[j] for j in (i - 1, i, i + 1) if 0 <= j < n) if pool else hist[i]
               for i in range(n)]
      allowed = [i for i in range(n) if around is None or abs(i - around) <= 1]
      want = min(allowed, key=lambda i: (-votes[i], -key[i], abs(i - n // 2)))
      assert se.vote(hist, key, pool=pool, around=around) == want
