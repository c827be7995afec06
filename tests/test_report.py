"""HTML sync-QC reports: self-contained, escaped, parseable SVG, and they render in Chromium."""
import base64
import io
import pathlib
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from modeformer_jax.qc.report import write_file_report, write_index

# (early_ms, late_ms) per standard; positive offset = audio late.
_STANDARDS = {"EBU R37": (40, 60), "ITU-R BT.1359 detectability": (45, 125),
              "ITU-R BT.1359 acceptability": (90, 185), "ATSC IS-191": (15, 45)}
_FRAME_MS = 1000 / 29.97


def _thumbnail() -> str:
  """A small face-coloured PNG as base64."""
  pil = pytest.importorskip("PIL.Image")
  buf = io.BytesIO()
  pil.new("RGB", (24, 24), (210, 160, 130)).save(buf, format="PNG")
  return base64.b64encode(buf.getvalue()).decode("ascii")


def _verdicts(offset):
  if offset is None:
    return {k: "unknown" for k in _STANDARDS}
  return {k: "pass" if -e <= offset <= l else "fail" for k, (e, l) in _STANDARDS.items()}


def _segment(start, reason, offset, track):
  return {"start_s": start, "end_s": start + 5.0, "measurable": reason is None, "reason": reason,
          "offset_ms": offset, "uncertainty_ms": None if reason else 4.0 + start % 4,
          "offset_frames": None if reason else round(offset / _FRAME_MS),
          "confidence": 0.05 if reason else 0.3, "track": track,
          "speech_fraction": 0.1 if reason else 0.8,
          "face_fraction": 0.0 if reason == "no face" else 1.0, "verdicts": _verdicts(offset)}


def realistic_result(name="talk.mp4") -> dict:
  """30 five-second segments at 2 s hop (5 unmeasurable), two tracks, one shot change.

  Offsets sit near +23 ms with a slow drift; segment 14 jumps to ~54 ms, inside EBU R37 but
  outside ATSC IS-191, so the file passes the first and fails the last.
  """
  reasons = {6: "no speech", 7: "no speech", 8: "no speech", 20: "no face", 25: "low confidence"}
  segs = []
  for i in range(30):
    start, reason = 2.0 * i, reasons.get(i)
    off = 20.0 + 0.05 * start + (3.0 if i % 3 else -2.0) + (30.0 if i == 14 else 0.0)
    segs.append(_segment(start, reason, None if reason else off,
                         None if reason else int(start >= 30)))
  meas = [s for s in segs if s["measurable"]]
  tol = {}
  for k, (e, l) in _STANDARDS.items():
    n_pass = sum(s["verdicts"][k] == "pass" for s in meas)
    tol[k] = {"early_ms": e, "late_ms": l, "verdict": "pass" if n_pass == len(meas) else "fail",
              "segments_pass": n_pass, "segments_fail": len(meas) - n_pass}
  track = {"start_s": 0.0, "end_s": 33.0, "num_frames": 989, "segments_won": 12}
  return {
      "name": name, "path": f"/abs/{name}", "duration_s": 63.0, "source_fps": 29.97,
      "resolution": [1280, 720], "model": "modeformer_jax/weights/faces_v1",
      "options": {"window_s": 5.0, "hop_s": 2.0},
      "global": {"offset_ms": 23.5, "uncertainty_ms": 3.1, "offset_frames": 1, "confidence": 0.21,
                 "measurable_segments": len(meas), "num_segments": len(segs), "track": 0},
      "drift": {"ms_per_min": 1.8, "ci_ms_per_min": [1.2, 2.4], "intercept_ms": 20.1,
                "verdict": "drifting", "text": "audio gets later by 1.8 ms per minute"},
      "tolerances": tol, "segments": segs,
      "tracks": [dict(track, id=0, offset_ms=22.5, confidence=0.3, thumbnail=_thumbnail()),
                 dict(track, id=1, start_s=30.0, end_s=63.0, offset_ms=24.9, confidence=0.28,
                      thumbnail=None)],
      "shots": [31.4],
      "timing": {"wall_s": 30.1, "realtime_factor": 10.4, "peak_rss_mb": 812.0},
  }


def degenerate_result() -> dict:
  """Nothing measurable: offset None, every verdict unknown, no tracks, no drift fit."""
  unknown = {k: {"early_ms": e, "late_ms": l, "verdict": "unknown"}
             for k, (e, l) in _STANDARDS.items()}
  return {"name": "silent.mov", "path": "/abs/silent.mov", "duration_s": 8.0, "source_fps": None,
          "global": {"offset_ms": None, "uncertainty_ms": None, "measurable_segments": 0,
                     "num_segments": 4},
          "drift": {"ms_per_min": None, "intercept_ms": None, "verdict": "unknown", "text": None},
          "tolerances": unknown, "segments": [_segment(float(i), "no face", None, None)
                                              for i in range(4)],
          "tracks": [], "shots": None}


def _assert_self_contained(text: str):
  for bad in ("http://", "https://", "<link", 'src="http', "<script src", "@import", "url(http"):
    assert bad not in text, bad


def _svgs(text: str) -> list:
  return [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", text, flags=re.S)]


def test_file_report_contents(tmp_path):
  path = write_file_report(realistic_result(), tmp_path / "sub" / "talk.html")
  assert isinstance(path, pathlib.Path) and path.exists()
  text = path.read_text(encoding="utf-8")
  _assert_self_contained(text)
  for needle in ("talk.mp4", "+23.5 ms \u00b1 3.1 (audio late)", "drifting",
                 "audio gets later by 1.8 ms per minute", "EBU R37: pass", "ATSC IS-191: fail",
                 "ITU-R BT.1359 acceptability", "faces_v1", "window_s=5.0", "812 MB",
                 "no speech", "low confidence", "data:image/png;base64,", "track 1"):
    assert needle in text, needle
  (svg,) = _svgs(text)
  points = [c for c in svg.iter("circle") if c.get("r") != "4"]  # r=4: legend swatches
  assert len(points) == 25
  titles = " ".join(t.text or "" for t in svg.iter("title"))
  assert "no speech: 0:12\u20130:21 (3 segments)" in titles  # overlapping gaps merged
  assert "shot change at 0:31" in titles and "EBU R37" in titles
  assert text.count("<tr class=na>") == 5


def test_audio_early_sign(tmp_path):
  res = realistic_result()
  res["global"].update(offset_ms=-42.0, uncertainty_ms=1.5)
  text = write_file_report(res, tmp_path / "early.html").read_text(encoding="utf-8")
  assert "\u221242.0 ms \u00b1 1.5 (audio early)" in text


def test_degenerate_report(tmp_path):
  text = write_file_report(degenerate_result(), tmp_path / "s.html").read_text(encoding="utf-8")
  _assert_self_contained(text)
  assert "not measurable" in text and "no measurable segment" in text
  assert "EBU R37: unknown" in text and "badge fail" not in text and "badge pass" not in text
  (svg,) = _svgs(text)
  assert not [c for c in svg.iter("circle") if c.get("r") != "4"]


def test_conflicting_evidence_says_why(tmp_path):
  res = realistic_result()
  res["global"].update(offset_ms=None, offset_frames=None, uncertainty_ms=None,
                       reason="conflicting evidence",
                       why="the measurable segments read +2 (3 of 6), -5 (3 of 6) frames")
  text = write_file_report(res, tmp_path / "c.html").read_text(encoding="utf-8")
  assert ("no global offset: conflicting evidence (the measurable segments read +2 (3 of 6),"
          " -5 (3 of 6) frames)") in text


def test_error_entry_page(tmp_path):
  err = {"name": "bad.mp4", "path": "/abs/bad.mp4", "error": "no audio stream", "kind": "no_audio"}
  text = write_file_report(err, tmp_path / "bad.html").read_text(encoding="utf-8")
  assert "no audio stream" in text and "no_audio" in text


def test_escaping(tmp_path):
  res = realistic_result(name='<b>&"x"</b>.mp4')
  res["segments"][6]["reason"] = "<script>alert(1)</script>"
  text = write_file_report(res, tmp_path / "x.html").read_text(encoding="utf-8")
  assert "<b>&" not in text and "&lt;b&gt;&amp;&quot;x&quot;&lt;/b&gt;.mp4" in text
  assert "<script>alert" not in text
  _svgs(text)  # escaped tooltips keep the SVG well formed


def test_y_range_holds_outliers(tmp_path):
  res = realistic_result()
  res["segments"][3]["offset_ms"] = -420.0
  (svg,) = _svgs(write_file_report(res, tmp_path / "o.html").read_text(encoding="utf-8"))
  labels = [t.text for t in svg.iter("text") if t.text and re.fullmatch(r"[+\u2212]?\d+", t.text)]
  values = [int(v.replace("\u2212", "-")) for v in labels]
  assert min(values) <= -420 and max(values) >= 420 and 0 in values
  assert min(values) == -max(values)  # symmetric about zero


def test_index(tmp_path):
  bad = {"name": "broken<1>.mp4", "path": "/abs/broken.mp4", "error": "moov atom not found",
         "kind": "corrupt"}
  results = [realistic_result(), degenerate_result(), bad]
  path = write_index(results, tmp_path / "index.html", links={"talk.mp4": "talk.html"})
  text = path.read_text(encoding="utf-8")
  _assert_self_contained(text)
  assert '<a href="talk.html">talk.mp4</a>' in text and "silent.mov" in text
  assert "Failed files" in text and "moov atom not found" in text and "corrupt" in text
  assert "broken&lt;1&gt;.mp4" in text
  assert "+23.5 \u00b1 3.1" in text and "+1.8" in text and "25 / 30" in text
  assert re.search(r"<b>2</b> files analysed, <b class=err>1</b> error\b", text)


def _chromium() -> str:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    if shutil.which(name):
      return shutil.which(name)
  pytest.skip("no Chromium on this machine")


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", *args],
                        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("which", ["file", "index"])
@pytest.mark.browser
def test_screenshot(tmp_path, which):
  browser = _chromium()
  cv2 = pytest.importorskip("cv2")
  if which == "file":
    page = write_file_report(realistic_result(), tmp_path / "talk.html")
  else:
    page = write_index([realistic_result(), degenerate_result(),
                        {"name": "b.mp4", "error": "no audio stream", "kind": "no_audio"}],
                       tmp_path / "i.html")
  png = tmp_path / "shot.png"
  _headless(browser, "--hide-scrollbars", f"--screenshot={png}", "--window-size=1200,1600",
            page.resolve().as_uri())
  img = cv2.imread(str(png))
  assert img is not None and img.shape[:2] == (1600, 1200)
  assert float(img.astype(np.float32).var()) > 100.0
  b, g, r = (img[..., i].astype(int) for i in range(3))
  green = (g > 100) & (g > r + 40) & (g > b + 40)  # pass badges
  red = (r > 150) & (r > g + 80) & (r > b + 80)  # fail badges
  assert green.sum() > 200 and red.sum() > 100


@pytest.mark.browser
def test_sorter_runs_without_errors(tmp_path):
  """--dump-dom runs the page's script; a click on the offset header must sort the rows."""
  browser = _chromium()
  page = write_file_report(realistic_result(), tmp_path / "talk.html")
  # A script appended after the sorter clicks the header and leaves a marker: a broken sorter
  # throws before the marker is set.
  text = page.read_text(encoding="utf-8").replace(
      "</body>", "<script>document.querySelectorAll('table.sortable th')[2].click();"
                 "document.body.dataset.ok='yes';</script></body>")
  page.write_text(text, encoding="utf-8")
  out = _headless(browser, "--dump-dom", page.resolve().as_uri()).stdout
  assert 'data-ok="yes"' in out and 'data-dir="asc"' in out
  cells = re.findall(r'<td class="n" data-v="(-?[\d.]+)">[+\u2212][\d.]+ \u00b1', out)
  offsets = [float(v) for v in cells]
  assert len(offsets) == 25 and offsets == sorted(offsets)
