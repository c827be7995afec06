"""grain input pipeline over prepared shards: content, determinism, sharding, checkpointing."""
import subprocess
import sys

import numpy as np
import pytest

from modeformer_jax.data import input_pipeline as ip, records
from modeformer_jax.evaluation import embedding
from modeformer_jax.model import windows


def _ds(mock_prepared_dir, **kw):
  spec = kw.pop("spec", ip.ExampleSpec(num_hard=3))
  args = dict(global_batch=4, spec=spec, seed=7)
  args.update(kw)
  return ip.train_dataset(str(mock_prepared_dir), "train", **args)


def test_batch_layout_and_contents_match_records(mock_prepared_dir):
  batch = _ds(mock_prepared_dir)[0]
  assert batch["video"].shape == (4, 5, 48, 96, 3) and batch["video"].dtype == np.uint8
  assert batch["audio"].shape == (4, 4, 80, 16) and batch["audio"].dtype == np.float32
  assert batch["audio_time"].shape == (4, 4) and batch["clip"].shape == (4,)
  src = records.open_split(str(mock_prepared_dir), "train")
  assert len(set(batch["clip"].tolist())) == 4  # stage 1: distinct clips
  for i in range(4):
    rec = records.decode_record(src[int(batch["clip"][i])])
    t = int(batch["video_time"][i])
    np.testing.assert_array_equal(batch["video"][i], records.decode_lips(rec, t, 5))
    mel = records.decode_mel(rec)
    for j, s in enumerate(batch["audio_time"][i]):
      m0 = windows.mel_start(int(s))
      np.testing.assert_array_equal(batch["audio"][i, j], mel[:, m0:m0 + 16])
    shifts = batch["audio_time"][i, 1:] - t
    assert batch["audio_time"][i, 0] == t
    assert np.all((np.abs(shifts) >= 2) & (np.abs(shifts) <= 15)), shifts
    assert np.all(batch["audio_time"][i] + 5 <= rec["num_frames"])
    assert np.all(batch["audio_time"][i] >= 0)


def test_hard_negative_shift_sampling_respects_bounds():
  spec = ip.ExampleSpec(num_hard=11, min_shift=2, max_shift=15)
  rng = np.random.default_rng(0)
  for n, t in [(40, 0), (40, 35), (40, 17), (12, 3)]:
    s = ip.sample_shifts(t, n, spec, rng)
    assert s.shape == (11,)
    assert np.all(np.abs(s) >= 2) and np.all(np.abs(s) <= 15)
    assert np.all((t + s >= 0) & (t + s <= n - 5))
  # Enough candidates: no repeats.
  assert len(set(ip.sample_shifts(17, 40, spec, rng).tolist())) == 11


@pytest.mark.slow
def test_deterministic_and_independent_of_workers(mock_prepared_dir):
  a = [_ds(mock_prepared_dir)[i] for i in range(3)]
  b = [_ds(mock_prepared_dir)[i] for i in range(3)]
  c = [_ds(mock_prepared_dir, seed=8)[i] for i in range(3)]
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x["audio_time"], y["audio_time"]) for x, y in zip(a, c))
  it = ip.train_iterator(str(mock_prepared_dir), "train", global_batch=4,
                         spec=ip.ExampleSpec(num_hard=3), seed=7, workers=2)
  try:
    for x in a:
      y = next(it)
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
  finally:
    del it


def test_process_sharding_partitions_the_global_batch(mock_prepared_dir):
  whole = _ds(mock_prepared_dir, global_batch=4)
  p0 = _ds(mock_prepared_dir, global_batch=4, process_index=0, process_count=2)
  p1 = _ds(mock_prepared_dir, global_batch=4, process_index=1, process_count=2)
  assert p0[0]["video"].shape[0] == 2
  # Each process reads its own part; together they never repeat a clip within a step.
  clips = np.concatenate([p0[0]["clip"], p1[0]["clip"]])
  assert len(set(clips.tolist())) == 4
  assert whole[0]["video"].shape[0] == 4


def test_stage2_has_k_entries_per_clip(mock_prepared_dir):
  spec = ip.ExampleSpec(num_hard=2, entries_per_clip=2)
  batch = _ds(mock_prepared_dir, spec=spec, global_batch=4)[0]
  clips = batch["clip"].tolist()
  assert clips[0] == clips[1] and clips[2] == clips[3] and clips[0] != clips[2]
  with pytest.raises(ValueError, match="entries_per_clip"):
    _ds(mock_prepared_dir, spec=ip.ExampleSpec(entries_per_clip=3), global_batch=4)


def test_iterator_state_restores_mid_epoch(mock_prepared_dir):
  kw = dict(global_batch=4, spec=ip.ExampleSpec(num_hard=2, brightness=10, contrast=0.1,
                                                max_crop_shift=2), seed=3, augment=True)
  it = ip.train_iterator(str(mock_prepared_dir), "train", **kw)
  next(it), next(it)
  state = it.get_state()
  expect = [next(it) for _ in range(3)]
  it2 = ip.train_iterator(str(mock_prepared_dir), "train", **kw)
  it2.set_state(state)
  for x in expect:
    y = next(it2)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_eval_windows_match_training_windows(mock_prepared_dir):
  """The eval path cuts the same (video, audio) pairs as the training path."""
  name, lips, mel = next(embedding.record_clips(str(mock_prepared_dir), "train", max_clips=1))
  vw, aw = windows.clip_windows(lips, mel)
  assert vw.shape[0] == lips.shape[0] - 4
  t = 7
  np.testing.assert_array_equal(vw[t], lips[t:t + 5])
  m0 = windows.mel_start(t)
  np.testing.assert_array_equal(aw[t], mel[:, m0:m0 + 16])


def test_import_loads_neither_pyav_nor_opencv(repo_root):
  """The training loader only needs the mel offsets, not the video decoders."""
  code = ("import sys, modeformer_jax.data.input_pipeline; "
          "print(sorted(m for m in ('av', 'cv2') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True,
                       capture_output=True, text=True).stdout
  assert out.strip() == "[]"


def test_audio_gain_and_noise_on_the_mel():
  rng = np.random.default_rng(0)
  mel = rng.uniform(-3, 3, (3, 80, 16)).astype(np.float32)
  gain = ip.ExampleSpec(audio_gain_db=6.0)
  out = ip.augment_audio(mel, gain, np.random.default_rng(1))
  shift = out - mel
  # One gain per window, +-6 dB = +-0.48 in mel units (12.5 dB per unit), never clipped here.
  assert np.allclose(shift, shift[:, :1, :1], atol=1e-5)
  assert np.all(np.abs(shift[:, 0, 0]) <= 6.0 / 12.5 + 1e-6) and np.ptp(shift[:, 0, 0]) > 0
  # Noise raises quiet bins more than loud ones (it adds power) and stays in range.
  quiet = np.full((1, 80, 16), -3.5, np.float32)
  quiet[:, :40] = 3.0
  noisy = ip.augment_audio(quiet, ip.ExampleSpec(noise_snr_db=5.0, noise_prob=1.0),
                           np.random.default_rng(2))
  assert noisy.min() >= -4 and noisy.max() <= 4
  assert (noisy[:, 40:] - quiet[:, 40:]).mean() > 1.0
  assert abs((noisy[:, :40] - quiet[:, :40]).mean()) < 0.05
  # Off: the same array back, no random numbers drawn.
  r = np.random.default_rng(3)
  assert ip.augment_audio(mel, ip.ExampleSpec(), r) is mel
  assert r.random() == np.random.default_rng(3).random()


def test_video_augmentations_keep_shape_and_old_stream():
  rng = np.random.default_rng(0)
  video = rng.integers(0, 255, (5, 48, 96, 3), dtype=np.uint8)
  video[:, :, :48] = 0   # left half dark: shows a flip
  spec = ip.ExampleSpec(color=0.1, scale=0.1, rotation=6.0, flip=True, brightness=10,
                        contrast=0.1, max_crop_shift=3)
  seen_flip = False
  for seed in range(8):
    out = ip._augment(video, spec, np.random.default_rng(seed))
    assert out.shape == video.shape and out.dtype == np.uint8
    seen_flip |= out[:, :, 60:].mean() < out[:, :, :36].mean()
  assert seen_flip
  # A config with only the older augmentations draws exactly the old random numbers.
  old = ip.ExampleSpec(brightness=10, contrast=0.1, max_crop_shift=3)
  a = np.random.default_rng(5)
  ip._augment(video, old, a)
  b = np.random.default_rng(5)
  b.integers(-3, 4, size=2)
  b.uniform(-0.1, 0.1)
  b.uniform(-10, 10)
  assert a.random() == b.random()
