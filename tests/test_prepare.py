"""Offline preparation: record format, dataset layouts, shards, bad input, resume."""
from __future__ import annotations

import fractions
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import av
import msgpack
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordReader
from conftest import SHARDS  # shards per split of the shared dataset's preparation

from modeformer_jax.data import records
from modeformer_jax.media import features
from modeformer_jax.model import input_spec, windows
from data_prep import layouts
from data_prep import prepare as prep

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------------------

def _smooth_lips(t: int, seed: int = 0) -> np.ndarray:
  """Smooth, moving images (JPEG reproduces them closely, unlike noise)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:48, 0:96]
  out = np.empty((t, 48, 96, 3), np.uint8)
  for i in range(t):
    phase = rng.uniform(0, 2 * np.pi, 3)
    for c in range(3):
      out[i, ..., c] = (127 + 100 * np.sin(x / 15 + y / 23 + phase[c] + i / 5)).astype(np.uint8)
  return out


def _fake_clip(t: int = 40, seed: int = 0) -> features.Clip:
  rng = np.random.default_rng(seed)
  mel = rng.uniform(-4, 4, (80, windows.num_mel_frames(t))).astype(np.float32)
  return features.Clip(lips=_smooth_lips(t, seed), mel=mel, num_frames=t, fps=25.0,
                       source_fps=29.97, duration=t / 25)


def _write_video(path: pathlib.Path, seconds: float, audio_seconds: float | None) -> None:
  """A small h264 mp4 (moving bar) with an AAC tone of ``audio_seconds`` (None: no audio)."""
  n = int(round(seconds * 25))
  container = av.open(str(path), "w", format="mp4")
  vs = container.add_stream("libx264", rate=25)
  vs.width, vs.height, vs.pix_fmt = 96, 96, "yuv420p"
  ast = container.add_stream("aac", rate=16000, layout="mono") if audio_seconds else None
  for i in range(n):
    img = np.full((96, 96, 3), 60, np.uint8)
    img[:, (3 * i) % 96] = 250
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts = i
    container.mux(vs.encode(frame))
  container.mux(vs.encode())
  if ast is not None:
    s = np.arange(int(audio_seconds * 16000)) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * s)).astype(np.float32)
    for a in range(0, tone.size, 1024):
      af = av.AudioFrame.from_ndarray(tone[None, a:a + 1024], format="flt", layout="mono")
      af.sample_rate, af.pts, af.time_base = 16000, a, fractions.Fraction(1, 16000)
      container.mux(ast.encode(af))
    container.mux(ast.encode())
  container.close()


def _all_records(out: pathlib.Path) -> dict[str, list[bytes]]:
  manifest = records.read_manifest(out)
  got = {}
  for split in manifest["splits"]:
    got[split] = [b for p in records.split_files(out, split)
                  for b in ArrayRecordReader(p).read_all()]
  return got


def _files_state(out: pathlib.Path) -> dict[str, int]:
  return {p.name: p.stat().st_mtime_ns for p in sorted(out.iterdir())}


# The dataset (``synthetic_src``) and its uninterrupted preparation (``reference``) are the
# session's, in conftest.py.

# ----------------------------------------------------------------------------------------
# Records.
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["jpeg", "raw"])
def test_record_round_trip(codec):
  clip = _fake_clip(40)
  rec = records.decode_record(records.encode_clip(clip, "abc/00001", "abc", "train",
                                                  "main/abc/00001.mp4", lip_codec=codec))
  assert (rec["clip_id"], rec["speaker"], rec["split"], rec["num_frames"]) == \
      ("abc/00001", "abc", "train", 40)
  assert rec["source_fps"] == pytest.approx(29.97) and rec["lip_codec"] == codec
  lips = records.decode_lips(rec, 0, 40)
  assert lips.shape == (40, 48, 96, 3) and lips.dtype == np.uint8
  if codec == "raw":
    np.testing.assert_array_equal(lips, clip.lips)
  else:
    err = np.abs(lips.astype(int) - clip.lips.astype(int))
    assert err.mean() < 2.0, err.mean()
  # A window decodes to the same pixels as the same frames of the whole clip.
  np.testing.assert_array_equal(records.decode_lips(rec, 17, 5), lips[17:22])
  mel = records.decode_mel(rec)
  assert mel.dtype == np.float32 and mel.shape == clip.mel.shape
  np.testing.assert_allclose(mel, clip.mel, atol=4 / 1024)
  with pytest.raises(IndexError):
    records.decode_lips(rec, 36, 5)


def test_decode_lips_touches_only_requested_frames():
  rec = records.decode_record(records.encode_clip(_fake_clip(30), "a/1", "a", "train", "x"))
  # Break every frame outside [10, 15): decoding the window must not notice.
  rec["lips"] = [b if 10 <= i < 15 else b"\xff\xd8broken" for i, b in enumerate(rec["lips"])]
  assert records.decode_lips(rec, 10, 5).shape == (5, 48, 96, 3)
  with pytest.raises(ValueError, match="does not decode"):
    records.decode_lips(rec, 9, 5)


def test_decode_record_rejects_foreign_bytes():
  import pickle  # only to produce bytes that must be refused, never to load
  good = records.encode_clip(_fake_clip(36), "a/1", "a", "train", "x")
  with pytest.raises(ValueError, match="not a clip record"):
    records.decode_record(pickle.dumps({"clip_id": "a"}))
  with pytest.raises(ValueError, match="lacks fields"):
    records.decode_record(msgpack.packb({"clip_id": "a"}))
  rec = msgpack.unpackb(good, raw=False)
  rec["format_version"] = 99
  with pytest.raises(ValueError, match="format_version"):
    records.decode_record(msgpack.packb(rec, use_bin_type=True))
  rec["format_version"] = 1
  rec["mel"]["data"] = rec["mel"]["data"][:-2]
  with pytest.raises(ValueError, match="bytes do not hold"):
    records.decode_mel(records.decode_record(msgpack.packb(rec, use_bin_type=True)))


# ----------------------------------------------------------------------------------------
# Layouts (empty files: listing never opens them).
# ----------------------------------------------------------------------------------------

def _touch(root: pathlib.Path, *rels: str) -> None:
  for rel in rels:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(b"")


def test_lrs2_layout(tmp_path):
  _touch(tmp_path, "mvlrs_v1/main/111/00001.mp4", "mvlrs_v1/main/111/00002.mp4",
         "mvlrs_v1/main/spk004v002/00001.mp4", "mvlrs_v1/pretrain/222/00001.mp4")
  (tmp_path / "train.txt").write_text("111/00002\n111/00001\n")
  (tmp_path / "test.txt").write_text("spk004v002/00001 NF\n\n")
  (tmp_path / "pretrain.txt").write_text("222/00001\n")
  (tmp_path / "val.txt").write_text("333/00009\n")   # listed but absent: still an input
  items = layouts.list_items("lrs2", tmp_path)
  assert [(i.split, i.clip_id, i.speaker) for i in items] == [
      ("pretrain", "222/00001", "222"), ("train", "111/00001", "111"),
      ("train", "111/00002", "111"), ("val", "333/00009", "333"),
      ("test", "spk004v002/00001", "spk004")]
  assert items[0].path == str(tmp_path / "mvlrs_v1/pretrain/222/00001.mp4")
  assert items[-1].path == str(tmp_path / "mvlrs_v1/main/spk004v002/00001.mp4")
  assert [i.split for i in layouts.list_items("lrs2", tmp_path, splits=["test"])] == ["test"]
  (tmp_path / "val.txt").write_text("333\n")
  with pytest.raises(ValueError, match="val.txt:1"):
    layouts.list_items("lrs2", tmp_path)


def test_lrs3_val_is_a_seeded_sample_of_trainval_ids(tmp_path):
  ids = [f"id{i:03d}" for i in range(50)]
  _touch(tmp_path, *[f"trainval/{v}/0000{k}.mp4" for v in ids for k in (1, 2)],
         "pretrain/p1/00001.mp4", "test/t1/00001.mp4")
  items = layouts.list_items("lrs3", tmp_path, seed=1)
  split_of = {}
  for it in items:
    split_of.setdefault(it.clip_id.split("/")[0], set()).add(it.split)
  assert split_of["p1"] == {"pretrain"} and split_of["t1"] == {"test"}
  assert all(len(split_of[v]) == 1 for v in ids)          # a video never straddles splits
  assert sum(split_of[v] == {"val"} for v in ids) == 20   # 40% of 50 ids
  again = layouts.list_items("lrs3", tmp_path, seed=1)
  other = layouts.list_items("lrs3", tmp_path, seed=2)
  assert again == items and other != items


def test_vox2_layouts(tmp_path):
  _touch(tmp_path, *[f"dev/mp4/id{s:05d}/vid{v}/0000{k}.mp4" for s in range(10)
                     for v in (1, 2) for k in (1, 2)], "test/mp4/id99999/vidx/00001.mp4")
  items = layouts.list_items("vox2", tmp_path, val_fraction=0.2)
  by_split = {}
  for it in items:
    by_split.setdefault(it.split, set()).add(it.speaker)
  assert by_split["test"] == {"id99999"} and len(by_split["val"]) == 2
  assert not by_split["val"] & by_split["train"]
  assert all(i.clip_id.count("/") == 2 and i.clip_id.startswith(i.speaker + "/") for i in items)
  lone = tmp_path / "lone"
  _touch(lone, *[f"mp4/id{s:05d}/v/00001.mp4" for s in range(40)])
  items = layouts.list_items("vox2", lone)
  assert sorted({i.split for i in items}) == ["test", "train", "val"]
  assert sum(i.split == "test" for i in items) == 2       # 5% of 40 speakers


def test_folder_layout_group_split(tmp_path):
  _touch(tmp_path, *[f"{p}/take{k}.mp4" for p in ("alice", "bob", "carol", "dave")
                     for k in (1, 2)], "loose.MOV", "notes.txt")
  items = layouts.list_items("folder", tmp_path)
  assert {i.split for i in items} == {"train"} and len(items) == 9
  assert {i.speaker for i in items if i.clip_id == "loose.MOV"} == {"loose"}
  with pytest.raises(ValueError, match="does not match"):
    layouts.list_items("folder", tmp_path, group_by=r"^(\w+)/")   # loose.MOV has no folder
  (tmp_path / "loose.MOV").unlink()
  items = layouts.list_items("raw", tmp_path, val_fraction=0.25, test_fraction=0.25,
                             group_by=r"^(\w+)/", seed=0)
  splits = {}
  for it in items:
    splits.setdefault(it.speaker, set()).add(it.split)
  assert all(len(s) == 1 for s in splits.values())
  assert sorted(s.pop() for s in splits.values()) == ["test", "train", "train", "val"]


# ----------------------------------------------------------------------------------------
# prepare.
# ----------------------------------------------------------------------------------------

def test_shard_bounds_are_contiguous_and_balanced():
  for n, s in ((10, 3), (3, 3), (0, 1), (257, 2)):
    b = prep.shard_bounds(n, s)
    assert b[0][0] == 0 and b[-1][1] == n and all(b[i][1] == b[i + 1][0] for i in range(s - 1))
    assert max(y - x for x, y in b) - min(y - x for x, y in b) <= 1
  assert prep.num_shards(0) == 1 and prep.num_shards(prep.CLIPS_PER_SHARD + 1) == 2
  assert prep.num_shards(5, 8) == 5


def test_prepare_synthetic(synthetic_src, reference):
  out, report = reference
  lists = {s: (synthetic_src / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
  manifest = records.read_manifest(out)
  assert set(manifest["splits"]) == {"train", "val", "test"}   # the empty pretrain is left out
  assert manifest["features"]["n_mels"] == features.MEL_CONFIG["n_mels"]
  assert manifest["features"]["lip_codec"] == "jpeg" and manifest["layout"] == "lrs2"
  assert report["inputs"] == sum(map(len, lists.values())) == report["written"]
  assert json.loads((out / "report.json").read_text())["inputs"] == report["inputs"]
  total_frames = 0
  for split, names in lists.items():
    info = manifest["splits"][split]
    assert info["shards"] == [records.shard_name(split, i, SHARDS) for i in range(SHARDS)]
    source = records.open_split(out, split)
    assert len(source) == info["num_clips"] == len(names)
    recs = [records.decode_record(source[i]) for i in range(len(source))]
    assert [r["clip_id"] for r in recs] == sorted(names)          # input order, all clips
    assert all(r["split"] == split and r["speaker"] == r["clip_id"][:6] for r in recs)
    assert sum(r["num_frames"] for r in recs) == info["num_frames"]
    total_frames += info["num_frames"]
  assert total_frames > 0
  # The stored features are what features.extract_clip gives for the source file.
  rec = records.decode_record(records.open_split(out, "val")[1])
  clip = features.extract_clip(str(synthetic_src / rec["source"]), input_spec.crop_for_layout("lrs2"))
  assert rec["num_frames"] == clip.num_frames
  np.testing.assert_array_equal(records.decode_mel(rec),
                                clip.mel.astype(np.float16).astype(np.float32))
  lips = records.decode_lips(rec, 0, rec["num_frames"])
  assert np.abs(lips.astype(int) - clip.lips.astype(int)).mean() < 3.0


def test_rerun_is_a_no_op(synthetic_src, reference, capsys):
  out, _ = reference
  before = _files_state(out)
  time.sleep(0.01)
  report = prep.prepare("lrs2", synthetic_src, out, shards_per_split=SHARDS, workers=2)
  assert "nothing to do" in capsys.readouterr().out
  assert report["run"]["shards_written"] == [] and not report["run"]["finalized"]
  assert _files_state(out) == before
  with pytest.raises(ValueError, match="already holds a preparation"):
    prep.prepare("lrs2", synthetic_src, out, shards_per_split=SHARDS, lip_codec="raw",
                 progress=False)


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_records(synthetic_src, reference, tmp_path):
  ref_out, _ = reference
  out = tmp_path / "resumed"
  cmd = [sys.executable, "-m", "data_prep.prepare", "--layout", "lrs2", "--src",
         str(synthetic_src), "--out", str(out), "--shards_per_split", str(SHARDS),
         "--workers", "1", "--no_progress"]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)
  first = out / records.shard_name("train", 0, SHARDS)
  deadline = time.monotonic() + 90
  try:
    while not first.exists():
      assert proc.poll() is None, proc.stderr.read().decode()
      assert time.monotonic() < deadline, "no shard finished in 90 s"
      time.sleep(0.01)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  finished = [p for p in out.glob("*.array_record-*") if not p.name.endswith((".tmp", ".json"))]
  assert 1 <= len(finished) < 3 * SHARDS, "the run was not interrupted mid-way"
  assert not (out / records.MANIFEST).exists()

  report = prep.prepare("lrs2", synthetic_src, out, shards_per_split=SHARDS, workers=2,
                        progress=False)
  assert report["run"]["shards_already_done"] == len(finished)
  assert report["run"]["finalized"]
  assert not list(out.glob("*.tmp"))
  assert _all_records(out) == _all_records(ref_out)
  for name in records.read_manifest(ref_out)["splits"]["train"]["shards"]:
    assert (out / name).read_bytes() == (ref_out / name).read_bytes()


def test_rerun_after_the_last_shard_writes_the_manifest(synthetic_src, reference, tmp_path):
  """Killed between the last shard and the manifest: the rerun processes nothing, finalizes."""
  ref_out, _ = reference
  out = tmp_path / "unfinalized"
  out.mkdir()
  for p in ref_out.iterdir():
    if p.name not in (records.MANIFEST, records.REPORT):
      (out / p.name).write_bytes(p.read_bytes())
  with pytest.raises(FileNotFoundError, match="no manifest"):
    records.read_manifest(out)
  report = prep.prepare("lrs2", synthetic_src, out, shards_per_split=SHARDS, workers=1,
                        progress=False)
  assert report["run"]["shards_written"] == [] and report["run"]["finalized"]
  assert report["run"]["shards_already_done"] == 3 * SHARDS
  assert _all_records(out) == _all_records(ref_out)
  assert json.loads((out / records.REPORT).read_text()) == \
      json.loads((ref_out / records.REPORT).read_text())


def _bad_inputs_folder(src: pathlib.Path) -> pathlib.Path:
  """Two good videos and one of each kind of bad input (and a non-video file)."""
  src.mkdir()
  _write_video(src / "good_a.mp4", 2.0, 2.0)
  _write_video(src / "good_b.mov", 1.6, 1.6)
  _write_video(src / "no_audio.mp4", 2.0, None)
  _write_video(src / "short.mp4", 0.8, 0.8)
  _write_video(src / "half_audio.mp4", 2.0, 0.9)
  (src / "corrupt.mp4").write_bytes(os.urandom(5000))
  good = (src / "good_a.mp4").read_bytes()
  (src / "truncated.mp4").write_bytes(good[:len(good) // 3])
  (src / "readme.txt").write_text("not a video")
  return src


def test_bad_inputs_are_reported_and_counted(tmp_path):
  src = _bad_inputs_folder(tmp_path / "src")
  out = tmp_path / "out"
  report = prep.prepare("folder", src, out, workers=2, shards_per_split=2, progress=False)
  kinds = {pathlib.Path(s["path"]).name: s["kind"] for s in report["skipped_files"]}
  assert kinds == {"no_audio.mp4": "no_audio", "short.mp4": "too_short",
                   "half_audio.mp4": "audio_short", "corrupt.mp4": "corrupt",
                   "truncated.mp4": "corrupt"}
  assert all(s["reason"] for s in report["skipped_files"])
  assert report["inputs"] == 7 and report["written"] == 2
  assert report["inputs"] == report["written"] + sum(report["skipped"].values())
  assert report["skipped"] == {"audio_short": 1, "corrupt": 2, "no_audio": 1, "too_short": 1}
  on_disk = json.loads((out / "report.json").read_text())
  assert on_disk["splits"]["train"]["inputs"] == 7 and on_disk["skipped"] == report["skipped"]
  source = records.open_split(out, "train")
  assert sorted(records.decode_record(source[i])["clip_id"] for i in range(len(source))) == \
      ["good_a.mp4", "good_b.mov"]


def test_real_lrs2_crops(real_clips_dir, tmp_path):
  out = tmp_path / "real"
  report = prep.prepare("folder", real_clips_dir / "lrs2_crop", out, feature_layout="lrs2",
                        lip_codec="raw", workers=2, progress=False)
  skipped = {pathlib.Path(s["path"]).name: s for s in report["skipped_files"]}
  assert list(skipped) == ["00006.mp4"] and skipped["00006.mp4"]["kind"] == "too_short"
  assert f"need at least {features.MIN_FRAMES}" in skipped["00006.mp4"]["reason"]
  assert report["written"] == report["inputs"] - 1 == 5
  source = records.open_split(out, "train")
  rec = records.decode_record(source[0])
  clip = features.extract_clip(str(real_clips_dir / "lrs2_crop" / rec["source"]), input_spec.crop_for_layout("lrs2"))
  np.testing.assert_array_equal(records.decode_lips(rec, 0, rec["num_frames"]), clip.lips)
  spec = records.read_manifest(out)["input_spec"]
  assert spec["crop"] == {"method": "box", "box": list(input_spec.FACE_CROP_BOX)}
