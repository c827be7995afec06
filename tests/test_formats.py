"""Real-world file formats: one clip as rotated phone video, anamorphic MKV, 5.1, multi-track
MOV and MXF, variable frame rate, ProRes at 29.97 fps and late-starting audio
(``data_prep.synthetic.formats``). Each must decode to what a player shows, and plain
``detect`` and ``--qc`` must both read the base file's offset plus the injected shift."""
import json
import pathlib
from fractions import Fraction

import av
import numpy as np
import pytest

from modeformer_jax import detect, media
from modeformer_jax.media import features
from data_prep.synthetic import formats
from modeformer_jax import analysis

SHIFT = 3                               # frames of extra audio delay in every variant
KINDS = list(formats.KINDS)
REAL_CLIPS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_clips"


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> dict[str, str]:
  out = tmp_path_factory.mktemp("formats")
  manifest = formats.write_suite(out, shift=SHIFT)
  return {name: str(out / f["file"]) for name, f in manifest["files"].items()}


@pytest.fixture(scope="module")
def plain(suite, tmp_path_factory) -> dict[str, dict]:
  """Plain ``detect --json`` (the CLI, whole file) with the shipped model, per file."""
  names = list(suite)
  return dict(zip(names, _plain_json([suite[n] for n in names],
                                     tmp_path_factory.mktemp("plain"))))


@pytest.fixture(scope="module")
def qc(suite) -> dict[str, dict]:
  """``detect --qc`` (streamed, sub-frame ms) with the shipped model, per file."""
  analyzer = analysis.Analyzer()
  return {name: analyzer.analyze(path) for name, path in suite.items()}


def _plain_json(paths: list[str], out: pathlib.Path) -> list[dict]:
  """Plain ``detect --json`` (the CLI) on ``paths``: its answers, in order."""
  import contextlib
  import io
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    detect.main(paths + ["--json", "--out", str(out)])
  return json.loads(buf.getvalue())


def _lag(ref: np.ndarray, x: np.ndarray, max_lag: int = 800) -> int:
  """Samples by which ``x`` is late against ``ref`` (cross-correlation peak)."""
  n = min(ref.size, x.size) - 2 * max_lag
  a = ref[max_lag:max_lag + n]
  return max(range(-max_lag, max_lag + 1),
             key=lambda k: float(np.dot(a, x[max_lag + k:max_lag + k + n])))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_plain_and_qc_read_the_base_offset_plus_the_shift(kind, plain, qc):
  base, r = plain["base"]["offset_frames"], plain[kind]
  assert r["offset_frames"] == base + SHIFT, (kind, r)
  base_ms, ms = qc["base"]["global"]["offset_ms"], qc[kind]["global"]["offset_ms"]
  assert ms == pytest.approx(base_ms + 40 * SHIFT, abs=12), (kind, qc[kind]["global"])
  # One analysis: the plain answer is --qc's whole-file estimate, to the frame and the ms.
  assert r["offset_frames"] == qc[kind]["global"]["offset_frames"] == round(ms / 40)
  assert r["offset_ms"] == pytest.approx(ms, abs=0.01)


def test_pictures_are_decoded_as_a_player_shows_them(suite):
  base = media.decode(suite["base"]).frames.astype(np.float32)
  for kind in ("rotate90", "anamorphic", "mxf_interlaced", "late_audio", "surround51"):
    frames = media.decode(suite[kind]).frames
    assert frames.shape == base.shape, kind
    assert np.abs(frames - base).mean() < 4, kind     # only coding differences
  # The stored pixels really are turned and squeezed: ignoring the container would not do.
  with av.open(suite["rotate90"]) as c:
    raw = next(c.decode(video=0))
    assert raw.rotation == -90
    stored = raw.to_ndarray(format="rgb24").astype(np.float32)
  assert np.abs(stored - base[0]).mean() > 4 * np.abs(
      media.decode(suite["rotate90"]).frames[0] - base[0]).mean()
  info = media.probe(suite["anamorphic"])
  assert (info.stored_width, info.width, info.sample_aspect) == (120, 160, Fraction(4, 3))


def test_the_speech_channels_are_chosen_and_said(suite):
  ref = features.shift_audio(media.decode(suite["base"]).audio, SHIFT)
  chosen = {"surround51": ["#1:FC"], "mono_tracks": ["#3:mono"],
            "mxf_interlaced": ["#1:mono", "#2:mono"], "rotate90": ["#1:FL", "#1:FR"]}
  for kind, labels in chosen.items():
    dec = media.decode(suite[kind])
    assert [c.label for c in dec.audio_source.channels] == labels, kind
    assert _lag(ref, dec.audio) == 0, kind        # and on the picture's clock
  assert "FC of 5.1" in media.choose_audio(suite["surround51"]).describe()
  assert "left out" in media.choose_audio(suite["mono_tracks"]).note
  assert media.choose_audio(suite["base"]).note == ""      # nothing to say for plain mono
  # The late audio start is silence in front, not a shift.
  late = media.decode(suite["late_audio"])
  assert _lag(ref, late.audio) == 0 and 0.1 < late.audio_missing < 0.2


@pytest.mark.slow
def test_choices_are_reported_by_both_paths(plain, qc):
  assert "FC of 5.1" in plain["surround51"]["audio_note"]
  assert "FC of 5.1" in qc["surround51"]["audio_note"]
  assert "track 3 of 4" in analysis.describe_plain(plain["mono_tracks"])
  assert "track 3 of 4" in analysis.describe(qc["mono_tracks"])
  assert "audio:" not in analysis.describe_plain(plain["base"])


def _bad_inputs(tmp: pathlib.Path, base: str) -> dict[str, str]:
  data = pathlib.Path(base).read_bytes()
  files = {"empty.mp4": b"", "text.mp4": b"this is not a video\n",
           "truncated.mp4": data[:len(data) // 3]}
  for name, content in files.items():
    (tmp / name).write_bytes(content)
  for name, keep in (("audio_only.mp4", "audio"), ("video_only.mp4", "video")):
    with av.open(base) as src, av.open(str(tmp / name), "w") as dst:
      s = src.streams.audio[0] if keep == "audio" else src.streams.video[0]
      out = dst.add_stream_from_template(s)
      for pkt in src.demux(s):
        if pkt.dts is not None:
          pkt.stream = out
          dst.mux(pkt)
  return {"empty.mp4": "cannot open", "text.mp4": "cannot open",
          "truncated.mp4": "cannot open", "audio_only.mp4": "no video stream",
          "video_only.mp4": "no audio stream"}


def test_bad_inputs_give_one_line_errors_and_exit_1(suite, tmp_path, capsys):
  expected = _bad_inputs(tmp_path, suite["base"])
  paths = [str(tmp_path / n) for n in expected]
  assert detect.main(paths + ["--out", str(tmp_path / "plain"), "--json"]) == 1
  for r, (name, why) in zip(json.loads(capsys.readouterr().out), expected.items()):
    assert name in r["error"] and why in r["error"] and "\n" not in r["error"], r
  assert detect.main(["--qc", *paths, "--out", str(tmp_path / "qc"), "--json",
                      "--no_report"]) == 1
  entries = {pathlib.Path(e["name"]).name: e for e in json.loads(capsys.readouterr().out)}
  for name, why in expected.items():
    assert why in entries[name]["error"] and "\n" not in entries[name]["error"], entries[name]


def test_fix_keeps_rotation_and_every_audio_track(suite, tmp_path):
  base = media.decode(suite["base"])
  for kind in ("rotate90", "mono_tracks"):
    fixed = str(tmp_path / ("fixed_" + pathlib.Path(suite[kind]).name))
    media.fix_offset(suite[kind], fixed, 40 * SHIFT)
    with av.open(suite[kind]) as a, av.open(fixed) as b:
      assert len(b.streams.audio) == len(a.streams.audio)
    dec = media.decode(fixed)
    assert np.abs(dec.frames.astype(np.float32) - base.frames).mean() < 4, kind
    assert abs(_lag(base.audio, dec.audio)) <= 1, kind      # back in sync, to a sample


@pytest.mark.slow
@pytest.mark.parametrize("suite_name", list(formats.VFR_SUITES))
def test_hard_vfr_cases_get_one_answer_from_plain_and_qc(suite_name, tmp_path):
  """Drops, bursts, jittered and whole-ms timestamps, 29.97 to 25 fps conversions (audio 2
  frames late) on the synthetic speaker and on real faces at 1080p and 720p: plain
  ``detect`` and ``--qc`` give one answer per file, and it is the base file's plus 2."""
  source = formats.VFR_SUITES[suite_name][0]
  if source is not None and not (REAL_CLIPS / source).is_file():
    pytest.skip(f"{REAL_CLIPS / source} not present")
  manifest = formats.write_vfr_suites(tmp_path, REAL_CLIPS, [suite_name])[suite_name]
  names = list(manifest["files"])
  paths = [str(tmp_path / suite_name / manifest["files"][n]["file"]) for n in names]
  plain = dict(zip(names, _plain_json(paths, tmp_path / "plain")))
  analyzer = analysis.Analyzer()
  base = plain["base"]["offset_frames"]
  for name, path in zip(names, paths):
    r, g = plain[name], analyzer.analyze(path)["global"]
    assert (r["offset_frames"], r["offset_ms"]) == (g["offset_frames"], g["offset_ms"]), name
    assert r["reliable"], (name, r)
    want = base + manifest["files"][name]["shift_frames"]
    assert r["offset_frames"] == want, (name, r["offset_frames"], want)
