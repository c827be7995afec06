"""eval / detect CLIs: outputs, skipped clips, bad files, the --fix remux."""
import json
import pathlib

import av
import jax
import numpy as np
import pytest

from modeformer_jax import analysis, detect, errors, eval as eval_lib, media
from modeformer_jax.analysis import detectors
from modeformer_jax.evaluation import embedding
from modeformer_jax.model import checkpoints, input_spec, models


@pytest.fixture(scope="module")
def exported(tmp_path_factory, micro_model):
  """An (untrained) micro model in the exported format."""
  cfg = models.MODEL_VARIANTS["micro"]
  out = tmp_path_factory.mktemp("model")
  checkpoints.export_params(out, micro_model[1], cfg,
                            {"trained_on": "nothing",
                             "input_spec": input_spec.for_layout("lrs2").to_dict()})
  return out


def test_exported_model_round_trip(exported, micro_model):
  model, params, meta = checkpoints.load_model(exported)
  ref = micro_model[1]
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert meta["trained_on"] == "nothing"
  with pytest.raises(errors.CheckpointMismatchError, match="width"):
    checkpoints.load_model(exported, model_config=dict(models.MODEL_VARIANTS["micro"], width=16))


def test_eval_cli_writes_table_json_plot(exported, mock_prepared_dir, tmp_path, capsys):
  eval_lib.main(["--checkpoint", str(exported), "--data_dir", str(mock_prepared_dir),
                 "--split", "test", "--out", str(tmp_path), "--no_progress"])
  printed = capsys.readouterr().out
  assert "| 5 frames" in printed.replace("|  5", "| 5") or "5 frames" in printed
  res = json.loads((tmp_path / "results.json").read_text())
  assert res["num_clips"] == 4 and len(res["clips"]) == 4
  assert set(res["accuracy"]) == {"5", "7", "9", "11", "13", "15"}
  assert (tmp_path / "accuracy_by_length.png").stat().st_size > 1000
  assert "15 frames" in (tmp_path / "table.md").read_text()


def test_short_clip_is_counted_not_dropped(exported):
  model, params, _ = checkpoints.load_model(exported)
  rng = np.random.default_rng(0)
  clips = [("ok", rng.integers(0, 255, (40, 48, 96, 3), dtype=np.uint8),
            rng.normal(size=(80, 128)).astype(np.float32)),
           ("tiny", rng.integers(0, 255, (3, 48, 96, 3), dtype=np.uint8),
            rng.normal(size=(80, 10)).astype(np.float32))]
  res = embedding.evaluate(model, params, clips, lengths=(5,))
  assert res["num_clips"] == 1 and res["num_skipped"] == 1
  assert "tiny" in res["skipped"][0]["reason"] and "frames" in res["skipped"][0]["reason"]


def _write(path, seconds=2.0, audio=True, face=False):
  n = int(seconds * 25)
  with av.open(str(path), "w") as c:
    v = c.add_stream("libx264", rate=25)
    v.width = v.height = 160
    v.pix_fmt = "yuv420p"
    a = c.add_stream("aac", rate=16000, layout="mono") if audio else None
    rng = np.random.default_rng(0)
    for i in range(n):
      img = np.full((160, 160, 3), 90, np.uint8) + rng.integers(0, 20, (160, 160, 3), dtype=np.uint8)
      for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        c.mux(p)
    for p in v.encode():
      c.mux(p)
    if a is not None:
      sig = (0.3 * np.sin(np.arange(int(seconds * 16000)) * 0.05)
             * (np.arange(int(seconds * 16000)) // 1600 % 2)).astype(np.float32)
      for s in range(0, sig.size, 1024):
        fr = av.AudioFrame.from_ndarray(sig[None, s:s + 1024], format="fltp", layout="mono")
        fr.sample_rate = 16000
        for p in a.encode(fr):
          c.mux(p)
      for p in a.encode():
        c.mux(p)


def test_detect_reports_bad_files_clearly(exported, tmp_path, capsys):
  _write(tmp_path / "silent.mp4", audio=False)
  _write(tmp_path / "short.mp4", seconds=0.8)
  _write(tmp_path / "noface.mp4", seconds=2.0)
  rc = detect.main([str(tmp_path / n) for n in ("silent.mp4", "short.mp4")] +
                   ["--checkpoint", str(exported), "--out", str(tmp_path), "--json"])
  out = json.loads(capsys.readouterr().out)
  assert rc == 1
  assert "silent.mp4" in out[0]["error"] and "audio" in out[0]["error"]
  assert "short.mp4" in out[1]["error"] and "need at least" in out[1]["error"]
  rc = detect.main([str(tmp_path / "noface.mp4"), "--layout", "raw", "--checkpoint",
                    str(exported), "--out", str(tmp_path), "--json"])
  out = json.loads(capsys.readouterr().out)
  assert rc == 1 and "face" in out[0]["error"]


def test_detect_runs_and_plots(exported, synthetic_src, tmp_path, capsys):
  f = sorted((synthetic_src / "mvlrs_v1" / "main").rglob("*.mp4"))[0]
  rc = detect.main([str(f), "--checkpoint", str(exported), "--out", str(tmp_path), "--json"])
  (r,) = json.loads(capsys.readouterr().out)
  # offset_ms is the sub-frame estimate; offset_frames the whole frame nearest it.
  assert rc == 0 and -15 <= r["offset_frames"] <= 15
  assert abs(r["offset_ms"] - 40 * r["offset_frames"]) <= 20
  assert len(r["histogram"]) == 31 and pathlib.Path(r["plot"]).stat().st_size > 1000


def test_fix_moves_audio_without_touching_video(synthetic_src, tmp_path):
  src = sorted((synthetic_src / "mvlrs_v1" / "main").rglob("*.mp4"))[0]
  late = tmp_path / "late.mp4"
  media.fix_offset(str(src), str(late), -120)  # delay audio by 3 frames (120 ms)
  fixed = tmp_path / "fixed.mp4"
  media.fix_offset(str(late), str(fixed), 120)  # and move it back
  a = media.decode(str(src))
  b = media.decode(str(late))
  c = media.decode(str(fixed))
  np.testing.assert_array_equal(a.frames, b.frames)  # video packets copied as they were
  k = 3 * 640
  seg = slice(16000, 24000)
  err_late = np.abs(b.audio[seg.start + k:seg.stop + k] - a.audio[seg]).mean()
  err_none = np.abs(b.audio[seg] - a.audio[seg]).mean()
  assert err_late < 0.2 * err_none, (err_late, err_none)
  np.testing.assert_allclose(c.audio[seg], a.audio[seg], atol=0.02)


def test_detect_shifted_matches_detect_file(exported, synthetic_src):
  """Analysing several audio shifts in one pass gives what one analysis per shift gives."""
  analyzer = analysis.Analyzer(detector=detectors.load_detector(exported, chunk=64))
  f = str(sorted((synthetic_src / "mvlrs_v1" / "main").rglob("*.mp4"))[0])
  shifted = analysis.detect_shifted(analyzer, f, [-4, 0, 3])
  for k, r in zip([-4, 0, 3], shifted):
    ref = analysis.detect_file(analyzer, f, audio_shift_frames=k)
    assert r["injected"] == k and r["offset_frames"] == ref["offset_frames"]
    np.testing.assert_allclose(r["mean_curve"], ref["mean_curve"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(r["histogram"], ref["histogram"])


def test_detect_crops_as_the_model_was_trained(synthetic_src, micro_model, tmp_path, capsys):
  """Regression (issue 13, bug 1): detect --layout auto gave models trained on face crops
  the frame's lower half, and a prepare --crop_box never reached inference. The crop now
  comes from the input spec the model records; an explicit --layout still wins."""
  cfg = models.MODEL_VARIANTS["micro"]
  box = (0.3, 0.8, 0.1, 0.9)
  out = tmp_path / "boxed"
  checkpoints.export_params(out, micro_model[1], cfg,
                            {"input_spec": input_spec.for_layout("lrs2", box).to_dict()})
  f = str(sorted((synthetic_src / "mvlrs_v1" / "main").rglob("*.mp4"))[0])
  detect.main([f, "--checkpoint", str(out), "--out", str(tmp_path), "--json"])
  (auto,) = json.loads(capsys.readouterr().out)
  assert auto["crop"] == {"method": "box", "box": list(box)}
  m, params, meta = checkpoints.load_model(out)
  det = detectors.Detector(str(out), embedding.Embedder(m, params, chunk=64),
                         input_spec.from_model_meta(meta), input_spec.CropSpec("box", box), meta)
  ref = analysis.detect_file(analysis.Analyzer(detector=det), f)
  np.testing.assert_allclose(auto["mean_curve"], ref["mean_curve"], rtol=1e-5, atol=1e-6)
  detect.main([f, "--checkpoint", str(out), "--out", str(tmp_path), "--json",
               "--layout", "crop"])
  (forced,) = json.loads(capsys.readouterr().out)
  assert forced["crop"] == {"method": "box", "box": [0.5, 1.0, 0.0, 1.0]}
