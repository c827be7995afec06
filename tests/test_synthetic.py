"""The synthetic talking-mouth dataset: layout, codecs, determinism, alignment, offset."""
import hashlib
import json
import pathlib

import av
import numpy as np
import pytest

from data_prep import synthetic

SPF = synthetic.SAMPLES_PER_FRAME
TINY = dict(num_speakers=2, num_test_speakers=1, num_val_speakers=1, clips_per_speaker=2,
            min_seconds=2.0, max_seconds=2.4, seed=5, clips_per_video=1, progress=False)


def _decode(path: pathlib.Path) -> dict:
  """Frames, audio and stream facts of an mp4, read with PyAV only."""
  with av.open(str(path)) as c:
    v, a = c.streams.video[0], c.streams.audio[0]
    info = {"vcodec": v.codec_context.name, "acodec": a.codec_context.name,
            "fps": float(v.average_rate), "rate": a.rate, "channels": a.codec_context.channels,
            "size": (v.codec_context.width, v.codec_context.height),
            "pix_fmt": v.codec_context.pix_fmt}
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
  with av.open(str(path)) as c:
    chunks = [f.to_ndarray()[0] for f in c.decode(audio=0)]
  info["frames"] = np.stack(frames)
  info["audio"] = np.concatenate(chunks).astype(np.float32)
  return info


def _hashes(root: pathlib.Path) -> dict:
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted((root / "mvlrs_v1" / "main").rglob("*.mp4"))}


def _lag(x: np.ndarray, y: np.ndarray, max_lag: int) -> int:
  """The shift ``d`` (|d| <= max_lag) maximising sum x[n] y[n - d]: y delayed by d fits x."""
  n = min(len(x), len(y))
  best, best_d = -np.inf, 0
  for d in range(-max_lag, max_lag + 1):
    if d >= 0:
      s = float(np.dot(x[d:n], y[:n - d]))
    else:
      s = float(np.dot(x[:n + d], y[-d:n]))
    if s > best:
      best, best_d = s, d
  return best_d


def _mouth_darkness(frames: np.ndarray, rows=(80, 125), cols=(40, 120)) -> np.ndarray:
  """Per frame, the fraction of the region much darker than the clip's typical pixel there
  (the open mouth), relative so that dark skin does not count."""
  grey = frames[:, rows[0]:rows[1], cols[0]:cols[1]].astype(np.float32).mean(-1)
  return (grey < 0.45 * np.median(grey)).mean((1, 2))


def _frame_rms(audio: np.ndarray) -> np.ndarray:
  return np.sqrt((audio.reshape(-1, SPF) ** 2).mean(1))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("synthetic") / "pool"
  synthetic.generate_dataset(str(out), workers=2, **TINY)
  return out


def test_layout_split_lists_and_speakers(dataset):
  meta = json.loads((dataset / "speakers.json").read_text())
  assert meta["seed"] == TINY["seed"] and meta["audio_offset_frames"] == 0
  assert (dataset / "mvlrs_v1" / "pretrain").is_dir()
  assert (dataset / "pretrain.txt").read_text() == ""
  files = {str(p.relative_to(dataset / "mvlrs_v1" / "main"))[:-4]
           for p in (dataset / "mvlrs_v1" / "main").rglob("*.mp4")}
  lists = {s: (dataset / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
  assert sorted(sum(lists.values(), [])) == sorted(files)       # every file in one list
  assert len(files) == 4 * TINY["clips_per_speaker"]
  for name in files:
    ident, num = name.split("/")
    assert len(num) == 5 and num.isdigit() and ident.startswith("spk")
  speakers = {s: {n[:6] for n in names} for s, names in lists.items()}
  assert len(speakers["train"]) == 2 and len(speakers["test"]) == 1 and len(speakers["val"]) == 1
  assert not speakers["train"] & speakers["test"]
  assert not speakers["train"] & speakers["val"]
  by_split = {s["split"]: [] for s in meta["speakers"]}
  for s in meta["speakers"]:
    by_split[s["split"]].append(f"spk{s['speaker']:03d}")
    assert {c["name"][:6] for c in s["clips"]} == {f"spk{s['speaker']:03d}"}
  assert {k: set(v) for k, v in by_split.items()} == speakers
  # Speakers really differ (voice and face).
  params = [s["params"] for s in meta["speakers"]]
  assert len({round(p["f0"], 3) for p in params}) == len(params)
  assert len({tuple(p["skin"]) for p in params}) == len(params)
  assert all(90 <= p["f0"] <= 250 for p in params)


def test_files_decode_as_h264_aac(dataset):
  meta = json.loads((dataset / "speakers.json").read_text())
  frames_of = {c["name"]: c["frames"] for s in meta["speakers"] for c in s["clips"]}
  for name, num_frames in frames_of.items():
    d = _decode(dataset / "mvlrs_v1" / "main" / f"{name}.mp4")
    assert (d["vcodec"], d["acodec"]) == ("h264", "aac")
    assert d["fps"] == 25 and d["rate"] == 16000 and d["channels"] == 1
    assert d["size"] == (160, 160) and d["pix_fmt"] == "yuv420p"
    assert d["frames"].shape == (num_frames, 160, 160, 3)
    # AAC pads to whole 1024-sample frames; the clip's audio is all there.
    assert num_frames * SPF <= d["audio"].size < num_frames * SPF + 2048


def test_mp4_matches_rendered_arrays(dataset):
  """Compression keeps the mouth, and the audio is neither lost nor shifted in the file."""
  meta = json.loads((dataset / "speakers.json").read_text())
  spk = meta["speakers"][0]
  clip = spk["clips"][1]
  video = int(clip["name"][7:10])
  frames, audio = synthetic.render_clip(spk["params"], clip["seconds"],
                                        [meta["seed"], spk["speaker"], 2, 1],
                                        scene=spk["scenes"][str(video)])
  d = _decode(dataset / "mvlrs_v1" / "main" / f"{clip['name']}.mp4")
  mse = np.mean((d["frames"].astype(np.float32) - frames) ** 2)
  assert 10 * np.log10(255 ** 2 / mse) > 30          # PSNR in dB (measured 33-39)
  # The mouth's per-frame brightness (its opening) survives compression.
  mouth = lambda f: f[:, 80:115, 50:110].astype(np.float32).mean((1, 2, 3))  # noqa: E731
  assert np.corrcoef(mouth(frames), mouth(d["frames"]))[0, 1] > 0.98
  dec = d["audio"][:audio.size]
  assert _lag(dec, audio, 400) == 0
  assert np.corrcoef(dec, audio)[0, 1] > 0.9


def test_same_bytes_for_any_worker_count_and_resume(dataset, tmp_path):
  serial = tmp_path / "serial"
  synthetic.generate_dataset(str(serial), workers=1, **TINY)
  assert _hashes(serial) == _hashes(dataset)
  assert (serial / "train.txt").read_text() == (dataset / "train.txt").read_text()
  # An interrupted run (a clip and the completion marker missing) resumes to the same set.
  victim = sorted((serial / "mvlrs_v1" / "main").rglob("*.mp4"))[-1]
  victim.unlink()
  (serial / "speakers.json").unlink()
  synthetic.generate_dataset(str(serial), workers=1, **TINY)
  assert _hashes(serial) == _hashes(dataset)
  assert (serial / "speakers.json").read_text() == (dataset / "speakers.json").read_text()


def test_render_is_deterministic():
  sp = synthetic.make_speaker(0, 3)
  f1, a1 = synthetic.render_clip(sp, 1.6, [0, 3, 2, 0])
  f2, a2 = synthetic.render_clip(synthetic.SpeakerParams.from_dict(sp.asdict()), 1.6,
                                 [0, 3, 2, 0])
  assert f1.shape == (40, 160, 160, 3) and f1.dtype == np.uint8
  assert a1.shape == (40 * SPF,) and a1.dtype == np.float32
  assert np.array_equal(f1, f2) and np.array_equal(a1, a2)
  f3, a3 = synthetic.render_clip(sp, 1.6, [0, 3, 2, 1])
  assert not np.array_equal(f1, f3) and not np.allclose(a1, a3)
  assert synthetic.make_speaker(0, 3) == sp
  assert synthetic.make_speaker(1, 3) != sp


def test_mouth_follows_loudness_without_lag():
  lags, corrs = [], []
  for spk in range(4):
    sp = synthetic.make_speaker(11, spk)
    frames, audio = synthetic.render_clip(sp, 3.0, [11, spk, 2, 0])
    rms = _frame_rms(audio)
    # Both crop windows the data pipeline may use must see the mouth move: the lower half
    # ('crop' mode, rows 80-160) and the measured LRS2 face-crop box (rows 59-115); the
    # central columns keep dark hair and clothes at the sides out of the measure.
    for rows, cols in (((80, 160), (45, 115)), ((59, 115), (45, 115))):
      dark = _mouth_darkness(frames, rows, cols)
      corrs.append(np.corrcoef(dark, rms)[0, 1])
      lags.append(_lag(dark - dark.mean(), rms - rms.mean(), 5))
  assert min(corrs) > 0.5, corrs
  assert lags == [0] * len(lags), lags


def test_speaker_pitch():
  sp = synthetic.make_speaker(2, 1)
  _, audio = synthetic.render_clip(sp, 3.0, [2, 1, 2, 0])
  frames = audio.reshape(-1, SPF)
  rms = np.sqrt((frames ** 2).mean(1))
  lo, hi = 16000 // 300, 16000 // 70
  estimates = []
  for x in frames[rms > np.percentile(rms, 70)]:
    x = x - x.mean()
    ac = np.correlate(x, x, "full")[SPF - 1:]
    estimates.append(16000 / (lo + np.argmax(ac[lo:hi])))
  assert abs(np.median(estimates) / sp.f0 - 1) < 0.15


@pytest.mark.parametrize("k", [3, -2])
def test_audio_offset_shifts_audio_exactly(k):
  sp = synthetic.make_speaker(0, 1)
  f0, a0 = synthetic.render_clip(sp, 2.0, [0, 1, 2, 4])
  fk, ak = synthetic.render_clip(sp, 2.0, [0, 1, 2, 4], audio_offset_frames=k)
  assert np.array_equal(f0, fk)                    # the video does not move
  n = abs(k) * SPF
  if k > 0:
    assert np.array_equal(ak[n:], a0[:-n])
    # Before the shifted start the speaker is still talking (plan margin), not silence.
    assert np.abs(ak[:n]).max() > 0.01
  else:
    assert np.array_equal(ak[:-n], a0[n:])


def test_cli_offset_and_held_out_val(dataset, tmp_path):
  out = tmp_path / "shifted"
  synthetic.main(["--out", str(out), "--num_speakers", "2", "--num_test_speakers", "1",
                  "--num_val_speakers", "0", "--clips_per_speaker", "2", "--min_seconds",
                  "2.0", "--max_seconds", "2.4", "--seed", "5", "--clips_per_video", "1",
                  "--audio_offset_frames", "4", "--workers", "1"])
  meta = json.loads((out / "speakers.json").read_text())
  assert meta["audio_offset_frames"] == 4
  train = (out / "train.txt").read_text().split()
  val = (out / "val.txt").read_text().split()
  assert val == ["spk000v001/00001", "spk001v001/00001"] and not set(val) & set(train)
  # Same seed as the fixture: the test speaker's clip is the same, with its audio 4 frames late.
  name = (out / "test.txt").read_text().split()[0]
  assert name in (dataset / "test.txt").read_text().split()
  ref = _decode(dataset / "mvlrs_v1" / "main" / f"{name}.mp4")
  got = _decode(out / "mvlrs_v1" / "main" / f"{name}.mp4")
  assert np.array_equal(ref["frames"], got["frames"])
  assert _lag(got["audio"], ref["audio"], 6 * SPF) == 4 * SPF


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="min_seconds"):
    synthetic.generate_dataset("/nonexistent/never", min_seconds=3.0, max_seconds=2.0)
  with pytest.raises(ValueError, match="clips_per_speaker"):
    synthetic.generate_dataset("/nonexistent/never", num_val_speakers=0, clips_per_speaker=1)
  with pytest.raises(ValueError, match="lack"):
    synthetic.SpeakerParams.from_dict({"speaker": 0})


def test_refuses_to_mix_arguments_in_one_folder(dataset):
  with pytest.raises(ValueError, match=r"synthetic_config\.json.*seed"):
    synthetic.generate_dataset(str(dataset), workers=1, **dict(TINY, seed=6))
