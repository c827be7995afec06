"""Live monitoring: audio by layout, the live clock's runs, alarms, metrics, the command line,
and (slow) a real UDP stream whose offset changes, whose sender dies and comes back, and
that stalls."""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import av
import numpy as np
import pytest

from modeformer_jax import media, monitor
from modeformer_jax.qc import tolerances

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _channels(names):
  layout = "mono" if names == ["mono"] else "x"
  return [media.AudioChannel(0, i, n, layout) for i, n in enumerate(names)]


def test_live_audio_is_chosen_by_layout():
  pick = lambda names: [c.name for c in media.choose_by_layout(_channels(names)).channels]  # noqa: E731
  assert pick(["mono"]) == ["mono"]
  assert pick(["FL", "FR"]) == ["FL", "FR"]
  assert pick(["FL", "FR", "FC", "LFE", "BL", "BR"]) == ["FC"]          # 5.1: the centre
  assert pick(["FL", "FR", "LFE"]) == ["FL", "FR"]                       # 2.1: never LFE
  choice = media.choose_by_layout(_channels(["FL", "FR", "FC", "LFE", "BL", "BR"]))
  assert "not measured" in choice.describe() and "left out" in choice.describe()


def _ts(path, seconds, offset_s=0.0, audio_slips=()):
  """A small MPEG-TS file (64x64 h264, AAC) whose timestamps start at ``offset_s``;
  ``audio_slips``: (second, samples) moving the audio's timestamps from that second on."""
  with av.open(str(path), "w", format="mpegts") as c:
    vs = c.add_stream("libx264", rate=25)
    vs.width = vs.height = 64
    vs.pix_fmt = "yuv420p"
    vs.codec_context.gop_size = 25
    ast = c.add_stream("aac", rate=16000, layout="mono")
    n = int(seconds * 25)
    for i in range(n):
      f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (i * 7) % 255, np.uint8), "rgb24")
      f.pts = i + int(offset_s * 25)
      f.time_base = vs.codec_context.time_base = __import__("fractions").Fraction(1, 25)
      c.mux(vs.encode(f))
    c.mux(vs.encode())
    x = (0.1 * np.sin(np.arange(n * 640) / 10)).astype(np.float32)
    for s in range(0, x.size, 1024):
      af = av.AudioFrame.from_ndarray(x[None, s:s + 1024], format="flt", layout="mono")
      slip = sum(n for at, n in audio_slips if s >= at * 16000)
      af.sample_rate, af.pts = 16000, s + int(offset_s * 16000) + slip
      af.time_base = __import__("fractions").Fraction(1, 16000)
      c.mux(ast.encode(af))
    c.mux(ast.encode())


def test_live_reader_starts_a_new_run_when_timestamps_jump(tmp_path):
  # Two recordings back to back: the second's clock starts 100 s earlier (a restarted encoder).
  _ts(tmp_path / "a.ts", 2.0, offset_s=100.0)
  _ts(tmp_path / "b.ts", 2.0, offset_s=0.0)
  joined = tmp_path / "ab.ts"
  joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
  r = media.LiveReader(str(joined), chunk_frames=5, stall_s=0.2)
  items = list(r.chunks())
  events = [i.kind for i in items if isinstance(i, media.LiveEvent)]
  chunks = [i for i in items if isinstance(i, media.Chunk)]
  assert events == ["opened", "discontinuity", "ended"], events
  runs = {c.run for c in chunks}
  assert runs == {0, 1}
  for run in runs:
    mine = [c for c in chunks if c.run == run]
    # A few frames still in the decoder at the jump may be lost (fewer than 5 of 50).
    assert mine[0].start == 0 and 45 <= sum(len(c.frames) for c in mine) <= 51
    audio = sum(c.audio.size for c in mine)
    assert abs(audio - 2.0 * 16000) < 0.1 * 16000, audio     # sound stays with its run
    assert all(c.arrival is not None and c.arrival.size == len(c.frames) for c in mine)
  assert r.discontinuities == 1 and r.audio.reason == media.LIVE_REASON


def test_live_audio_is_placed_by_timestamp(tmp_path):
  # 24 ms of overlap at 1 s (a loop restarting before the sound ended), a 100-ms hole at 2 s
  # (lost packets): cut and filled, so the sound never slides against the picture.
  _ts(tmp_path / "clean.ts", 3.0)
  _ts(tmp_path / "slips.ts", 3.0, audio_slips=((1.0, -384), (2.0, 1600)))
  total = {}
  for name in ("clean", "slips"):
    r = media.LiveReader(str(tmp_path / f"{name}.ts"), chunk_frames=5, stall_s=0.2)
    total[name] = sum(c.audio.size for c in r.chunks() if isinstance(c, media.Chunk))
    assert r.counts()["audio_gaps"] == (2 if name == "slips" else 0)
  assert abs(total["slips"] - total["clean"] - (1600 - 384)) <= 2, total


def test_an_mpeg4_part2_file_played_live_can_be_decoded(tmp_path):
  """MPEG-4 Part 2 in an mp4 keeps its headers in the container; the live sender puts them
  on each keyframe, or a live reader decodes nothing (every packet was 'corrupt')."""
  from data_prep.synthetic.live import send
  src = tmp_path / "part2.mp4"
  with av.open(str(src), "w") as out:
    v = out.add_stream("mpeg4", rate=25)
    v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
    a = out.add_stream("aac", rate=16000, layout="mono")
    for i in range(50):
      img = np.full((64, 64, 3), (i * 5) % 255, np.uint8)
      for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
        out.mux(pkt)
    for i in range(2 * 16000 // 1024):
      f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                     layout="mono")
      f.sample_rate, f.pts = 16000, i * 1024
      for pkt in a.encode(f):
        out.mux(pkt)
    for st in (v, a):
      for pkt in st.encode(None):
        out.mux(pkt)
  send(str(src), str(tmp_path / "live.ts"), speed=0)
  r = media.LiveReader(str(tmp_path / "live.ts"), chunk_frames=5, stall_s=0.2)
  frames = sum(len(c.frames) for c in r.chunks() if isinstance(c, media.Chunk))
  assert frames >= 45 and r.corrupt_packets == 0, (frames, r.corrupt_packets)


def test_alarm_is_raised_once_after_hold_and_cleared_after_hold():
  a = monitor.Alarm(tolerances.STANDARDS["EBU R37"], hold_s=3.0)
  seq = [(1, 0.0), (2, 100.0), (3, 100.0), (4, None), (5, 100.0), (6, 100.0), (7, 100.0),
         (8, 0.0), (9, 0.0), (10, 100.0), (11, 0.0), (12, 0.0), (13, 0.0), (14, 0.0)]
  got = {t: a.update(t, ms) for t, ms in seq}
  assert got[5] == "raised" and a.raised == 1
  assert [t for t, c in got.items() if c] == [5, 14]       # the excursion at 10 resets clearing
  assert got[14] == "cleared" and not a.active


def test_alarm_hold_does_not_count_a_gap():
  a = monitor.Alarm(tolerances.STANDARDS["EBU R37"], hold_s=3.0)
  assert a.update(1, 100.0) is None and a.update(2, 100.0) is None
  a.skip(20.0)                       # 20 s of stream never came
  assert a.update(23, 100.0) is None and a.update(24, 100.0) == "raised"


class _Ev:
  def __init__(self, num_frames):
    self.num_frames = num_frames


def _run(t0, origin, frames, last_arrival):
  return monitor._Run(0, _Ev(frames), t0, 1.0, origin=origin, last_arrival=last_arrival)


def _chunk(origin, arrival):
  return media.Chunk(0, np.zeros((1, 2, 2, 3), np.uint8), np.zeros(0, np.float32),
                     run=1, arrival=np.array([arrival]), origin=origin)


def test_stream_time_follows_the_source_clock_across_runs():
  """A run 10 s long (source 101.4 .. 111.4 s, its last picture at wall 50 s)."""
  prev = _run(t0=5.0, origin=101.4, frames=250, last_arrival=50.0)
  # The same clock 3 s later, 3 s of wall time later: a 3-s gap by the source's clock.
  t0, missed, by = monitor._place_run(prev, _chunk(114.4, 53.04), reconnected=True)
  assert (round(t0, 3), round(missed, 3), by) == (18.0, 3.0, "source timestamps")
  # Continuing straight on (a discontinuity that lost nothing): no gap.
  t0, missed, by = monitor._place_run(prev, _chunk(111.4, 50.04))
  assert (round(t0, 3), missed) == (15.0, 0.0)
  # A restarted sender (its clock back at 1.4 s), 4 s of wall time later.
  t0, missed, by = monitor._place_run(prev, _chunk(1.4, 54.04), reconnected=True)
  assert (round(t0, 3), round(missed, 3), by) == (19.0, 4.0, "wall clock")
  # A clock 60 s ahead with no wall time between (a splice): the wall clock, no gap.
  t0, missed, by = monitor._place_run(prev, _chunk(171.4, 50.04))
  assert (round(t0, 3), round(missed, 3), by) == (15.0, 0.0, "wall clock")
  # After a reconnection an HLS reader may land up to CLOCK_SLACK_S past the wall time.
  t0, missed, by = monitor._place_run(prev, _chunk(131.4, 52.04), reconnected=True)
  assert (round(t0, 3), round(missed, 3), by) == (35.0, 20.0, "source timestamps")
  assert monitor._place_run(None, _chunk(1.4, 0.0)) == (0.0, 0.0, "source timestamps")


def test_prometheus_metrics_are_served():
  m = monitor.Metrics(0, "udp://x")
  try:
    r = {"event": "report", "offset_ms": 80.0, "uncertainty_ms": 3.0, "confidence": 0.5,
         "measurable": True, "latency_s": 2.5, "analysed_share": 0.9, "alarm_active": True,
         "frames": 250, "frames_dropped": 25, "corrupt_packets": 1, "reconnects": 0,
         "alarms": 1}
    m.update(r)
    m.update(r | {"frames": 300, "measurable": False})
    text = urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=5).read()
    text = text.decode()
  finally:
    m.close()
  line = lambda name: next(l for l in text.splitlines() if l.startswith(name + "{"))  # noqa
  assert line("modeformer_monitor_offset_ms").endswith("NaN")     # the last was unmeasurable
  assert line("modeformer_monitor_frames_total").endswith(" 300.0")
  assert line("modeformer_monitor_frames_dropped_total").endswith(" 25.0")
  assert line("modeformer_monitor_alarm_active").endswith(" 1.0")
  assert line("modeformer_monitor_latency_seconds").endswith(" 2.5")


def test_usage_errors_exit_2_and_help_states_exit_codes(capsys):
  with pytest.raises(SystemExit) as e:
    monitor.main(["-", "--window", "2.5"])
  assert e.value.code == monitor.EXIT_USAGE
  with pytest.raises(SystemExit) as e:
    monitor.main(["-", "--tolerance", "nope"])
  assert e.value.code == 2
  with pytest.raises(SystemExit):
    monitor.main(["--help"])
  out = capsys.readouterr().out
  assert "usage: python -m modeformer_jax.monitor" in out and "Exit codes" in out


# ------------------------------------------------------------------------------------------
# Streams (slow): a sender process, the monitor as a person runs it.
# ------------------------------------------------------------------------------------------

SEGMENT_S = 8.0
OFFSETS = (0, 4, -3, 0)          # frames: 0 -> +4 -> -3 -> 0, SEGMENT_S each
WINDOW, EVERY, HOLD = 4.0, 1.0, 3.0


@pytest.fixture(scope="module")
def changing_mp4(tmp_path_factory):
  from data_prep.synthetic.clip import render_clip
  from data_prep.synthetic.encode import write_mp4
  from data_prep.synthetic.speakers import make_speaker
  sp = make_speaker(5, 30)
  parts = [render_clip(sp, SEGMENT_S, 7 + i, audio_offset_frames=k)
           for i, k in enumerate(OFFSETS)]
  path = tmp_path_factory.mktemp("monitor") / "changing.mp4"
  write_mp4(path, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            gop=25)
  return path


def _free_udp_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _events(path):
  if not path.exists():
    return []
  return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]  # noqa: E741


def _start_monitor(url, jsonl, *extra, stdin=None):
  proc = subprocess.Popen([sys.executable, "-m", "modeformer_jax.monitor", url, "--jsonl",
                           str(jsonl), *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stdin=stdin)
  deadline = time.monotonic() + 180
  while not any(e["event"] == "started" for e in _events(jsonl)):
    assert proc.poll() is None and time.monotonic() < deadline, "the monitor did not start"
    time.sleep(0.2)
  return proc


def _sender(path, url, *extra):
  return subprocess.Popen([sys.executable, "-m", "data_prep.synthetic.live", str(path), url,
                           *extra], cwd=ROOT)


def _rss_mb(pid):
  with open(f"/proc/{pid}/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _segment_at(file_s):
  return OFFSETS[min(len(OFFSETS) - 1, int(file_s // SEGMENT_S))] * 40.0


@pytest.mark.slow
def test_monitor_follows_a_changing_offset_alarms_and_reconnects(changing_mp4, tmp_path):
  """0 -> +4 -> -3 -> 0 frames over UDP; the sender is killed at 12 s and restarted at the
  file's 14 s; alarms against EBU R37 (-40..+60 ms) with a 3-s hold."""
  url = f"udp://127.0.0.1:{_free_udp_port()}"
  jsonl, alarms = tmp_path / "m.jsonl", tmp_path / "alarms.txt"
  mon = _start_monitor(url, jsonl, "--window", str(WINDOW), "--every", str(EVERY), "--hold",
                       str(HOLD), "--stall", "2",
                       "--on_alarm", f'echo "$MONITOR_EVENT $MONITOR_OFFSET_MS" >> {alarms}')
  try:
    sender = _sender(changing_mp4, url)
    time.sleep(12.0)
    sender.kill()
    sender.wait()
    time.sleep(4.0)
    sender = _sender(changing_mp4, url, "--start", "14")
    sender.wait(timeout=120)
    time.sleep(WINDOW + 3)
  finally:
    mon.send_signal(signal.SIGTERM)
    code = mon.wait(timeout=60)
  assert code == monitor.EXIT_STOPPED
  ev = _events(jsonl)
  kinds = [e["event"] for e in ev]
  assert "lost" in kinds and "reconnected" in kinds, kinds
  gap = next(e for e in ev if e["event"] == "reconnected")["gap_s"]
  assert gap >= 2.0
  reports = [e for e in ev if e["event"] == "report"]
  runs = sorted({r["run"] for r in reports})
  assert len(runs) == 2, runs
  # Where each run's frame 0 sits in the file: 0, and 14 s (the keyframe at or before it).
  file_start = {runs[0]: 0.0, runs[1]: 14.0}
  checked = 0
  for r in reports:
    lo = file_start[r["run"]] + r["run_t_s"] - WINDOW
    hi = file_start[r["run"]] + r["run_t_s"]
    # Windows wholly inside one segment (1 s of slack for the restart's keyframe).
    if int((lo - 1) // SEGMENT_S) != int((hi + 0.5) // SEGMENT_S) or lo < 1:
      continue
    truth = _segment_at(hi)
    assert r["measurable"], r
    assert abs(r["offset_ms"] - truth) <= 25, (truth, r)
    assert r["latency_s"] <= WINDOW + 3, r
    checked += 1
  assert checked >= 8, [(r["run"], r["run_t_s"], r["offset_ms"]) for r in reports]
  # Each new offset is reported within one window (of stream) after the change. A change
  # is checked only where its run reached a window wholly after it: the sender is killed at
  # 12 s of wall time, and how much of the file the first run got before that depends on
  # how long the monitor took to join the stream.
  changes_checked = 0
  for change in (SEGMENT_S, 2 * SEGMENT_S, 3 * SEGMENT_S):
    run = runs[0] if change < 12 else runs[1]
    after = [r for r in reports if r["run"] == run and r["measurable"]
             and file_start[run] + r["run_t_s"] >= change + 0.5]
    if not after or file_start[run] + after[-1]["run_t_s"] < change + WINDOW + 0.5:
      continue
    changes_checked += 1
    first = next(r for r in after if abs(r["offset_ms"] - _segment_at(change + 0.5)) <= 25)
    assert file_start[run] + first["run_t_s"] <= change + WINDOW + 1.5, (change, first)
  assert changes_checked >= 2, changes_checked
  raised = [e for e in ev if e["event"] == "alarm_raised"]
  cleared = [e for e in ev if e["event"] == "alarm_cleared"]
  assert raised and cleared and cleared[-1]["t_s"] > raised[-1]["t_s"], (raised, cleared)
  lines = alarms.read_text().split("\n")
  assert any(l.startswith("raised ") for l in lines) and any(  # noqa: E741
      l.startswith("cleared ") for l in lines)
  summary = ev[-1]
  assert summary["event"] == "summary" and summary["alarms"] == len(raised)
  assert summary["reconnects"] >= 1 and summary["in_tolerance_s"] > 0
  assert summary["out_of_tolerance_s"] > 0


@pytest.mark.slow
def test_a_stalled_source_does_not_grow_memory(changing_mp4, tmp_path):
  """The sender stops after 4 s: the monitor reports no signal, keeps trying to reopen (the
  source is UDP) and its memory stays where it was over 25 s of attempts."""
  url = f"udp://127.0.0.1:{_free_udp_port()}"
  jsonl = tmp_path / "m.jsonl"
  mon = _start_monitor(url, jsonl, "--window", str(WINDOW), "--every", str(EVERY),
                       "--stall", "1")
  try:
    sender = _sender(changing_mp4, url)
    time.sleep(4.0)
    sender.kill()
    sender.wait()
    # The first reopening allocates FFmpeg's UDP buffer and a decoder (~16 MB) once; from
    # its failure on, attempts (and the stall) must cost nothing more.
    deadline = time.monotonic() + 60
    while not any(e["event"] == "reconnecting" for e in _events(jsonl)):
      assert time.monotonic() < deadline
      time.sleep(0.5)
    rss = []
    for _ in range(25):
      rss.append(_rss_mb(mon.pid))
      time.sleep(1.0)
  finally:
    mon.send_signal(signal.SIGTERM)
    code = mon.wait(timeout=60)
  assert code == monitor.EXIT_STOPPED
  kinds = [e["event"] for e in _events(jsonl)]
  assert "no_signal" in kinds and "lost" in kinds and kinds.count("reconnecting") >= 2, kinds
  assert max(rss) - rss[0] < 3, rss


@pytest.mark.slow
def test_a_source_that_never_opens_exits_1(tmp_path):
  out = subprocess.run([sys.executable, "-m", "modeformer_jax.monitor",
                        str(tmp_path / "missing.ts")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == monitor.EXIT_SOURCE, out.stderr[-2000:]
  assert "cannot open" in out.stdout


@pytest.mark.slow
def test_monitor_follows_offset_changes_on_a_real_clip(real_clips_dir, tmp_path):
  """A real talking head (HDTF, 8 s) played three times with its audio moved 0, +4 and -3
  frames: its own sync is unknown, so the changes are checked against the first part."""
  from data_prep.synthetic.encode import write_mp4
  from modeformer_jax.media import features
  dec = media.decode(str(real_clips_dir / "hdtf" / "WDA_KatieHill_000.mp4"))
  n = 200                                           # 8 s
  frames, audio = dec.frames[:n], dec.audio[:n * 640]
  shifts = (0, 4, -3)
  path = tmp_path / "real_changing.mp4"
  write_mp4(path, np.concatenate([frames] * len(shifts)),
            np.concatenate([features.shift_audio(audio, k) for k in shifts]), gop=25)
  url = f"udp://127.0.0.1:{_free_udp_port()}"
  jsonl = tmp_path / "m.jsonl"
  mon = _start_monitor(url, jsonl, "--window", str(WINDOW), "--every", str(EVERY))
  try:
    _sender(path, url).wait(timeout=120)
    time.sleep(WINDOW + 3)
  finally:
    mon.send_signal(signal.SIGTERM)
    assert mon.wait(timeout=60) == monitor.EXIT_STOPPED
  reports = [e for e in _events(jsonl) if e["event"] == "report"]
  by_part = {}
  for r in reports:
    part = int((r["run_t_s"] - WINDOW) // 8)
    if r["measurable"] and part == int((r["run_t_s"] - 0.01) // 8):   # inside one part
      by_part.setdefault(part, []).append(r["offset_ms"])
  assert sorted(by_part) == [0, 1, 2], [(r["run_t_s"], r["offset_ms"], r["reason"])
                                        for r in reports]
  base = np.median(by_part[0])
  for part, k in ((1, 4), (2, -3)):
    assert abs(np.median(by_part[part]) - base - 40 * k) <= 30, (k, by_part)
  assert all(r["latency_s"] <= WINDOW + 3 for r in reports if r["latency_s"] is not None)


@pytest.mark.slow
def test_a_source_faster_than_the_analysis_loses_pictures_not_frames(changing_mp4, tmp_path):
  """MPEG-TS on stdin as fast as it can go: every frame is decoded (the clock never slips),
  the pictures the analysis cannot keep up with are dropped, counted and reported."""
  jsonl = tmp_path / "m.jsonl"
  send = subprocess.Popen([sys.executable, "-m", "data_prep.synthetic.live", str(changing_mp4),
                           "-", "--speed", "0"], cwd=ROOT, stdout=subprocess.PIPE)
  mon = subprocess.run([sys.executable, "-m", "modeformer_jax.monitor", "-", "--jsonl",
                        str(jsonl), "--window", str(WINDOW), "--every", str(EVERY)],
                       cwd=ROOT, stdin=send.stdout, stdout=subprocess.DEVNULL, timeout=300)
  send.wait(timeout=60)
  assert mon.returncode == monitor.EXIT_STOPPED           # stdin ended: a clean end
  ev = _events(jsonl)
  summary = ev[-1]
  assert summary["event"] == "summary" and summary["ended"]
  assert summary["frames"] == len(OFFSETS) * SEGMENT_S * 25
  assert summary["frames_dropped"] > 0 and summary["analysed_share"] < 1
  partial = [e for e in ev if e["event"] == "report" and e["analysed_share"] < 1]
  assert partial and all(e["uncertainty_factor"] is None or e["uncertainty_factor"] > 1
                         for e in partial)
  # A window whose pictures were mostly dropped is "behind", never "no face" (a face is
  # in every frame of this stream).
  sparse = [e for e in partial if e["analysed_share"] < 0.5]
  assert all(e["reason"] == "behind" for e in sparse), [(e["analysed_share"], e["reason"])
                                                        for e in sparse]
  assert not [e for e in ev if e["event"] == "report" and e["reason"] == "no face"], [
      (e["window_s"], e["analysed_share"], e["face_fraction"]) for e in ev
      if e["event"] == "report" and e["reason"] == "no face"]


def test_monitor_uses_only_the_engines_public_api():
  """The monitor reads the analysis through the package's public names
  (``modeformer_jax.analysis.__all__``) and Evidence's public edge (push, latest_window,
  hop_frames, num_frames, close, finish), never a submodule or a private name."""
  import re

  from modeformer_jax import analysis
  src = (pathlib.Path(monitor.__file__)).read_text()
  used = set(re.findall(r"\b(?:ev|evidence)\.(\w+)", src))
  assert used <= {"push", "latest_window", "hop_frames", "num_frames", "close", "finish"}, used
  names = set(re.findall(r"(?<![\w.])analysis\.(\w+)", src))
  assert names and names <= set(analysis.__all__), names - set(analysis.__all__)
  assert not re.findall(r"from modeformer_jax\.analysis[\. ]", src)
  assert "lanes" not in src and "speech_threshold" not in src and ".forget(" not in src


@pytest.mark.slow
def test_a_file_played_live_gets_the_files_reasons_and_offsets(tmp_path):
  """One file both ways: file QC (``analysis.Analyzer``) and the live monitor reading it as
  a source. The sound character is decided in the engine, so for every window the monitor
  reports, the file's segment over the same blocks has the same reason and offset: speech
  at +60 ms, a held chord (music or steady sound), silence, and no face."""
  from data_prep.synthetic import long as long_mat
  from data_prep.synthetic.encode import write_mp4
  from modeformer_jax import analysis
  spec = {"seed": 1, "drift_ppm": 0.0, "pieces": [
      {"seconds": 9, "speaker": 3, "offset_ms": 60.0, "kind": "speech"},
      {"seconds": 7, "offset_ms": 60.0, "kind": "silence"},
      {"seconds": 7, "offset_ms": 60.0, "kind": "silence"},
      {"seconds": 6, "offset_ms": 60.0, "kind": "noface"}]}
  long_mat.make_long_video(tmp_path / "long.mp4", spec, progress=False)
  dec = media.decode(str(tmp_path / "long.mp4"))
  audio = dec.audio.copy()
  t = np.arange(7 * 16000) / 16000                      # seconds 9-16: a held A-major chord
  audio[9 * 16000:16 * 16000] = 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330))
  write_mp4(tmp_path / "both.mp4", dec.frames, audio, gop=25)
  path = tmp_path / "both.ts"        # MPEG-TS: a live source reads it as a stream
  with av.open(str(tmp_path / "both.mp4")) as src, av.open(str(path), "w", format="mpegts") as dst:
    out = {s.index: dst.add_stream_from_template(s) for s in (*src.streams.video,
                                                               *src.streams.audio)}
    for pkt in src.demux():
      if pkt.dts is not None:
        pkt.stream = out[pkt.stream.index]
        dst.mux(pkt)

  det = analysis.load_detector(chunk=32)
  opts = analysis.AnalysisOptions()                     # files' 5 s windows, 1 s apart
  result = analysis.Analyzer(options=opts, detector=det).analyze(str(path))
  file_segs = {round(s["start_s"] * 25): s for s in result["segments"]}
  reports: list[dict] = []
  mon = monitor.Monitor(str(path), monitor.MonitorOptions(
      analysis=analysis.AnalysisOptions(), every_s=1.0, stall_s=1.0, sparse_backlog_s=1e9,
      drop_backlog_s=1e9, resume_backlog_s=1e9, max_queue_s=1e9), detector=det,
      sinks=[reports.append])
  assert mon.run() == monitor.EXIT_STOPPED
  live = [r for r in reports if r["event"] == "report"]
  assert len(live) >= 20, [r for r in reports if r["event"] != "report"]
  reasons = set()
  for r in live:
    first = round(r["window_s"][0] * 25)
    seg = file_segs.get(first)
    if seg is None or round(r["window_s"][1] * 25) != round(seg["end_s"] * 25):
      continue            # the stream's last, shorter window has no file segment
    reasons.add(r["reason"])
    assert r["reason"] == seg["reason"], (r["window_s"], r["reason"], seg["reason"])
    if seg["measurable"]:
      assert abs(r["offset_ms"] - seg["offset_ms"]) <= 1.0, (r["window_s"], r, seg)
  assert {None, "music or steady sound", "silence", "no face"} <= reasons, (
      reasons, [(s["start_s"], s["reason"], s["sound"]) for s in result["segments"]])


def _free_tcp_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _http_server(root: pathlib.Path, port: int) -> subprocess.Popen:
  """Python's http.server on 127.0.0.1:``port`` serving ``root`` (the test stops it)."""
  return subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                           "127.0.0.1", "--directory", str(root)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_an_hls_playlist_that_ends_is_one_end_and_never_replayed(changing_mp4, tmp_path):
  """A live HLS playlist (2-s segments, 6 listed, old ones deleted) written in real time and
  served by Python's http.server, as a packager and a web server would: the monitor follows
  it, and when the playlist gets #EXT-X-ENDLIST it reports one end and stops, with about as
  much stream time as the file has (reopening it would replay its listed segments)."""
  www = tmp_path / "www"
  www.mkdir()
  port = _free_tcp_port()
  server = _http_server(www, port)
  jsonl = tmp_path / "m.jsonl"
  mon = None
  try:
    sender = _sender(changing_mp4, str(www / "live.m3u8"))
    t0 = time.monotonic()
    while not (www / "live.m3u8").exists():       # the first segment is written
      assert time.monotonic() - t0 < 30
      time.sleep(0.2)
    mon = _start_monitor(f"http://127.0.0.1:{port}/live.m3u8", jsonl, "--window",
                         str(WINDOW), "--every", str(EVERY), "--stall", "5")
    sender.wait(timeout=120)
    code = mon.wait(timeout=90)                   # ends by itself at #EXT-X-ENDLIST
    wall = time.monotonic() - t0
  finally:
    if mon is not None and mon.poll() is None:
      mon.kill()
    server.kill()
    server.wait()
  assert code == monitor.EXIT_STOPPED
  ev = _events(jsonl)
  kinds = [e["event"] for e in ev]
  assert kinds.count("ended") == 1 and "ENDLIST" in next(
      e for e in ev if e["event"] == "ended")["reason"], kinds
  summary = ev[-1]
  length = len(OFFSETS) * SEGMENT_S
  # The monitor joins up to 3 segments (6 s) behind live; it never counts more than the file.
  assert length - 8 <= summary["stream_s"] <= length + 0.5, summary
  assert summary["stream_s"] <= wall, (summary, wall)
  assert summary["reconnects"] == 0, summary
  reports = [e for e in ev if e["event"] == "report"]
  assert reports and not [r for r in reports if r["reason"] == "no face"], reports
  good = [r for r in reports if r["measurable"]]
  assert len(good) >= len(reports) // 2, [(r["t_s"], r["reason"]) for r in reports]


@pytest.mark.slow
def test_reopening_an_hls_playlist_replays_nothing(changing_mp4, tmp_path):
  """A live playlist whose packager stopped without #EXT-X-ENDLIST (6 segments of 2 s
  listed): the monitor reads the segments FFmpeg starts from, stalls, and reopens the
  playlist again and again. Each reopening lists the same segments; they are skipped by
  their timestamps, so the stream time stays what was read once (it used to grow by the
  listed segments at every reconnection)."""
  www = tmp_path / "www"
  www.mkdir()
  with av.open(str(changing_mp4)) as src, av.open(
      str(www / "live.m3u8"), "w", format="hls",
      options={"hls_time": "2", "hls_list_size": "6", "hls_flags": "omit_endlist"}) as dst:
    out = {st.index: dst.add_stream_from_template(st) for st in (*src.streams.video,
                                                                  *src.streams.audio)}
    for pkt in src.demux():
      if pkt.dts is not None:
        pkt.stream = out[pkt.stream.index]
        dst.mux(pkt)
  assert "#EXT-X-ENDLIST" not in (www / "live.m3u8").read_text()
  port = _free_tcp_port()
  server = _http_server(www, port)
  jsonl = tmp_path / "m.jsonl"
  mon = None
  try:
    mon = _start_monitor(f"http://127.0.0.1:{port}/live.m3u8", jsonl, "--window",
                         str(WINDOW), "--every", str(EVERY), "--stall", "2")
    deadline = time.monotonic() + 90
    while sum(e["event"] == "lost" for e in _events(jsonl)) < 3:
      assert mon.poll() is None and time.monotonic() < deadline, [
          e["event"] for e in _events(jsonl) if e["event"] != "report"]
      time.sleep(0.5)
    mon.send_signal(signal.SIGTERM)
    assert mon.wait(timeout=60) == monitor.EXIT_STOPPED
  finally:
    if mon is not None and mon.poll() is None:
      mon.kill()
    server.kill()
    server.wait()
  summary = _events(jsonl)[-1]
  listed = 6 * 2.0
  assert summary["reconnects"] >= 2, summary
  assert summary["stream_s"] <= listed + 0.5, (summary["stream_s"], summary["reconnects"])
  assert summary["replayed_packets_skipped"] > 0, summary


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tcp", "growing file", "stdin"])
def test_tcp_and_a_growing_file_are_followed_in_real_time(kind, changing_mp4, tmp_path):
  """MPEG-TS from a TCP server (the sender listens, the monitor connects), from a file
  still being written and on stdin, in real time: the offsets the file carries, the file's
  stream time (no faster than real time), no "no face" on a face that is there. A growing
  file ends once it stops growing and stdin when it closes (one end each); a TCP server
  that goes away may come back, so the monitor keeps trying."""
  jsonl = tmp_path / "m.jsonl"
  t0 = time.monotonic()                # stream time may not run ahead of the sender's clock
  stdin = None
  if kind == "stdin":
    sender = subprocess.Popen([sys.executable, "-m", "data_prep.synthetic.live",
                               str(changing_mp4), "-"], cwd=ROOT, stdout=subprocess.PIPE)
    source, stdin = "-", sender.stdout
  elif kind == "tcp":
    port = _free_tcp_port()
    sender = _sender(changing_mp4, f"tcp://127.0.0.1:{port}?listen=1")
    source = f"tcp://127.0.0.1:{port}"
  else:
    source = str(tmp_path / "growing.ts")
    sender = _sender(changing_mp4, source)
    # The recording has begun (the muxer writes in 32-KB blocks: a few seconds here).
    while not pathlib.Path(source).exists() or pathlib.Path(source).stat().st_size < 65536:
      time.sleep(0.1)
  # A file's writer flushes 32-KB blocks, seconds apart at this bitrate: it has stopped
  # growing only after a longer wait.
  stall = "2" if kind == "tcp" else "8"
  mon = _start_monitor(source, jsonl, "--window", str(WINDOW), "--every", str(EVERY),
                       "--stall", stall, stdin=stdin)
  if stdin is not None:
    stdin.close()                      # the monitor holds the pipe now
  try:
    sender.wait(timeout=120)
    if kind == "tcp":
      deadline = time.monotonic() + 30
      while not any(e["event"] == "lost" for e in _events(jsonl)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
      mon.send_signal(signal.SIGTERM)
    code = mon.wait(timeout=60)
    wall = time.monotonic() - t0
  finally:
    if mon.poll() is None:
      mon.kill()
  assert code == monitor.EXIT_STOPPED
  ev = _events(jsonl)
  summary = ev[-1]
  length = len(OFFSETS) * SEGMENT_S
  assert length - 3 <= summary["stream_s"] <= min(length + 0.5, wall), (summary, wall)
  kinds = [e["event"] for e in ev]
  if kind == "tcp":
    assert "ended" not in kinds and summary["reconnects"] == 0, kinds
  else:
    assert kinds.count("ended") == 1 and summary["reconnects"] == 0, kinds
  reports = [e for e in ev if e["event"] == "report"]
  assert not [r for r in reports if r["reason"] == "no face"]
  checked = sum(_offsets_read(reports, lambda r: r["run_t_s"]).values())
  # Each window wholly inside one offset's stretch that could be measured reads it (a busy
  # machine drops pictures: fewer measurable windows, never wrong ones).
  assert checked >= 4, (kind, [(r["run_t_s"], r["offset_ms"], r["reason"]) for r in reports])


def _finish(mon, sender) -> int:
  """Kills the sender if it still runs, stops the monitor; its exit code."""
  if sender is not None and sender.poll() is None:
    sender.kill()
  mon.send_signal(signal.SIGTERM)
  return mon.wait(timeout=60)


def _offsets_read(reports, file_s) -> dict:
  """Checks each measurable report whose window lies wholly inside one offset's stretch of
  the file (``file_s(r)``: the file's time at the window's end): it reads that offset
  within 25 ms. Returns how many were checked, per run."""
  checked = {r["run"]: 0 for r in reports}
  for r in reports:
    hi = file_s(r)
    lo = hi - WINDOW
    if r["measurable"] and lo >= 1 and int((lo - 1) // SEGMENT_S) == int((hi + 0.5) // SEGMENT_S):
      assert abs(r["offset_ms"] - _segment_at(hi)) <= 25, r
      checked[r["run"]] += 1
  return checked


def _send_then_kill(path, url, jsonl, mon, after_s=10.0):
  """Starts a sender, kills it ``after_s`` after the monitor opened the source, and waits
  until the monitor saw it go."""
  sender = _sender(path, url)
  try:
    _wait_for(jsonl, "opened", proc=mon)
    time.sleep(after_s)
  finally:
    sender.kill()
    sender.wait()
  _wait_for(jsonl, "lost", proc=mon)


def _wait_for(jsonl, kind, count=1, timeout=60.0, proc=None):
  """Waits until the monitor's JSONL holds ``count`` events of ``kind``."""
  deadline = time.monotonic() + timeout
  while sum(e["event"] == kind for e in _events(jsonl)) < count:
    assert proc is None or proc.poll() is None, "the monitor exited"
    assert time.monotonic() < deadline, (kind, [e["event"] for e in _events(jsonl)
                                                if e["event"] != "report"])
    time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rtmp", "rtsp", "rtp"])
def test_a_publisher_killed_and_restarted_leaves_a_gap_and_no_replay(kind, changing_mp4,
                                                                      tmp_path):
  """RTMP and RTSP through FFmpeg's listen modes (the monitor is the server, ``--listen``;
  the test's sender publishes: RTMP publish, RTSP ANNOUNCE / RECORD) and MPEG-TS over RTP
  described by an SDP file (given the bare rtp:// URL, FFmpeg starts at the next keyframe).
  The sender is killed (SIGKILL) about 10 s in and, 3 s after the monitor saw it go, a new
  one sends the file from its 14th second with a new clock. The monitor follows the offsets
  the file carries in both runs, counts one reconnection, reports the gap (by the wall
  clock: the new sender's clock started again), replays nothing, and its stream time is
  what it received plus the gap, never ahead of the wall clock."""
  source = None
  if kind == "rtp":
    from data_prep.synthetic.live import write_sdp
    url, extra, source = f"rtp://127.0.0.1:{_free_udp_port()}", (), str(tmp_path / "s.sdp")
    write_sdp(source, url)
  else:
    path = "/live/key" if kind == "rtmp" else "/live"
    url, extra = f"{kind}://127.0.0.1:{_free_tcp_port()}{path}", ("--listen",)
  jsonl = tmp_path / "m.jsonl"
  mon = _start_monitor(source or url, jsonl, "--window", str(WINDOW), "--every", str(EVERY),
                       "--stall", "2", *extra)
  sender = None
  try:
    if extra:
      _wait_for(jsonl, "listening", proc=mon)
      time.sleep(1.0)                  # the event comes just before FFmpeg listens
    t0 = time.monotonic()
    _send_then_kill(changing_mp4, url, jsonl, mon)
    killed_at = time.monotonic() - t0
    if extra:
      _wait_for(jsonl, "listening", count=2, proc=mon)
    time.sleep(3.0)
    sender = _sender(changing_mp4, url, "--start", "14")
    assert sender.wait(timeout=120) == 0
    _wait_for(jsonl, "lost", count=2, proc=mon)
    wall = time.monotonic() - t0
  finally:
    code = _finish(mon, sender)
  assert code == monitor.EXIT_STOPPED
  ev = _events(jsonl)
  kinds = [e["event"] for e in ev]
  assert kinds.count("opened") == 1 and kinds.count("reconnected") == 1, kinds
  assert "ended" not in kinds, kinds              # a publisher may always come back
  summary = ev[-1]
  assert summary["reconnects"] == 1 and summary["replayed_packets_skipped"] == 0, summary
  gaps = [e for e in ev if e["event"] == "gap"]
  assert len(gaps) == 1 and gaps[0]["measured_by"] == "wall clock", gaps
  assert 2.5 <= gaps[0]["missed_s"] <= 15, gaps
  # What came: up to the kill, then the file from 14 s (SEGMENT_S * len(OFFSETS) long).
  length = len(OFFSETS) * SEGMENT_S
  assert summary["received_s"] <= killed_at + (length - 14) + 1, (summary, killed_at)
  assert abs(summary["stream_s"] - summary["received_s"] - summary["missed_s"]) <= 0.2, summary
  # The gap is wall time between pictures, so stream time tracks the wall clock; a replay
  # would put it seconds ahead (1 s: a frame's arrival jitter and the first buffer).
  assert summary["stream_s"] <= wall + 1.0, (summary, wall)
  reports = [e for e in ev if e["event"] == "report"]
  assert not [r for r in reports if r["reason"] == "no face"]
  runs = sorted({r["run"] for r in reports})
  assert len(runs) == 2, runs
  second = [r for r in reports if r["run"] == runs[1]]
  assert second[0]["t_s"] >= gaps[0]["t_s"], (second[0], gaps)
  file_start = {runs[0]: 0.0, runs[1]: 14.0}
  checked = _offsets_read(reports, lambda r: file_start[r["run"]] + r["run_t_s"])
  assert min(checked.values()) >= 1 and sum(checked.values()) >= 4, (
      checked, [(r["run"], r["run_t_s"], r["offset_ms"], r["reason"]) for r in reports])


@pytest.mark.slow
def test_a_resent_stretch_is_skipped_and_stream_time_is_the_sources(changing_mp4, tmp_path):
  """UDP: the sender is killed about 10 s in and, once the monitor reopened the source, a
  new one resends the file from its 6th second with the file's own timestamps (as a server
  resends the pictures it cached). What was already read is skipped (counted), the rest
  continues the same clock: stream time is the file's time (no gap, nothing counted twice)
  and each report's window reads the offset the file carries there."""
  url = f"udp://127.0.0.1:{_free_udp_port()}"
  jsonl = tmp_path / "m.jsonl"
  mon = _start_monitor(url, jsonl, "--window", str(WINDOW), "--every", str(EVERY), "--stall",
                       "2")
  sender = None
  try:
    _send_then_kill(changing_mp4, url, jsonl, mon)
    sender = _sender(changing_mp4, url, "--start", "6", "--keep_clock")
    assert sender.wait(timeout=120) == 0
    _wait_for(jsonl, "lost", count=2, proc=mon)
  finally:
    code = _finish(mon, sender)
  assert code == monitor.EXIT_STOPPED
  ev = _events(jsonl)
  summary = ev[-1]
  length = len(OFFSETS) * SEGMENT_S
  assert summary["reconnects"] == 1 and summary["replayed_packets_skipped"] > 0, summary
  assert summary["missed_s"] <= 0.5 and length - 2 <= summary["stream_s"] <= length + 0.5, (
      summary)
  reports = [e for e in ev if e["event"] == "report"]
  runs = sorted({r["run"] for r in reports})
  assert len(runs) == 2, runs
  checked = _offsets_read(reports, lambda r: r["t_s"])    # stream time is the file's time
  assert min(checked.values()) >= 1 and sum(checked.values()) >= 4, (
      checked, [(r["run"], r["t_s"], r["offset_ms"], r["reason"]) for r in reports])
