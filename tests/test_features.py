"""Feature extraction: timestamps, mel, alignment under shifts, crops, rejections, real clips."""
import csv
import math
import pathlib

import av
import numpy as np
import pytest
import scipy.signal

from modeformer_jax import media
from modeformer_jax.media import crops, features as F
from modeformer_jax.model import windows as W
from modeformer_jax.model.input_spec import crop_for_layout

SR = F.SAMPLE_RATE
CLICK_FRAMES = (8, 21, 34, 47)   # video frames at which the generated clip has a noise burst


def _write_mp4(path, frames, fps=25, audio=None, audio_rate=SR, layout="mono",
               faststart=False):
  """Writes an h264 (+ AAC) mp4 with PyAV: frames uint8 [T,H,W,3], audio float [C,N]."""
  container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
  vs = container.add_stream("libx264", rate=fps)
  vs.height, vs.width = frames.shape[1:3]
  vs.pix_fmt = "yuv420p"
  vs.options = {"crf": "18"}
  a_s = container.add_stream("aac", rate=audio_rate, layout=layout) if audio is not None else None
  for i, img in enumerate(frames):
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    frame.pts = i
    container.mux(vs.encode(frame))
  container.mux(vs.encode())
  if a_s is not None:
    audio = np.asarray(audio, np.float32)
    for s in range(0, audio.shape[1], 1024):
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, s:s + 1024]),
                                         format="fltp", layout=layout)
      frame.sample_rate, frame.pts = audio_rate, s
      container.mux(a_s.encode(frame))
    container.mux(a_s.encode())
  container.close()
  return str(path)


def _square_frames(n, size=160, seed=0):
  """A bright square moving over a dark, slightly noisy background."""
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 40, (n, size, size, 3), dtype=np.uint8)
  for i in range(n):
    x = (5 * i) % (size - 30)
    frames[i, size // 2:size // 2 + 30, x:x + 30] = 230
  return frames


def _speechy_audio(n_frames, seed=0):
  """Quiet noise, a gliding harmonic tone, and 60 ms noise bursts at CLICK_FRAMES."""
  rng = np.random.default_rng(seed)
  n = n_frames * SR // F.FPS
  t = np.arange(n) / SR
  f0 = 140 + 60 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / SR
  x = 0.05 * sum(np.sin(k * phase) / k for k in range(1, 8)) + 0.003 * rng.standard_normal(n)
  for f in CLICK_FRAMES:
    s = f * SR // F.FPS
    if s + 960 > n:
      break
    x[s:s + 960] += 0.4 * rng.standard_normal(960) * np.hanning(960)
  return x[None].astype(np.float32)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
  """Generated mp4 clips, written once for the module."""
  d = tmp_path_factory.mktemp("gen")
  clips = {}
  clips["sync"] = _write_mp4(d / "sync.mp4", _square_frames(60), audio=_speechy_audio(60))
  # 30 fps, each frame's grey level encodes its index; 44.1 kHz stereo, tone on the left.
  n30 = 36
  grey = np.repeat(np.arange(n30, dtype=np.uint8)[:, None, None, None] * 7, 64, 1)
  grey = np.repeat(np.repeat(grey, 64, 2), 3, 3)
  n = int(n30 / 30 * 44100)
  tone = np.zeros((2, n), np.float32)
  tone[0] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 44100)
  clips["fps30"] = _write_mp4(d / "fps30.mp4", grey, fps=30, audio=tone, audio_rate=44100,
                              layout="stereo")
  clips["silent"] = _write_mp4(d / "silent.mp4", _square_frames(40))
  clips["short"] = _write_mp4(d / "short.mp4", _square_frames(20), audio=_speechy_audio(20))
  clips["audio_short"] = _write_mp4(d / "audio_short.mp4", _square_frames(60),
                                    audio=_speechy_audio(40))
  # Truncated: index at the end (lost), and index first (media data cut at 70%).
  data = pathlib.Path(clips["sync"]).read_bytes()
  (d / "truncated.mp4").write_bytes(data[:len(data) // 2])
  clips["truncated"] = str(d / "truncated.mp4")
  full = _write_mp4(d / "faststart.mp4", _square_frames(60), audio=_speechy_audio(60),
                    faststart=True)
  data = pathlib.Path(full).read_bytes()
  (d / "truncated_faststart.mp4").write_bytes(data[:len(data) * 7 // 10])
  clips["truncated_faststart"] = str(d / "truncated_faststart.mp4")
  (d / "random.mp4").write_bytes(np.random.default_rng(1).bytes(20000))
  clips["random"] = str(d / "random.mp4")
  return clips


# ----------------------------------------------------------------------------------------
# Pure helpers.
# ----------------------------------------------------------------------------------------

def test_mel_start_is_round_3_2_t_and_windows_fit():
  for t in range(2000):
    assert W.mel_start(t) == math.floor(3.2 * t + 0.5)   # 3.2 t never ends in .5
    assert W.num_mel_frames(t) == math.ceil(round(3.2 * t, 6))
  for n in range(5, 300):
    assert W.mel_start(n - 5) + 16 <= W.num_mel_frames(n)
  # 5 frames always span exactly 16 mel frames.
  assert all(W.mel_start(t + 5) - W.mel_start(t) == 16 for t in range(500))


def test_frame_indices_same_rate_is_identity_despite_rounded_timestamps():
  ts = np.round(np.arange(50) * 0.04 + 0.0004, 3)   # millisecond timestamps, a bit late
  np.testing.assert_array_equal(media.frame_indices_for_timestamps(ts, 25, 2.0), np.arange(50))


def _nearest_reference(ts: np.ndarray, instants: np.ndarray) -> np.ndarray:
  # Brute force: the nearest timestamp; the later of two neighbours only when it is nearer
  # by more than the 1 ms allowed for rounded container timestamps.
  out = []
  for t in instants:
    d = np.abs(ts - t)
    j = int(np.argmin(d))
    before = ts <= t
    if before.any():
      i = int(np.flatnonzero(before)[np.argmax(ts[before])])
      if not d[i] - d[j] > 1e-3:
        j = i
    out.append(j)
  return np.array(out)


def test_frame_indices_30_and_2997_fps():
  # Output t samples time t/25; the answer is the source frame nearest to it, so a 30 fps
  # source carries no systematic lag (on-screen-at-t would lag by half a source frame).
  ts30 = np.arange(60) / 30
  idx30 = media.frame_indices_for_timestamps(ts30, 25, 2.0)
  assert idx30.shape == (50,)
  np.testing.assert_array_equal(idx30[:6], [0, 1, 2, 4, 5, 6])   # 0.12 s is nearest 0.1333
  np.testing.assert_array_equal(idx30, (12 * np.arange(50) + 5) // 10)   # round(1.2 t)

  ts2997 = np.arange(300) * 1001 / 30000
  dur = 300 * 1001 / 30000
  idx = media.frame_indices_for_timestamps(ts2997, 25, dur)
  assert idx.shape == (int(dur * 25),)
  instants = np.arange(idx.size) / 25
  np.testing.assert_array_equal(idx, _nearest_reference(ts2997, instants))
  assert np.all(np.abs(ts2997[idx] - instants) <= 0.5 * 1001 / 30000 + 1e-3)
  assert np.all(np.diff(idx) >= 1)            # 29.97 -> 25 only drops, never repeats
  # No lag on average (the on-screen rule would be 16.7 ms late).
  assert abs(np.mean(ts2997[idx] - instants)) < 2e-3


def test_frame_indices_variable_frame_rate_and_unsorted():
  ts = np.array([0.0, 0.033, 0.1, 0.133, 0.3, 0.31])
  expected_times = [0.0, 0.033, 0.1, 0.133, 0.133, 0.133, 0.3, 0.3]   # nearest to t/25
  idx = media.frame_indices_for_timestamps(ts, 25, 0.35)
  np.testing.assert_allclose(ts[idx], expected_times)
  perm = np.array([3, 0, 5, 1, 4, 2])
  np.testing.assert_allclose(ts[perm][media.frame_indices_for_timestamps(ts[perm], 25, 0.35)],
                             expected_times)
  assert media.frame_indices_for_timestamps(np.zeros(0), 25, 1.0).shape == (0,)
  # At 40 ms the later frame (59 ms) is nearer by only 0.5 ms, within timestamp rounding:
  # the earlier one (20.5 ms) shows. At 80 ms the later one (98.5 ms) is 2.5 ms nearer.
  tie = np.array([0.0, 0.0205, 0.059, 0.0985])
  np.testing.assert_array_equal(media.frame_indices_for_timestamps(tie, 25, 0.12), [0, 1, 3])


def test_shift_audio_pads_and_trims():
  x = np.arange(1, 3201, dtype=np.float32)
  y = F.shift_audio(x, 2)
  assert y.shape == x.shape
  np.testing.assert_array_equal(y[:1280], 0)
  np.testing.assert_array_equal(y[1280:], x[:-1280])
  z = F.shift_audio(x, -1)
  np.testing.assert_array_equal(z[:-640], x[640:])
  np.testing.assert_array_equal(z[-640:], 0)


def test_feature_error_fields():
  e = F.FeatureError("a/b.mp4", "no_face", "face found in 0 of 25 frames")
  assert (e.path, e.kind, e.reason) == ("a/b.mp4", "no_face", "face found in 0 of 25 frames")
  assert str(e) == "a/b.mp4: face found in 0 of 25 frames"
  assert isinstance(e, ValueError)
  with pytest.raises(ValueError):
    F.FeatureError("x", "bogus", "y")


# ----------------------------------------------------------------------------------------
# Mel.
# ----------------------------------------------------------------------------------------

def _reference_mel(x):
  """log_mel recomputed with scipy's STFT (an independent framing/FFT)."""
  c = F.MEL_CONFIG
  y = np.append(x[:1], x[1:] - c["preemphasis"] * x[:-1])
  win = scipy.signal.get_window("hann", c["win_length"])
  _, _, z = scipy.signal.stft(y, window=win, nperseg=c["n_fft"],
                              noverlap=c["n_fft"] - c["hop_length"], boundary="zeros",
                              padded=False, detrend=False, return_onesided=True)
  mag = np.abs(z) * win.sum()                  # undo scipy's 1/sum(window) scaling
  db = 20 * np.log10(np.maximum(F.mel_basis() @ mag, c["amin"])) - c["ref_level_db"]
  a = c["max_abs_value"]
  return np.clip(2 * a * (db - c["min_level_db"]) / -c["min_level_db"] - a, -a, a)


def test_log_mel_matches_scipy_reference_and_config():
  rng = np.random.default_rng(0)
  x = (0.1 * rng.standard_normal(SR)).astype(np.float32)
  mel = F.log_mel(x)
  assert mel.dtype == np.float32 and mel.shape == (80, 1 + SR // 200)
  np.testing.assert_allclose(mel, _reference_mel(x.astype(np.float64)), atol=2e-3)
  c = F.MEL_CONFIG
  assert (c["sample_rate"], c["n_mels"], c["n_fft"], c["hop_length"], c["win_length"],
          c["fmin"], c["fmax"], c["preemphasis"]) == (16000, 80, 800, 200, 800, 55, 7600, 0.97)


def test_log_mel_shape_range_silence_and_tone_bin():
  assert F.log_mel(np.zeros(SR, np.float32), num_frames=25).shape == (80, 80)
  np.testing.assert_array_equal(F.log_mel(np.zeros(5000, np.float32)), F.MEL_SILENCE)
  # Exactly ceil(3.2 T) columns whatever the audio length; missing audio is silence.
  for n_frames, n_samples in [(7, 640 * 7), (7, 100), (13, 640 * 40), (35, 640 * 35 - 1)]:
    m = F.log_mel(np.ones(n_samples, np.float32) * 0.1, n_frames)
    assert m.shape == (80, math.ceil(3.2 * n_frames))
  short = F.log_mel(0.1 * np.ones(640, np.float32), 10)
  np.testing.assert_array_equal(short[:, 6:], F.MEL_SILENCE)   # past 640 + 400 samples
  loud = F.log_mel(np.random.default_rng(0).uniform(-1, 1, SR).astype(np.float32))
  assert loud.min() >= -4 and loud.max() <= 4 and loud.max() > 0
  # A 2 kHz tone peaks in the mel bin whose centre frequency is nearest 2 kHz.
  import librosa
  centres = librosa.mel_frequencies(82, fmin=55, fmax=7600)[1:-1]
  tone = 0.3 * np.sin(2 * np.pi * 2000 * np.arange(SR) / SR).astype(np.float32)
  peak = np.argmax(F.log_mel(tone)[:, 40])
  assert abs(peak - np.argmin(np.abs(centres - 2000))) <= 1


def test_log_mel_click_lands_on_mel_start():
  # A click at the first sample of video frame t is centred on mel frame 3.2 t.
  for t in (5, 11, 17):
    x = np.zeros(SR, np.float32)
    x[t * 640] = 1.0
    energy = F.log_mel(x, 25).mean(axis=0)
    assert abs(int(np.argmax(energy)) - 3.2 * t) <= 0.5


# ----------------------------------------------------------------------------------------
# Generated clips.
# ----------------------------------------------------------------------------------------

def _window(mel, start):
  return mel[:, start:start + 16]


def test_generated_clip_shapes_and_click_alignment(gen):
  clip = F.extract_clip(gen["sync"], crop_for_layout("lrs2"))
  assert clip.num_frames == 60 and clip.fps == 25 and clip.source_fps == pytest.approx(25)
  assert clip.lips.shape == (60, 48, 96, 3) and clip.lips.dtype == np.uint8
  assert clip.mel.shape == (80, 192) and clip.mel.dtype == np.float32
  assert clip.duration == pytest.approx(2.4, abs=1e-3)
  # The bursts survive AAC encoding and decoding on the video clock (the encoder's
  # priming delay is undone): each peaks within 1.5 mel frames (19 ms) after its frame
  # start (a 60 ms burst is centred 30 ms = 2.4 mel frames after it starts).
  energy = clip.mel.mean(axis=0)
  for f in CLICK_FRAMES:
    lo = W.mel_start(f)
    peak = lo - 3 + int(np.argmax(energy[lo - 3:lo + 8]))
    assert abs(peak - (lo + 2.4)) <= 1.5, (f, peak, lo)


@pytest.mark.parametrize("k", [5, 3, -4])
def test_audio_shift_moves_mel_by_3_2_k(gen, k):
  base = F.extract_clip(gen["sync"], crop_for_layout("lrs2")).mel
  shifted = F.extract_clip(gen["sync"], crop_for_layout("lrs2"), audio_shift_frames=k).mel
  ts = [t for t in range(0, 55) if 0 <= t + k <= 55 and W.mel_start(t + k) >= 3]
  def gap(shifted_start):
    return np.mean([np.abs(_window(shifted, shifted_start(t))
                           - _window(base, W.mel_start(t))).mean() for t in ts])
  aligned = gap(lambda t: W.mel_start(t + k))
  unaligned = gap(W.mel_start)
  if k % 5 == 0:
    # 3.2 k is a whole number of mel hops: the mel columns are the same numbers.
    assert aligned < 1e-4, aligned
  else:
    # round(3.2(t+k)) - round(3.2 t) is off 3.2 k by up to 0.4 hop (5 ms): close, not equal.
    assert aligned < 0.25, aligned
  assert unaligned > 5 * max(aligned, 0.05), (aligned, unaligned)
  # Burst peaks move by 3.2 k mel frames.
  e0, e1 = base.mean(axis=0), shifted.mean(axis=0)
  for f in CLICK_FRAMES:
    if 3 <= W.mel_start(f + k) < shifted.shape[1] - 8:
      p0 = W.mel_start(f) - 3 + int(np.argmax(e0[W.mel_start(f) - 3:W.mel_start(f) + 8]))
      lo = W.mel_start(f + k)
      p1 = lo - 3 + int(np.argmax(e1[lo - 3:lo + 8]))
      assert abs((p1 - p0) - 3.2 * k) <= 1


def test_decode_30fps_by_timestamp_and_stereo_44k(gen):
  dec = media.decode(gen["fps30"])
  assert dec.frames.shape == (30, 64, 64, 3)          # 1.2 s at 25 fps
  assert dec.source_fps == pytest.approx(30, abs=0.01)
  grey = dec.frames[:, 32, 32].mean(axis=1)
  np.testing.assert_array_equal(np.round(grey / 7), (12 * np.arange(30) + 5) // 10)  # nearest
  assert dec.audio.dtype == np.float32 and dec.audio.ndim == 1
  assert abs(dec.audio.size / SR - 1.2) < 0.05
  spectrum = np.abs(np.fft.rfft(dec.audio[1000:-1000]))
  assert abs(np.argmax(spectrum) * SR / (dec.audio.size - 2000) - 1000) < 5
  # Left-only tone of amplitude 0.5: the silent right channel is left out (it would halve the
  # level), so mono is the left channel, RMS 0.5 / sqrt(2).
  assert np.sqrt(np.mean(dec.audio[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
  assert [c.name for c in dec.audio_source.channels] == ["FL"]
  assert "left out FR" in dec.audio_source.describe()


@pytest.mark.parametrize("ext,vcodec,acodec,rate", [
    ("mkv", "libx264", "aac", 48000), ("mov", "libx264", "aac", 22050),
    ("mpg", "mpeg1video", "mp2", 44100)])   # MPEG-PS: streams start at 0.5 s, s16 audio
def test_other_containers(tmp_path, ext, vcodec, acodec, rate):
  path = str(tmp_path / f"clip.{ext}")
  container = av.open(path, "w")
  vs = container.add_stream(vcodec, rate=25)
  vs.width, vs.height, vs.pix_fmt = 128, 96, "yuv420p"
  a_s = container.add_stream(acodec, rate=rate, layout="stereo")
  frames = np.pad(_square_frames(40, size=96), ((0, 0), (0, 0), (16, 16), (0, 0)))
  for i, img in enumerate(frames):
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    frame.pts = i
    container.mux(vs.encode(frame))
  container.mux(vs.encode())
  n, step = int(1.6 * rate), a_s.codec_context.frame_size or 1024
  x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
  fmt = a_s.codec_context.format.name
  for s in range(0, n, step):
    chunk = np.stack([x[s:s + step]] * 2)
    chunk = (chunk * 32767).astype(np.int16) if fmt.startswith("s16") else chunk.astype(np.float32)
    if not fmt.endswith("p"):     # packed formats interleave the channels
      chunk = chunk.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="stereo")
    frame.sample_rate, frame.pts = rate, s
    container.mux(a_s.encode(frame))
  container.mux(a_s.encode())
  container.close()
  dec = media.decode(path)
  assert dec.frames.shape == (40, 96, 128, 3)
  assert dec.duration == pytest.approx(1.6, abs=1e-3) and dec.audio_missing < 0.05
  assert abs(dec.audio.size / SR - 1.6) < 0.05
  rms = np.sqrt(np.mean(dec.audio[2000:-2000] ** 2))
  assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.1)   # identical channels: no 3 dB gain


@pytest.mark.parametrize("name,kind", [
    ("random", "corrupt"), ("truncated", "corrupt"), ("truncated_faststart", "corrupt"),
    ("silent", "no_audio"),
    ("short", "too_short"), ("audio_short", "audio_short")])
def test_bad_files_raise_feature_error(gen, name, kind):
  with pytest.raises(F.FeatureError) as info:
    F.extract_clip(gen[name], crop_for_layout("lrs2"))
  assert info.value.kind == kind, str(info.value)
  assert info.value.path == gen[name] and str(info.value).startswith(gen[name] + ": ")


def test_missing_file_and_bad_layout(tmp_path, gen):
  with pytest.raises(F.FeatureError) as info:
    media.decode(str(tmp_path / "nope.mp4"))
  assert info.value.kind == "corrupt"
  with pytest.raises(ValueError, match="layout"):
    crop_for_layout("lrs9")
  # The short clip passes with a lower minimum.
  assert F.extract_clip(gen["short"], crop_for_layout("lrs2"), min_frames=20).num_frames == 20


# ----------------------------------------------------------------------------------------
# Real clips (skipped without ../shared/data).
# ----------------------------------------------------------------------------------------

def _clips_table(real_clips_dir):
  with open(real_clips_dir / "CLIPS.tsv") as f:
    return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["lrs2_crop", "vox2_crop", "hdtf", "raw"])
def test_real_clips_decode(real_clips_dir, folder):
  table = _clips_table(real_clips_dir)
  files = sorted((real_clips_dir / folder).glob("*.mp4"))
  assert len(files) == sum(1 for k in table if k.startswith(folder + "/")) > 0
  for path in files:
    row = table[f"{folder}/{path.name}"]
    dec = media.decode(str(path))
    n = dec.frames.shape[0]
    assert dec.frames.dtype == np.uint8 and dec.frames.shape[3] == 3
    # The table's duration is the container's (the longer stream); video may be 0.1 s less.
    assert abs(dec.duration - float(row["duration_s"])) < 0.1, (path, dec.duration)
    assert abs(n - dec.duration * 25) <= 1, (path, n, dec.duration)
    assert dec.audio.dtype == np.float32 and dec.audio.ndim == 1
    assert abs(dec.audio.size / SR - dec.duration) < 0.1, (path, dec.audio.size)
    assert 0.01 < np.abs(dec.audio).max() < 2.0
    src = row["video"].split("avg_fps=")[1]
    num, _, den = src.partition("/")
    nominal = float(num) / float(den or 1)
    if "vfr" not in path.name:
      assert dec.source_fps == pytest.approx(nominal, rel=0.01), path
    if folder in ("hdtf", "raw"):
      lips = crops.lip_crop(dec.frames, crop_for_layout("raw"))
      assert lips.shape == (n, 48, 96, 3)
      # Crops track a moving mouth: frames differ, but not like unrelated images.
      assert 0 < np.abs(np.diff(lips.astype(np.int16), axis=0)).mean() < 40
    else:
      assert crops.lip_crop(dec.frames[:10], crop_for_layout("crop")).shape == (10, 48, 96, 3)
    del dec


def test_real_rate_conversion(real_clips_dir):
  expected_fps = {"astorfi_sample_2997fps.mp4": 30000 / 1001,
                  "retalking_face4_30fps.mp4": 30.0,
                  "retalking_face1_vfr.mp4": None}
  for name, fps in expected_fps.items():
    path = real_clips_dir / "raw" / name
    with av.open(str(path)) as c:
      pairs = [(fr.time, fr.to_ndarray(format="rgb24")[::16, ::16]) for fr in c.decode(video=0)]
    times = np.array([p[0] for p in pairs])
    thumbs = np.stack([p[1] for p in pairs])
    dec = media.decode(str(path))
    span = times[-1] - times[0] + np.median(np.diff(times))
    assert dec.duration == pytest.approx(span, abs=1e-3)
    assert dec.frames.shape[0] == int(np.floor(span * 25 + 1e-3))
    # Output frame t is the source frame nearest to t/25 s after the first frame.
    idx = media.frame_indices_for_timestamps(times - times[0], 25, span)
    np.testing.assert_array_equal(dec.frames[:, ::16, ::16], thumbs[idx])
    if fps == 30.0:
      np.testing.assert_array_equal(idx, (12 * np.arange(idx.size) + 5) // 10)
    if fps is not None:
      assert dec.source_fps == pytest.approx(fps, rel=1e-3)
    else:
      assert np.ptp(np.diff(times)) > 0.02          # really variable frame rate
      assert dec.source_fps == pytest.approx(times.size / span)


def test_real_short_clip_rejected(real_clips_dir):
  with pytest.raises(F.FeatureError) as info:
    F.extract_clip(str(real_clips_dir / "lrs2_crop" / "00006.mp4"), crop_for_layout("lrs2"))
  assert info.value.kind == "too_short"
  assert "00006.mp4" in str(info.value) and "35" in info.value.reason


def test_real_clip_shift_moves_stored_mel(real_clips_dir):
  path = str(real_clips_dir / "vox2_crop" / "00067.mp4")
  base = F.extract_clip(path, crop_for_layout("vox2"))
  shifted = F.extract_clip(path, crop_for_layout("vox2"), audio_shift_frames=5)
  assert base.mel.shape == shifted.mel.shape == (80, W.num_mel_frames(base.num_frames))
  np.testing.assert_array_equal(base.lips, shifted.lips)
  np.testing.assert_allclose(shifted.mel[:, 16 + 3:], base.mel[:, 3:-16], atol=1e-4)
  assert np.abs(shifted.mel[:, 16 + 3:] - base.mel[:, 3 + 16:]).mean() > 0.1


def test_grid_clip_face_detection(grid_dir):
  path = str(grid_dir / "video" / "bbaf2n.mp4")
  clip = F.extract_clip(path, crop_for_layout("raw"))
  assert clip.lips.shape == (75, 48, 96, 3) and clip.mel.shape == (80, 240)
  dec = media.decode(path)
  indices, candidates = crops.detect_faces(dec.frames)
  assert np.mean([len(c) > 0 for c in candidates]) > 0.8
