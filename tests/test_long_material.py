"""Long-video sync-QC material (data_prep.synthetic.long): offsets, drift, composite, truth."""
import json
import pathlib

import numpy as np
import pytest

from data_prep import synthetic
from data_prep.synthetic import long as longmat
from modeformer_jax.media import decode

SPF = synthetic.SAMPLES_PER_FRAME


def _xcorr_lag(y: np.ndarray, x: np.ndarray, max_lag: int) -> float:
  """The delay ``d`` (|d| <= max_lag) at which ``x`` delayed by ``d`` best fits ``y``, refined
  to a fraction of a sample with a parabola through the peak."""
  n = len(x) + len(y)
  size = 1 << (n - 1).bit_length()
  c = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
  lags = np.arange(-max_lag, max_lag + 1)
  vals = c[lags % size]
  i = int(np.argmax(vals))
  if 0 < i < len(vals) - 1:
    a, b, e = vals[i - 1], vals[i], vals[i + 1]
    return lags[i] + 0.5 * (a - e) / (a - 2 * b + e)
  return float(lags[i])


def _mouth_darkness(frames: np.ndarray) -> np.ndarray:
  """Per 160x160 tile frame: the share of the mouth region much darker than its median
  (the open mouth)."""
  grey = frames[:, 80:125, 45:115].astype(np.float32).mean(-1)
  return (grey < 0.45 * np.median(grey)).mean((1, 2))


def _frame_lag(rms: np.ndarray, dark: np.ndarray, max_lag: int = 5) -> tuple[int, float]:
  """The frame delay of the loudness behind the mouth, and the correlation there."""
  best = (0, -np.inf)
  for d in range(-max_lag, max_lag + 1):
    a, b = (rms[d:], dark[:len(dark) - d]) if d >= 0 else (rms[:d], dark[-d:])
    r = float(np.corrcoef(a, b)[0, 1])
    if r > best[1]:
      best = (d, r)
  return best


@pytest.mark.parametrize("delay", [320, -960, 8])
def test_sub_frame_audio_offset_is_exact(delay):
  sp = synthetic.make_speaker(0, 2)
  f0, a0 = synthetic.render_clip(sp, 2.0, [0, 2, 2, 7])
  fd, ad = synthetic.render_clip(sp, 2.0, [0, 2, 2, 7], audio_offset_samples=delay)
  assert np.array_equal(f0, fd)                           # the video does not move
  assert _xcorr_lag(ad, a0, 2000) == pytest.approx(delay, abs=0.05)
  n = abs(delay)
  if delay > 0:
    assert np.array_equal(ad[n:], a0[:-n])
    assert np.abs(ad[:n]).max() > 1e-3                   # real audio shifted in, not zeros
  else:
    assert np.array_equal(ad[:-n], a0[n:])


def test_sample_offset_matches_frame_offset_and_refuses_both():
  sp = synthetic.make_speaker(0, 1)
  _, a_frames = synthetic.render_clip(sp, 1.0, [0, 1, 2, 3], audio_offset_frames=-3)
  _, a_samples = synthetic.render_clip(sp, 1.0, [0, 1, 2, 3], audio_offset_samples=-3 * SPF)
  assert np.array_equal(a_frames, a_samples)
  with pytest.raises(ValueError):
    synthetic.render_clip(sp, 1.0, 0, audio_offset_frames=1, audio_offset_samples=5)


SPEC = {"seed": 1, "pieces": [
    {"seconds": 2, "speaker": 0, "offset_ms": 20, "kind": "speech"},
    {"seconds": 1.2, "kind": "silence"},
    {"seconds": 0.8, "kind": "noface", "offset_ms": -30},
    {"seconds": 2, "speaker": 1, "offset_ms": 60, "kind": "speech"},
]}


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> tuple[pathlib.Path, dict]:
  path = tmp_path_factory.mktemp("long") / "pieces.mp4"
  return path, longmat.make_long_video(path, SPEC, progress=False)


def test_long_video_truth_and_file(long_video):
  path, truth = long_video
  saved = json.loads(path.with_name("pieces.truth.json").read_text())
  assert saved == json.loads(json.dumps(truth))
  assert [p["kind"] for p in truth["pieces"]] == ["speech", "silence", "noface", "speech"]
  assert [p["offset_ms"] for p in truth["pieces"]] == [20, 20, -30, 60]
  assert [p["take"] for p in truth["pieces"]] == [0, 0, 0, 1]
  assert truth["cuts_s"] == [4.0] and truth["face_changes_s"] == [3.2]
  assert truth["duration_s"] == 6.0
  # Boundaries belong to the piece starting there; the end to the last piece.
  assert longmat.truth_offset_ms(truth, 0.0) == (20.0, "speech")
  assert longmat.truth_offset_ms(truth, 1.999) == (20.0, "speech")
  assert longmat.truth_offset_ms(truth, 2.0) == (20.0, "silence")
  assert longmat.truth_offset_ms(truth, 3.2) == (-30.0, "noface")
  assert longmat.truth_offset_ms(truth, 4.0) == (60.0, "speech")
  assert longmat.truth_offset_ms(truth, 6.0) == (60.0, "speech")
  with pytest.raises(ValueError):
    longmat.truth_offset_ms(truth, 6.5)
  d = decode(str(path))
  assert d.frames.shape == (150, 160, 160, 3) and d.duration == pytest.approx(6.0)
  # Silence: room noise only, well below the speech (after the +20 ms tail of speech).
  def rms(a: float, b: float) -> float:
    return float(np.sqrt(np.mean(d.audio[int(a * 16000):int(b * 16000)] ** 2)))
  assert rms(2.3, 3.1) < 0.1 * rms(0.0, 2.0)
  # No face: the frames are smooth backdrop, without the face's edges.
  grey = d.frames.astype(np.float32).mean(-1)
  detail = np.abs(np.diff(grey, axis=2)).mean((1, 2))
  assert detail[82:98].max() < 0.5 * detail[:50].min()


def _phat_lag(y: np.ndarray, x: np.ndarray, max_lag: int, up: int = 16) -> float:
  """Delay of ``x`` in ``y`` by GCC-PHAT (whitened cross-spectrum: one sharp peak, not one
  per pitch period), to ``1 / up`` sample."""
  size = 1 << (len(x) + len(y) - 1).bit_length()
  g = np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size))
  c = np.fft.irfft(g / (np.abs(g) + 1e-12), size * up)
  lags = np.arange(-max_lag * up, max_lag * up + 1)
  return float(lags[np.argmax(c[lags % (size * up)])]) / up


def test_drift_matches_measured_lag(tmp_path):
  # 2500 ppm over 4 s: 5 ms at the start, 15 ms at the end. The reference (offset 0, no
  # drift) renders the same take: both need only the minimum plan margin.
  spec = {"seed": 3, "drift_ppm": 2500.0,
          "pieces": [{"seconds": 4, "speaker": 2, "offset_ms": 5.0}]}
  ref_spec = {"seed": 3, "pieces": [{"seconds": 4, "speaker": 2, "offset_ms": 0.0}]}
  truth = longmat.make_long_video(tmp_path / "drift.mp4", spec, progress=False)
  longmat.make_long_video(tmp_path / "ref.mp4", ref_spec, progress=False)
  assert truth["pieces"][0]["offset_ms_end"] == pytest.approx(15.0)
  y, x = decode(str(tmp_path / "drift.mp4")).audio, decode(str(tmp_path / "ref.mp4")).audio
  win = np.hanning(2000)        # 125 ms: the lag moves only 0.3 samples across it
  lags = {}
  for t in (1.0, 3.0):
    errors = []
    for c in range(int(t * 16000) - 4000, int(t * 16000) + 4001, 1000):
      lag = _phat_lag(y[c - 1000:c + 1000] * win, x[c - 1000:c + 1000] * win, 600)
      # The truth is indexed by video time: the sound heard at c was shown at c - lag.
      errors.append(lag - 16 * longmat.truth_offset_ms(truth, (c - lag) / 16000)[0])
      lags.setdefault(t, []).append(lag)
    assert abs(np.median(errors)) < 1.0, (t, errors)     # samples: 1/16 ms
  # The drift itself: 2 s later the audio is 80 samples (5 ms) later.
  assert np.median(lags[3.0]) - np.median(lags[1.0]) == pytest.approx(80, abs=2)


def test_composite_speaker_side_is_in_sync(tmp_path):
  truth = longmat.make_composite(tmp_path / "comp.mp4", 3, 4, 3.0, 80.0, seed=0)
  assert truth["speaker_side"] == "left" and truth["speaker_box"] == [0, 0, 160, 160]
  assert truth["other"]["box"] == [160, 0, 320, 160]
  d = decode(str(tmp_path / "comp.mp4"))
  assert d.frames.shape == (75, 160, 320, 3)
  rms = np.sqrt((d.audio[:75 * SPF].reshape(75, SPF) ** 2).mean(1))
  x0 = truth["speaker_box"][0]
  lag, corr = _frame_lag(rms, _mouth_darkness(d.frames[:, :, x0:x0 + 160]))
  assert lag == 2 and corr > 0.5                        # +80 ms: the sound 2 frames late
  xo = truth["other"]["box"][0]
  _, corr_other = _frame_lag(rms, _mouth_darkness(d.frames[:, :, xo:xo + 160]))
  assert corr_other < corr - 0.2


def test_stream_writer_decodes_with_right_duration(tmp_path):
  path = tmp_path / "stream.mp4"
  n, h, w = 50, 240, 320
  ramp = np.linspace(30, 220, w, dtype=np.float32)
  frames = np.empty((n, h, w, 3), np.uint8)
  for i in range(n):
    frames[i] = np.clip(ramp[None, :, None] + 2 * i, 0, 255).astype(np.uint8)
  audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n * SPF) / 16000)).astype(np.float32)
  with longmat.Mp4StreamWriter(path, w, h) as writer:
    for c in range(0, n, 7):                              # uneven chunks on purpose
      writer.write(frames[c:c + 7], audio[c * SPF:(c + 7) * SPF])
  assert not path.with_name(path.name + ".part").exists()
  d = decode(str(path))
  assert d.frames.shape == (n, h, w, 3) and d.duration == pytest.approx(2.0)
  assert n * SPF <= d.audio.size < n * SPF + 2048
  assert np.abs(d.frames.astype(np.float32) - frames).mean() < 3
  assert np.corrcoef(d.audio[:n * SPF], audio)[0, 1] > 0.99
  # A failure inside ``with`` leaves nothing behind.
  with pytest.raises(ValueError):
    with longmat.Mp4StreamWriter(tmp_path / "bad.mp4", w, h) as writer:
      writer.write(frames[:, :10])
  assert not list(tmp_path.glob("bad.mp4*"))


def test_benchmark_video_loops_takes(tmp_path):
  truth = longmat.make_benchmark_video(tmp_path / "b.mp4", minutes=0.1, size=(320, 180),
                                       piece_seconds=2.0, progress=False)
  assert [p["end_frame"] - p["start_frame"]
          for p in truth["pieces"]] == [50, 50, 50]
  assert [p["offset_ms"] for p in truth["pieces"]] == [0.0, 20.0, -60.0]
  d = decode(str(tmp_path / "b.mp4"))
  assert d.frames.shape == (150, 180, 320, 3)


def test_real_concat(real_clips_dir, tmp_path):
  clips = [real_clips_dir / "lrs2_crop" / "00001.mp4", real_clips_dir / "lrs2_crop" / "00008.mp4"]
  truth = longmat.make_real_concat(tmp_path / "real.mp4", clips, [20.0, -60.0], size=(320, 180),
                                   progress=False)
  src = [decode(str(c)) for c in clips]
  lens = [len(s.frames) for s in src]
  assert [p["end_frame"] - p["start_frame"] for p in truth["pieces"]] == lens
  assert truth["cuts_s"] == [lens[0] / 25]
  assert truth["pieces"][0]["fill_s"] == [[0.0, 0.02]]
  assert truth["pieces"][1]["box"] == [70, 0, 250, 180]
  out = decode(str(tmp_path / "real.mp4"))
  assert out.frames.shape == (sum(lens), 180, 320, 3)
  for p, s in zip(truth["pieces"], src):
    a, n = p["start_frame"] * SPF, (p["end_frame"] - p["start_frame"]) * SPF
    lag = _xcorr_lag(out.audio[a:a + n], s.audio[:n], 2000)
    assert lag == pytest.approx(p["offset_samples"], abs=1.0)
    assert longmat.truth_offset_ms(truth, p["start_s"]) == (p["offset_ms"], "speech")


def test_i420_planes_match_write_mp4_conversion():
  frames = np.random.default_rng(0).integers(0, 256, (3, 36, 50, 3), dtype=np.uint8)
  batch = synthetic.rgb_to_i420(frames)
  for i, frame in enumerate(frames):
    for mine, theirs in zip(longmat.i420_planes(frame), batch):
      assert np.array_equal(mine, theirs[i])
