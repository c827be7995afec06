"""Live monitoring of a 720p25 stream on this machine: latency, share analysed, CPU, RSS.

  python -m bench.monitor --minutes 10 --out bench/monitor.json     # the recorded run
  python -m bench.monitor --minutes 1                               # a quick check
  python -m bench.monitor --minutes 2 --protocol hls                # a live HLS playlist
  python -m bench.monitor --minutes 1 --protocol udp sdp tcp rtmp rtsp hls   # one after another

A 1-minute 1280x720 talking-head video (``data_prep.synthetic.long.make_benchmark_video``,
offsets changing every 15 s) is played in a loop as MPEG-TS over UDP in real time
(``data_prep.synthetic.live``); ``python -m modeformer_jax.monitor`` watches it in its own
process with the defaults (10-s window, a report every 2 s). Measured: latency from a
frame's arrival to the first report that includes it (p50 / p95, the monitor's summary),
the share of frames whose pictures were analysed, the monitor's CPU use (% of one core;
200% = both cores), its resident memory at the start (after the first minute) and the
end, and the error of the reports whose window lies inside one 15-s piece against the
offset injected there. The goal: keep up with 720p25 on 2 cores with p95 latency <=
window + 3 s.

``--protocol hls`` writes the stream as a live HLS playlist (2-s segments, 6 listed) served
by Python's http.server, and the monitor reads it over HTTP. The monitor's latency runs from
a frame's arrival, so it does not see what HLS adds before that (a segment is listed once
complete, and FFmpeg joins 3 segments behind live); ``behind_sender_s`` does: the sender's
seconds sent minus the monitor's stream seconds when the run stops. ``rtp``: MPEG-TS in RTP,
the monitor given the ``rtp://`` URL (FFmpeg then starts at the next keyframe: the error
column assumes the stream starts at the file's start, so it is not comparable); ``sdp``:
the same stream described by an SDP file the monitor opens; ``tcp``, ``rtmp``, ``rtsp``:
the monitor listens (``--listen``) and the sender publishes
(MPEG-TS over TCP, RTMP publish, RTSP ANNOUNCE / RECORD over TCP).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from bench import common

from modeformer_jax import cli

PROTOCOLS = ("udp", "rtp", "sdp", "tcp", "rtmp", "rtsp", "hls")
# Protocols where the monitor is the server (--listen) and the sender connects to it.
LISTEN_URLS = {"tcp": "tcp://127.0.0.1:{port}", "rtmp": "rtmp://127.0.0.1:{port}/live/bench",
               "rtsp": "rtsp://127.0.0.1:{port}/live"}


def _proc(pid: int) -> tuple[float, float]:
  """(CPU seconds, RSS MB) of a process, from /proc."""
  with open(f"/proc/{pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
  cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
  with open(f"/proc/{pid}/statm") as f:
    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
  return cpu, rss


def _events(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def errors(reports: list[dict], truth: dict, loop_s: float, window: float) -> list[float]:
  """Measured minus injected offset (ms) of the measurable reports whose window lies inside
  one piece of the looped material (stream time ``t`` shows the file at ``t % loop_s``)."""
  from data_prep.synthetic import long as long_mat
  out = []
  for r in reports:
    t1 = r["t_s"] % loop_s
    t0 = t1 - window
    if not r["measurable"] or t0 < 0 or t1 > truth["duration_s"]:
      continue
    lo, hi = (long_mat.truth_offset_ms(truth, t) for t in (t0 + 0.01, t1 - 0.01))
    if lo == hi and lo[1] == "speech":
      out.append(r["offset_ms"] - lo[0])
  return out


def run(minutes: float, size: tuple[int, int], work: pathlib.Path, port: int,
        window: float = 10.0, every: float = 2.0, protocol: str = "udp") -> dict:
  """Streams for ``minutes`` and measures the monitor (module docstring)."""
  from data_prep.synthetic import long as long_mat
  work.mkdir(parents=True, exist_ok=True)
  material = work / f"bench_{size[0]}x{size[1]}_1min.mp4"
  if not material.exists():
    long_mat.make_benchmark_video(material, minutes=1.0, size=size, progress=False)
  jsonl = work / "monitor.jsonl"
  jsonl.unlink(missing_ok=True)
  sender = server = None
  if protocol == "hls":
    www = work / "hls"
    shutil.rmtree(www, ignore_errors=True)
    www.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(www)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sender = subprocess.Popen([sys.executable, "-m", "data_prep.synthetic.live",
                               str(material), str(www / "live.m3u8"), "--loop"])
    t_send = time.monotonic()
    while not (www / "live.m3u8").exists():
      time.sleep(0.2)
    url = f"http://127.0.0.1:{port}/live.m3u8"
  elif protocol in LISTEN_URLS:
    url = LISTEN_URLS[protocol].format(port=port)
  else:
    url = f"{'rtp' if protocol == 'sdp' else protocol}://127.0.0.1:{port}"
  source = url
  if protocol == "sdp":
    from data_prep.synthetic.live import write_sdp
    source = str(work / "stream.sdp")
    write_sdp(source, url)
  listen = ["--listen"] if protocol in LISTEN_URLS else []
  mon = subprocess.Popen([sys.executable, "-m", "modeformer_jax.monitor", source, "--jsonl",
                          str(jsonl), "--window", str(window), "--every", str(every),
                          "--stall", "30", *listen], stdout=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 300
    ready = "listening" if listen else "started"
    while not any(e["event"] == ready for e in _events(jsonl)):
      if mon.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError("the monitor did not start")
      time.sleep(0.5)
    if listen:
      time.sleep(1.0)                # the event comes just before FFmpeg listens
    if sender is None:
      sender = subprocess.Popen([sys.executable, "-m", "data_prep.synthetic.live",
                                 str(material), url, "--loop"])
      t_send = time.monotonic()
    t0 = time.monotonic()
    samples = []
    while time.monotonic() - t0 < minutes * 60:
      time.sleep(5)
      cpu, rss = _proc(mon.pid)
      samples.append({"t_s": round(time.monotonic() - t0, 1), "cpu_s": cpu, "rss_mb": rss})
    sender_cpu, _ = _proc(sender.pid)
    sent_s = time.monotonic() - t_send
  finally:
    if sender is not None:
      sender.terminate()
      sender.wait()
    mon.send_signal(signal.SIGTERM)
    code = mon.wait(timeout=120)
    if server is not None:
      server.terminate()
      server.wait()
  from data_prep.synthetic import live
  truth = json.loads(material.with_suffix(".truth.json").read_text())
  events = _events(jsonl)
  summary = next(e for e in events if e["event"] == "summary")
  reports = [e for e in events if e["event"] == "report"]
  err = np.abs(errors(reports, truth, live.loop_s(str(material)), window))
  # The start (after the first minute, or half of a shorter run) to the end.
  first = next(s for s in samples if s["t_s"] >= min(60.0, minutes * 30))
  last = samples[-1]
  cpu_pct = 100 * (last["cpu_s"] - first["cpu_s"]) / max(1e-9, last["t_s"] - first["t_s"])
  return {
      "machine": common.machine(), "protocol": protocol, "minutes": minutes,
      "size": list(size), "behind_sender_s": round(sent_s - summary["stream_s"], 1),
      "window_s": window, "every_s": every, "exit_code": code,
      "latency_p50_s": summary["latency_p50_s"], "latency_p95_s": summary["latency_p95_s"],
      "goal_p95_s": window + 3, "analysed_share": summary["analysed_share"],
      "frames": summary["frames"], "frames_dropped": summary["frames_dropped"],
      "frames_sparse_landmarks": summary["frames_sparse_landmarks"],
      "measurable_reports": sum(r["measurable"] for r in reports), "reports": len(reports),
      "scored_reports": int(err.size),
      "median_abs_error_ms": round(float(np.median(err)), 1) if err.size else None,
      "within_20ms": round(float(np.mean(err <= 20)), 3) if err.size else None,
      "alarms": summary["alarms"],
      "stream_s": summary["stream_s"], "corrupt_packets": summary["corrupt_packets"],
      "held_frames": summary["held_frames"], "audio_gaps": summary["audio_gaps"],
      "cpu_percent_of_one_core": round(cpu_pct, 1),
      "sender_cpu_s": round(sender_cpu, 1),
      "rss_mb_start": round(first["rss_mb"], 1), "rss_mb_end": round(last["rss_mb"], 1),
      "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
      "peak_rss_mb": summary["peak_rss_mb"], "samples": samples}


def main(argv: list[str] | None = None) -> dict:
  p = cli.parser(__name__, __doc__)
  p.add_argument("--minutes", type=float, default=10.0)
  p.add_argument("--size", default="1280x720")
  p.add_argument("--work", default="/tmp/bench_monitor")
  p.add_argument("--port", type=int, default=5640)
  p.add_argument("--protocol", choices=PROTOCOLS, nargs="+", default=["udp"],
                 help="one or more, run one after another (module docstring)")
  p.add_argument("--out", default=None, help="write the result as JSON here")
  args = p.parse_args(argv)
  w, h = (int(v) for v in args.size.split("x"))
  outs = []
  for i, protocol in enumerate(args.protocol):
    outs.append(run(args.minutes, (w, h), pathlib.Path(args.work), args.port + i,
                    protocol=protocol))
    print(json.dumps({k: v for k, v in outs[-1].items() if k != "samples"}, indent=1),
          flush=True)
  if len(outs) > 1:
    print(f"\n{'protocol':9} {'behind sender s':>15} {'latency p50 s':>13} {'p95 s':>6} "
          f"{'analysed':>8} {'median err ms':>13}")
    for o in outs:
      print(f"{o['protocol']:9} {o['behind_sender_s']:>15} {o['latency_p50_s']:>13} "
            f"{o['latency_p95_s']:>6} {o['analysed_share']:>8} {o['median_abs_error_ms']!s:>13}")
  out = outs[0] if len(outs) == 1 else {"runs": outs}
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  return out


if __name__ == "__main__":
  main()
