"""Live lip-sync monitoring: the audio offset of a running stream, a few seconds behind live.

  python -m modeformer_jax.monitor udp://0.0.0.0:5000
  python -m modeformer_jax.monitor rtsp://camera/stream --tolerance ebu_r37 --hold 10
  ffmpeg -re -i programme.mp4 -f mpegts - | python -m modeformer_jax.monitor -
  python -m modeformer_jax.monitor stream.sdp --jsonl sync.jsonl --metrics_port 9109
  python -m modeformer_jax.monitor rtmp://0.0.0.0:1935/live/key --listen   # encoders push here

SOURCE is anything FFmpeg opens as a live input (udp://, rtp:// or an SDP file, rtsp://,
rtmp://, tcp://, an HLS playlist over http(s), a capture device with --format, a file that
is still being written) or - for MPEG-TS on stdin.

Every --every seconds (of the stream) it reports the offset over the last --window seconds:
ms (**positive = audio late**), confidence, the face it follows, or "unmeasurable" with the
reason (no face, silence, music or steady sound, no speech, uncertain, behind, no signal),
with the latency from the arrival of the oldest frame the report adds to the report itself. The
analysis is the one engine's (``analysis.Evidence``, fed chunk by chunk; a report is its
``latest_window``, sound character and reasons included). Outputs: a line per report for a
person (stdout; stderr
when --jsonl -), JSONL (--jsonl FILE or -) and Prometheus metrics (--metrics_port).

Alarms: when the offset stays outside --tolerance for --hold seconds of stream, it says so
once (and runs --on_alarm CMD with MONITOR_* variables in its environment); when it is
back inside for --hold seconds, it says the alarm cleared (CMD runs again). Reports that
are unmeasurable neither raise nor clear an alarm.

Keeping up: decoding runs on its own thread and never waits for the analysis. When decoded
frames wait longer than 1 s, face landmarks run on every 4th frame; longer than 3 s, the
pictures of waiting chunks are not analysed at all (their sound is) until the backlog is
under 0.5 s. Reports give the share of frames analysed and how much that widens the
uncertainty (1/sqrt(share)). Memory stays flat: the evidence older than the window is
dropped.

One module (750 lines) because keeping up, reporting, alarms, stream time and the outputs
share one state (the backlog, the run, the alarm); the analysis itself is
``modeformer_jax.analysis``.

With --listen the monitor is the RTMP, RTSP or TCP server an encoder publishes to; when
the publisher leaves, it listens for the next.

Stream time follows the source's timestamps across reconnections: what a reconnection
replays (an HLS playlist's listed segments, a server's cached pictures) is skipped, and the
stream time that never came is reported as a gap (by the source's clock, or by the wall
clock where the source restarted its clock).

Faults: network sources that fail, end or stall for --stall seconds are reopened with
backoff (1 s doubling to 30 s; --give_up ends the attempts); the gap is reported. Packets
that fail to decode are skipped and counted. Ctrl-C or SIGTERM stops it with a summary
(time monitored, time in and out of tolerance, alarms).

Exit codes: 0 stopped by Ctrl-C / SIGTERM, or the source ended (stdin closed, a file that
stopped growing); 1 the source never opened, or could not be reopened within --give_up;
2 usage error.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, TextIO

import numpy as np

from modeformer_jax import analysis, cli, media
from modeformer_jax.errors import FeatureError
from modeformer_jax.model import windows
from modeformer_jax.qc import tolerances

FPS = windows.FPS
EXIT_STOPPED, EXIT_SOURCE, EXIT_USAGE = 0, 1, 2
NO_LANDMARKS = 1 << 30          # detect_every for chunks whose pictures are not analysed


@dataclasses.dataclass
class MonitorOptions:
  """What a monitor reports, when, and how it keeps up."""
  # The analysis (analysis.AnalysisOptions, the same options as detect's): reports read the last
  # 10 s (files' segments 5 s): alarms then follow a stable reading.
  analysis: analysis.AnalysisOptions = dataclasses.field(
      default_factory=lambda: analysis.AnalysisOptions(window_s=10.0))
  every_s: float = 2.0           # a report every every_s of stream
  tolerance: str = "ebu_r37"     # tolerances.KEYS
  hold_s: float = 10.0           # out (or back in) for this long raises (clears) an alarm
  chunk_frames: int = 5          # frames decoded per chunk (200 ms)
  embed_chunk: int = 32          # windows per model call (small: reports wait for none)
  sparse_backlog_s: float = 1.0  # backlog from which landmarks run on every sparse_every-th
  sparse_every: int = 4
  drop_backlog_s: float = 3.0    # backlog from which pictures are not analysed ...
  resume_backlog_s: float = 0.5  # ... until it is under this
  max_queue_s: float = 8.0       # decoded chunks beyond this wait without their pictures
  stall_s: float = 5.0           # no data this long: the source stalled (network: reopen)
  open_timeout_s: float = 10.0
  give_up_s: float | None = None  # stop reopening after this long (None: never)
  format: str | None = None      # the input format (v4l2, mpegts, ...); None: FFmpeg guesses
  listen: bool = False           # be the rtmp:// / rtsp:// / tcp:// server an encoder publishes to

  def check(self) -> None:
    qc = self.analysis
    qc.check()
    if abs(self.every_s / qc.hop_s - round(self.every_s / qc.hop_s)) > 1e-9 or self.every_s <= 0:
      raise ValueError(f"--every {self.every_s:g} must be a whole number of {qc.hop_s:g}-s "
                       f"blocks")
    if self.tolerance not in tolerances.KEYS:
      raise ValueError(f"unknown tolerance {self.tolerance!r}; one of {list(tolerances.KEYS)}")


class Alarm:
  """Out of tolerance for ``hold_s`` of stream raises; back inside for ``hold_s`` clears."""

  def __init__(self, tolerance: tolerances.Tolerance, hold_s: float):
    self.tolerance, self.hold_s = tolerance, hold_s
    self.active = False
    self.raised = 0
    self.out_since: float | None = None
    self.in_since: float | None = None

  def update(self, t_s: float, offset_ms: float | None) -> str | None:
    """A report at stream time ``t_s``; returns ``"raised"``, ``"cleared"`` or None."""
    if offset_ms is None:
      return None
    if self.tolerance.passes(offset_ms):
      self.out_since = None
      self.in_since = t_s if self.in_since is None else self.in_since
      if self.active and t_s - self.in_since >= self.hold_s - 1e-9:
        self.active = False
        return "cleared"
    else:
      self.in_since = None
      self.out_since = t_s if self.out_since is None else self.out_since
      if not self.active and t_s - self.out_since >= self.hold_s - 1e-9:
        self.active = True
        self.raised += 1
        return "raised"
    return None

  def skip(self, seconds: float) -> None:
    """Stream time that never came (a gap) counts neither as out nor as in tolerance."""
    self.out_since = None if self.out_since is None else self.out_since + seconds
    self.in_since = None if self.in_since is None else self.in_since + seconds


# Report field -> (metric name, help). Gauges show the last report, counters its totals.
GAUGES = {
    "offset_ms": ("offset_ms", "audio offset over the window, ms (positive = audio late; NaN "
                  "when unmeasurable)"),
    "uncertainty_ms": ("uncertainty_ms", "standard error of the offset, ms"),
    "confidence": ("confidence", "similarity margin of the offset"),
    "measurable": ("measurable", "1 when the last window was measurable"),
    "latency_s": ("latency_seconds", "arrival of the oldest newly reported frame to the report"),
    "analysed_share": ("analysed_share", "share of the window's pictures analysed"),
    "alarm_active": ("alarm_active", "1 while an alarm is raised"),
}
COUNTERS = {
    "frames": ("frames", "output frames received (25 fps)"),
    "frames_dropped": ("frames_dropped", "frames whose pictures were not analysed (backlog)"),
    "corrupt_packets": ("corrupt_packets", "packets skipped because they failed to decode"),
    "reconnects": ("reconnects", "times the source was reopened"),
    "alarms": ("alarms", "alarms raised"),
}


class Metrics:
  """Prometheus gauges and counters (``GAUGES``, ``COUNTERS``, ``reports``) labelled with
  the source, on ``port`` (0: any free port, see ``port``)."""

  def __init__(self, port: int, source: str):
    import prometheus_client as pc
    self.registry = pc.CollectorRegistry()

    def make(kind, name: str, doc: str):
      return kind(f"modeformer_monitor_{name}", doc, ["source"],
                  registry=self.registry).labels(source)
    self.gauges = {k: make(pc.Gauge, *v) for k, v in GAUGES.items()}
    self.counters = {k: make(pc.Counter, *v) for k, v in COUNTERS.items()}
    self.reports = make(pc.Counter, "reports", "reports made")
    self._last: dict[str, float] = collections.defaultdict(float)
    out = pc.start_http_server(port, registry=self.registry)
    self.server = out[0] if isinstance(out, tuple) else None
    self.port = self.server.server_port if self.server is not None else port

  def update(self, r: dict) -> None:
    """Takes a report (other events are ignored)."""
    if r.get("event") != "report":
      return
    for key, gauge in self.gauges.items():
      v = r.get(key)
      if v is None or (key == "offset_ms" and not r["measurable"]):
        v = float("nan")
      gauge.set(float(v))
    for key, counter in self.counters.items():
      counter.inc(max(0.0, r[key] - self._last[key]))
      self._last[key] = max(r[key], self._last[key])
    self.reports.inc()

  def close(self) -> None:
    if self.server is not None:
      self.server.shutdown()


class _Latency:
  """Seconds from frame arrival to the first report that includes it: a histogram at 10 ms
  (fixed memory), the worst of the last report."""

  def __init__(self, max_s: float = 120.0):
    self.hist = np.zeros(int(max_s * 100) + 1, np.int64)

  def add(self, lat: np.ndarray) -> None:
    np.add.at(self.hist, np.clip((lat * 100).astype(int), 0, self.hist.size - 1), 1)

  def quantile(self, q: float) -> float | None:
    n = self.hist.sum()
    if not n:
      return None
    return float(np.searchsorted(np.cumsum(self.hist), q * n)) / 100


@dataclasses.dataclass
class _Run:
  """One run of the source (``media.LiveReader``): its evidence and what the monitor keeps
  about its frames until they are reported."""
  run: int
  evidence: analysis.Evidence
  t0_s: float                                    # stream time of its frame 0
  next_due: float                                # stream seconds (in the run) of the next report
  origin: float | None = None                    # source timestamp (s) of its frame 0
  last_arrival: float | None = None              # monotonic arrival of its last frame
  arrivals: collections.deque = dataclasses.field(default_factory=collections.deque)
  analysed: dict = dataclasses.field(default_factory=dict)   # block -> frames analysed


class Monitor:
  """Watches one live source; ``run()`` until the source ends or ``stop()``; each report
  and event (dicts) goes to every sink."""

  def __init__(self, source: str, options: MonitorOptions | None = None,
               checkpoint: str | None = None, detector: Any | None = None,
               sinks: list[Callable[[dict], None]] | None = None,
               on_alarm: str | None = None):
    self.source = source
    self.options = options or MonitorOptions()
    self.options.check()
    o = self.options
    det = detector or analysis.load_detector(checkpoint, chunk=o.embed_chunk)
    self.analyzer = analysis.Analyzer(options=o.analysis, detector=det)
    # Landmarks every n-th frame for the next chunk: sparser while the analysis is behind.
    self._landmarks_every = o.analysis.detect_every
    self.tolerance = tolerances.STANDARDS[tolerances.KEYS[o.tolerance]]
    self.alarm = Alarm(self.tolerance, o.hold_s)
    self.sinks = list(sinks or [])
    self.on_alarm = on_alarm
    self._children: list[subprocess.Popen] = []
    self.reader = media.LiveReader(source, o.chunk_frames, format=o.format,
                                   open_timeout_s=o.open_timeout_s, stall_s=o.stall_s,
                                   give_up_s=o.give_up_s, listen=o.listen)
    self._queue: queue.Queue = queue.Queue()
    self._queued = 0                 # frames waiting in the queue
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._placeholder: np.ndarray | None = None
    self.latency = _Latency()
    self.counts = collections.Counter()
    self.time_in = self.time_out = self.time_unmeasurable = 0.0
    self.started = time.monotonic()
    self.error: FeatureError | None = None
    self.ended = ""
    self._run: _Run | None = None
    self._received = 0.0             # stream seconds received in the runs that ended
    self._reconnected = False        # the next run follows a reconnection
    self._dropping = False
    self._last_data = time.monotonic()
    self._stalled = False
    self._warm()

  # --- the decoding thread --------------------------------------------------------------
  def _decode(self) -> None:
    max_q = self.options.max_queue_s * FPS
    try:
      for item in self.reader.chunks():
        if isinstance(item, media.Chunk):
          with self._lock:
            over = self._queued > max_q
            self._queued += len(item.frames)
          if over and len(item.frames):
            item = self._without_pictures(item)
            self.counts["queue_overflow"] += len(item.frames)
        self._queue.put(item)
    except FeatureError as e:
      self._queue.put(e)
    except Exception as e:  # noqa: BLE001  # the main thread reports it and exits 1
      self._queue.put(FeatureError(self.source, "corrupt", f"{type(e).__name__}: {e}"))
    self._queue.put(None)

  def _without_pictures(self, ch: media.Chunk) -> media.Chunk:
    """The chunk with one shared picture standing for all of its frames (all held): its
    pictures are not analysed, and waiting it costs no picture memory."""
    shape = ch.frames.shape[1:]
    if self._placeholder is None or self._placeholder.shape != shape:
      self._placeholder = np.array(ch.frames[0])
    frames = np.broadcast_to(self._placeholder, ch.frames.shape)
    return dataclasses.replace(ch, frames=frames, held=np.ones(len(ch.frames), bool))

  # --- analysis --------------------------------------------------------------------------
  def _warm(self) -> None:
    """Runs the analysis once on a blank second before the stream starts: compiling the
    model's programs and starting the face landmarker take seconds that a live source
    would otherwise spend waiting in the queue."""
    from modeformer_jax.model.input_spec import LIP_SIZE, MEL_CONFIG
    emb = self.analyzer.embedder
    emb.video(np.zeros((1, windows.WINDOW_FRAMES, *LIP_SIZE, 3), np.uint8))
    emb.audio(np.zeros((1, MEL_CONFIG["n_mels"], windows.MEL_WINDOW), np.float32))
    info = media.StreamInfo("warm-up", 160, 160, FPS, None)
    ev = analysis.Evidence(self.analyzer, info, name="warm-up")
    try:
      ev.push(media.Chunk(0, np.full((FPS, 160, 160, 3), 128, np.uint8),
                          np.zeros(windows.SAMPLE_RATE, np.float32)))
      ev.latest_window()
    finally:
      ev.close()

  def _new_run(self, ch: media.Chunk) -> _Run:
    prev = self._run
    t0, missed, clock = _place_run(prev, ch, self._reconnected)
    self._reconnected = False
    if prev is not None:
      prev.evidence.close()
      self._received += prev.evidence.num_frames / FPS
      self.alarm.skip(missed)
      if missed >= MIN_GAP_S:
        self._emit({"event": "gap", "time": _now(), "source": self.source, "run": ch.run,
                    "t_s": round(t0, 3), "missed_s": round(missed, 3), "measured_by": clock})
    info = self.reader.info or media.StreamInfo(self.source, ch.frames.shape[2],
                                                ch.frames.shape[1], FPS, None)
    ev = analysis.Evidence(self.analyzer, info, name=self.source)
    self._run = _Run(ch.run, ev, t0, self.options.every_s, origin=ch.origin)
    return self._run

  def _push(self, ch: media.Chunk) -> None:
    o = self.options
    run = self._run if self._run is not None and self._run.run == ch.run else self._new_run(ch)
    n = len(ch.frames)
    with self._lock:
      self._queued -= n
      backlog = self._queued / FPS
    pictures = not (ch.held is not None and ch.held.all() and ch.frames.strides[0] == 0)
    if self._dropping and backlog < o.resume_backlog_s:
      self._dropping = False
    elif not self._dropping and backlog > o.drop_backlog_s:
      self._dropping = True
    if self._dropping and pictures and n:
      ch = self._without_pictures(ch)
      pictures = False
    if not pictures:
      self._landmarks_every = NO_LANDMARKS
      self.counts["frames_dropped"] += n
    elif backlog > o.sparse_backlog_s:
      self._landmarks_every = max(o.sparse_every, o.analysis.detect_every)
      self.counts["frames_sparse"] += n
    else:
      self._landmarks_every = o.analysis.detect_every
    self.counts["frames"] += n
    hop = run.evidence.hop_frames
    if pictures:
      for t in range(ch.start, ch.start + n):
        run.analysed[t // hop] = run.analysed.get(t // hop, 0) + 1
    if ch.arrival is not None and n:
      run.arrivals.append((ch.start, ch.arrival))
      run.last_arrival = float(ch.arrival[-1])
    run.evidence.push(ch, landmarks_every=self._landmarks_every)
    self._last_data = time.monotonic()
    self._stalled = False
    if run.evidence.num_frames / FPS >= run.next_due:
      self._report(run)

  def _report(self, run: _Run) -> None:
    o = self.options
    ev = run.evidence
    while ev.num_frames / FPS >= run.next_due:
      run.next_due += o.every_s
    seg = ev.latest_window()
    if seg is None:
      return
    f0, f1, hop = seg["start_frame"], seg["end_frame"], ev.hop_frames
    b0, b1 = f0 // hop, f1 // hop
    reason = seg["reason"]         # the engine's, sound character included
    share = sum(run.analysed.get(b, 0) for b in range(b0, b1)) / max(1, f1 - f0)
    if reason == "no face" and (seg["face_fraction"] or 0.0) + (1 - share) >= o.analysis.min_face:
      # The monitor fell behind and dropped pictures: had the dropped ones held the face,
      # it would have been seen often enough, so "no face" cannot be said.
      reason = "behind"
    measurable = reason is None
    # Latency: every frame the report adds, from its arrival to now.
    now = time.monotonic()
    upto = f1
    worst = None
    while run.arrivals and run.arrivals[0][0] < upto:
      start, arr = run.arrivals.popleft()
      k = min(arr.size, upto - start)
      lat = now - arr[:k]
      self.latency.add(lat)
      worst = max(worst or 0.0, float(lat.max()))
      if k < arr.size:
        run.arrivals.appendleft((start + k, arr[k:]))
    t_s = run.t0_s + f1 / FPS
    new_s = seg["new_frames"] / FPS
    offset = seg["offset_ms"] if measurable else None
    if offset is None:
      self.time_unmeasurable += new_s
    elif self.tolerance.passes(offset):
      self.time_in += new_s
    else:
      self.time_out += new_s
    change = self.alarm.update(t_s, offset)
    rc = self.reader.counts()
    report = {
        "event": "report", "time": _now(), "source": self.source, "run": run.run,
        "t_s": round(t_s, 3), "run_t_s": round(f1 / FPS, 3),
        "window_s": [round(run.t0_s + f0 / FPS, 3), round(t_s, 3)],
        "measurable": measurable, "reason": reason,
        "offset_ms": seg["offset_ms"], "offset_frames": seg["offset_frames"],
        "uncertainty_ms": seg["uncertainty_ms"], "confidence": seg["confidence"],
        "track": seg["track"], "face_fraction": seg["face_fraction"],
        "speech_fraction": seg["speech_fraction"], "reliability": seg.get("reliability"),
        "speech_spread_db": seg["sound"]["speech_spread_db"],
        "level_db": seg["sound"]["level_dbfs"], "sound": seg["sound"]["character"],
        "tolerance": self.tolerance.name,
        "in_tolerance": None if offset is None else self.tolerance.passes(offset),
        "alarm_active": self.alarm.active, "alarm": change,
        "latency_s": None if worst is None else round(worst, 3),
        "analysed_share": round(share, 3),
        "uncertainty_factor": round(1 / math.sqrt(share), 2) if share > 0 else None,
        "landmarks_every": (self._landmarks_every if self._landmarks_every < NO_LANDMARKS
                            else None),
        "frames": self.counts["frames"], "frames_dropped": self.counts["frames_dropped"],
        "held_frames": rc["held_frames"], "audio_gaps": rc["audio_gaps"],
        "corrupt_packets": self.reader.corrupt_packets, "reconnects": self.reader.reconnects,
        "alarms": self.alarm.raised, "rss_mb": _rss_mb()}
    self._emit(report)
    if change:
      self._alarm_event(change, report)
    for b in [b for b in run.analysed if b < b0]:
      del run.analysed[b]

  def _alarm_event(self, change: str, r: dict) -> None:
    t = self.tolerance
    if change == "raised":
      text = (f"offset {r['offset_ms']:+.0f} ms outside {t.name} (-{t.early_ms:g}..+"
              f"{t.late_ms:g} ms) for {self.options.hold_s:g} s")
    else:
      text = f"offset {r['offset_ms']:+.0f} ms back within {t.name} for {self.options.hold_s:g} s"
    ev = {"event": f"alarm_{change}", "time": r["time"], "source": self.source,
          "t_s": r["t_s"], "offset_ms": r["offset_ms"], "confidence": r["confidence"],
          "tolerance": t.name, "text": text}
    self._emit(ev)
    if self.on_alarm:
      env = os.environ | {"MONITOR_EVENT": change, "MONITOR_SOURCE": self.source,
                          "MONITOR_OFFSET_MS": f"{r['offset_ms']:.1f}",
                          "MONITOR_CONFIDENCE": f"{r['confidence']:.4f}",
                          "MONITOR_TOLERANCE": t.name, "MONITOR_T_S": f"{r['t_s']:.1f}",
                          "MONITOR_TIME": r["time"], "MONITOR_TEXT": text}
      self._children.append(subprocess.Popen(self.on_alarm, shell=True, env=env))
    self._children = [p for p in self._children if p.poll() is None]

  def _event(self, e: media.LiveEvent) -> None:
    out = {"event": e.kind, "time": _now(), "source": self.source, "run": e.run}
    if e.reason:
      out["reason"] = e.reason
    if e.gap_s is not None:
      out["gap_s"] = e.gap_s
    self._emit(out)

  def _emit(self, d: dict) -> None:
    for sink in self.sinks:
      sink(d)

  # --- the loop --------------------------------------------------------------------------
  def stop(self) -> None:
    """Ends ``run()`` at the next chunk (safe from a signal handler or another thread)."""
    self._stop.set()
    self.reader.stop()

  def run(self) -> int:
    """Monitors until the source ends, ``stop()`` or an unrecoverable source; returns the
    exit code (module docstring) and emits a ``summary``."""
    self._emit({"event": "started", "time": _now(), "source": self.source,
                "options": dataclasses.asdict(self.options)})
    self._last_data = time.monotonic()
    threading.Thread(target=self._decode, name="decode", daemon=True).start()
    code = EXIT_STOPPED
    while not self._stop.is_set():
      try:
        item = self._queue.get(timeout=0.2)
      except queue.Empty:
        self._check_stall()
        continue
      if item is None:
        break
      if isinstance(item, FeatureError):
        self.error = item
        code = EXIT_SOURCE
        break
      if isinstance(item, media.LiveEvent):
        self._event(item)
        if item.kind == "ended":
          self.ended = item.reason
        self._reconnected = self._reconnected or item.kind == "reconnected"
        continue
      try:
        self._push(item)
      except FeatureError as e:      # a chunk the analysis refuses: counted, not fatal
        self.counts["chunks_refused"] += 1
        self._emit({"event": "skipped", "time": _now(), "source": self.source,
                    "reason": e.reason})
    self.stop()
    if self._run is not None:
      self._run.evidence.close()
    self._emit(self.summary())
    return code

  def _check_stall(self) -> None:
    """No data for ``every_s``: a report that says so (once per stall)."""
    quiet = time.monotonic() - self._last_data
    if quiet >= self.options.every_s and not self._stalled:
      self._stalled = True
      self._emit({"event": "no_signal", "time": _now(), "source": self.source,
                  "quiet_s": round(quiet, 1), "measurable": False, "reason": "no signal",
                  "alarm_active": self.alarm.active, "rss_mb": _rss_mb()})

  def summary(self) -> dict:
    """Time monitored, time in and out of tolerance, alarms, latency, what was dropped."""
    now = self._run.evidence.num_frames / FPS if self._run else 0.0
    stream_s = self._run.t0_s + now if self._run else 0.0
    received_s = self._received + now          # the rest of stream_s never came (gaps)
    frames = self.counts["frames"]
    rc = self.reader.counts()
    return {
        "event": "summary", "time": _now(), "source": self.source,
        "monitored_s": round(time.monotonic() - self.started, 1),
        "stream_s": round(stream_s, 1), "received_s": round(received_s, 1),
        "missed_s": round(stream_s - received_s, 1), "tolerance": self.tolerance.name,
        "in_tolerance_s": round(self.time_in, 1), "out_of_tolerance_s": round(self.time_out, 1),
        "unmeasurable_s": round(self.time_unmeasurable, 1),
        "alarms": self.alarm.raised, "alarm_active": self.alarm.active,
        "latency_p50_s": self.latency.quantile(0.5), "latency_p95_s": self.latency.quantile(0.95),
        "frames": frames, "frames_dropped": self.counts["frames_dropped"],
        "analysed_share": round(1 - self.counts["frames_dropped"] / frames, 4) if frames else None,
        "frames_sparse_landmarks": self.counts["frames_sparse"],
        "source_frames": rc["source_frames"], "held_frames": rc["held_frames"],
        "audio_gaps": rc["audio_gaps"], "corrupt_packets": self.reader.corrupt_packets,
        "reconnects": self.reader.reconnects, "discontinuities": self.reader.discontinuities,
        "replayed_packets_skipped": self.reader.replayed_packets,
        "ended": self.ended or None, "error": str(self.error) if self.error else None,
        "rss_mb": _rss_mb(), "peak_rss_mb": round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


MIN_GAP_S = 0.1          # a new run this far past the last one's end is a reported gap
# How much more source time than wall time may pass between two runs on one clock: after a
# reconnection an HLS reader joins the live edge again (a playlist's length); within a
# connection, only what the buffers hold.
CLOCK_SLACK_S, JUMP_SLACK_S = 30.0, 2.0


def _place_run(prev: _Run | None, ch: media.Chunk,
               reconnected: bool = False) -> tuple[float, float, str]:
  """Where a new run starts in stream time, the stream seconds missed before it, and what
  measured them. Stream time follows the source's timestamps: a run whose first picture
  continues the previous run's clock (at most ``CLOCK_SLACK_S`` after a reconnection, else
  ``JUMP_SLACK_S``, more source time than wall time went by) starts where that clock puts
  it, so a gap is the source time that never came. A clock that went back (a restarted
  sender) or jumped ahead of the wall clock (a splice) says nothing about the gap: the wall
  time between the two runs' pictures measures it."""
  if prev is None:
    return 0.0, 0.0, "source timestamps"
  end = prev.t0_s + prev.evidence.num_frames / FPS
  wall = 0.0
  if ch.arrival is not None and len(ch.arrival) and prev.last_arrival is not None:
    wall = max(0.0, float(ch.arrival[0]) - prev.last_arrival - 1 / FPS)
  if ch.origin is not None and prev.origin is not None:
    missed = ch.origin - (prev.origin + prev.evidence.num_frames / FPS)
    if -1.0 / FPS <= missed <= wall + (CLOCK_SLACK_S if reconnected else JUMP_SLACK_S):
      return end + max(0.0, missed), max(0.0, missed), "source timestamps"
  return end + wall, wall, "wall clock"


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def _rss_mb() -> float:
  """Resident memory now (MB), from /proc (0 where there is none)."""
  try:
    with open("/proc/self/statm") as f:
      return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, 1)
  except (OSError, ValueError, IndexError):
    return 0.0


def describe(d: dict) -> str | None:
  """One line for a person per report and event (None for what a person need not read)."""
  clock = d.get("time", "")[11:19]
  kind = d.get("event")
  if kind == "report":
    where = f"{clock} t={d['t_s']:.0f}s"
    tail = []
    if d.get("latency_s") is not None:
      tail.append(f"latency {d['latency_s']:.1f} s")
    if d["analysed_share"] < 1:
      wider = (f" (uncertainty x{d['uncertainty_factor']:.2f})" if d["uncertainty_factor"]
               and d["measurable"] else "")
      tail.append(f"pictures analysed {d['analysed_share']:.0%}{wider}")
    tail = "; " + "; ".join(tail) if tail else ""
    if not d["measurable"]:
      return f"{where} unmeasurable: {d['reason']}{tail}"
    ms = d["offset_ms"]
    side = "audio late" if ms > 0 else ("audio early" if ms < 0 else "in sync")
    unc = "" if d.get("uncertainty_ms") is None else f" +- {d['uncertainty_ms']:.0f}"
    verdict = "in" if d["in_tolerance"] else "OUT"
    alarm = " [ALARM]" if d["alarm_active"] else ""
    return (f"{where} offset {ms:+.0f} ms{unc} ({side}), confidence {d['confidence']:.2f}, "
            f"face #{d['track']}; {verdict} {d['tolerance']}{alarm}{tail}")
  if kind in ("alarm_raised", "alarm_cleared"):
    return f"{clock} {'ALARM' if kind == 'alarm_raised' else 'alarm cleared'}: {d['text']}"
  if kind == "started":
    return f"{clock} watching {d['source']} (model loaded)"
  if kind == "opened":
    return f"{clock} source opened: {d['source']}"
  if kind == "reconnected":
    return f"{clock} reconnected after a {d['gap_s']:.1f} s gap"
  if kind == "gap":
    return (f"{clock} gap: {d['missed_s']:.1f} s of stream never came (measured by the "
            f"{d['measured_by']}); t={d['t_s']:.0f}s")
  if kind in ("listening", "lost", "reconnecting", "ended", "discontinuity", "skipped"):
    return f"{clock} {kind}: {d.get('reason', '')}"
  if kind == "no_signal":
    return f"{clock} no signal for {d['quiet_s']:.0f} s"
  if kind == "summary":
    lat = ("" if d["latency_p95_s"] is None else
           f"; latency p50 {d['latency_p50_s']:.1f} s, p95 {d['latency_p95_s']:.1f} s")
    share = "" if d["analysed_share"] is None else f"; pictures analysed {d['analysed_share']:.1%}"
    err = f"; error: {d['error']}" if d["error"] else ""
    gaps = f", {d['missed_s']:.0f} s of it missed" if d.get("missed_s") else ""
    return (f"summary: monitored {d['monitored_s']:.0f} s ({d['stream_s']:.0f} s of stream"
            f"{gaps}); "
            f"{d['tolerance']}: in {d['in_tolerance_s']:.0f} s, out "
            f"{d['out_of_tolerance_s']:.0f} s, unmeasurable {d['unmeasurable_s']:.0f} s; "
            f"alarms {d['alarms']}; reconnects {d['reconnects']}; corrupt packets "
            f"{d['corrupt_packets']}{share}{lat}{err}")
  return None


def _line_sink(stream: TextIO) -> Callable[[dict], None]:
  def sink(d: dict) -> None:
    line = describe(d)
    if line:
      print(line, file=stream, flush=True)
  return sink


def _jsonl_sink(stream: TextIO) -> Callable[[dict], None]:
  def sink(d: dict) -> None:
    stream.write(json.dumps(d) + "\n")
    stream.flush()
  return sink


def build_parser():
  """The command line (``--help`` shows the module docstring, exit codes included)."""
  p = cli.parser(__name__, __doc__, verbose=True)
  d = MonitorOptions()
  p.add_argument("source", help="udp://, rtp://, SDP file, rtsp://, rtmp://, tcp://, HLS URL, "
                 "capture device, a growing file, or - (MPEG-TS on stdin)")
  analysis.add_flags(p.add_argument_group("the analysis (as detect's)"),
                             window_s=d.analysis.window_s)
  p.add_argument("--every", type=float, default=d.every_s, help="seconds between reports")
  p.add_argument("--tolerance", default=d.tolerance, choices=sorted(tolerances.KEYS),
                 help="the tolerance alarms are raised against")
  p.add_argument("--hold", type=float, default=d.hold_s,
                 help="seconds out of tolerance before an alarm (and back in before it clears)")
  p.add_argument("--on_alarm", default=None, metavar="CMD",
                 help="shell command run when an alarm is raised or cleared; MONITOR_EVENT, "
                 "MONITOR_OFFSET_MS, MONITOR_CONFIDENCE, MONITOR_TOLERANCE, MONITOR_SOURCE, "
                 "MONITOR_T_S, MONITOR_TIME, MONITOR_TEXT in its environment")
  p.add_argument("--jsonl", default=None, metavar="FILE",
                 help="append one JSON object per report and event to FILE (- for stdout; the "
                 "lines for a person then go to stderr)")
  p.add_argument("--metrics_port", type=int, default=None,
                 help="serve Prometheus metrics on this port (/metrics)")
  p.add_argument("--checkpoint", default=None, help="the model (default: the shipped one)")
  p.add_argument("--format", default=None,
                 help="input format when FFmpeg cannot guess it (v4l2, mpegts, ...)")
  p.add_argument("--stall", type=float, default=d.stall_s,
                 help="seconds without data after which a network source is reopened")
  p.add_argument("--listen", action="store_true",
                 help="be the server at SOURCE (rtmp://, rtsp:// or tcp://HOST:PORT) and take "
                 "the stream an encoder publishes to it; listen again when it leaves")
  p.add_argument("--give_up", type=float, default=None,
                 help="stop reopening a lost source after this many seconds (exit 1); "
                 "default: never")
  return p


def main(argv: list[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    options = MonitorOptions(analysis=analysis.options_from_flags(args), every_s=args.every,
                             tolerance=args.tolerance, hold_s=args.hold, stall_s=args.stall,
                             give_up_s=args.give_up, format=args.format, listen=args.listen)
    options.check()
    if args.listen and not args.source.startswith(media.LISTEN_SCHEMES):
      raise ValueError(f"--listen needs an rtmp://, rtsp:// or tcp:// source, not "
                       f"{args.source}")
  except ValueError as e:
    parser.error(str(e))          # exit code 2
  person = sys.stderr if args.jsonl == "-" else sys.stdout
  sinks = [_line_sink(person)]
  jsonl = None
  if args.jsonl:
    jsonl = sys.stdout if args.jsonl == "-" else open(args.jsonl, "a")
    sinks.append(_jsonl_sink(jsonl))
  mon = Monitor(args.source, options, checkpoint=args.checkpoint, sinks=sinks,
                on_alarm=args.on_alarm)
  metrics = None
  if args.metrics_port is not None:
    metrics = Metrics(args.metrics_port, args.source)
    mon.sinks.append(metrics.update)
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda *_: mon.stop())
  try:
    code = mon.run()
  finally:
    if metrics is not None:
      metrics.close()
    if jsonl is not None and jsonl is not sys.stdout:
      jsonl.close()
  return code


if __name__ == "__main__":
  sys.exit(main())
