"""Broadcast lip-sync tolerances, on this project's sign convention.

The standards say how far the sound may **lead** (arrive early, before the picture) and
**lag** (arrive late). This project's offsets are **positive when the audio is late**: the
sound of frame ``t`` is heard with frame ``t + k``. So a standard that allows ``early_ms`` of
lead and ``late_ms`` of lag passes an offset ``d`` (ms) when ``-early_ms <= d <= late_ms``.

* EBU R37 (2007): audio at most 40 ms early and 60 ms late, end to end.
* ITU-R BT.1359-1 (1998): detectability threshold 45 ms early / 125 ms late; acceptability
  threshold 90 ms early / 185 ms late.
* ATSC IS-191 (2003): audio at most 15 ms early and 45 ms late at the encoder input.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Tolerance:
  """How early (lead) and late (lag) the audio may be, in ms (both positive numbers)."""
  name: str
  early_ms: float
  late_ms: float

  def passes(self, offset_ms: float) -> bool:
    """``offset_ms`` on the project's sign (positive = audio late) within the window?"""
    return -self.early_ms <= offset_ms <= self.late_ms

  def to_dict(self) -> dict:
    return {"early_ms": self.early_ms, "late_ms": self.late_ms}


STANDARDS: dict[str, Tolerance] = {t.name: t for t in (
    Tolerance("EBU R37", 40.0, 60.0),
    Tolerance("ITU-R BT.1359 detectability", 45.0, 125.0),
    Tolerance("ITU-R BT.1359 acceptability", 90.0, 185.0),
    Tolerance("ATSC IS-191", 15.0, 45.0),
)}


# Short names for command lines (``python -m modeformer_jax.monitor --tolerance ebu_r37``).
KEYS = {"ebu_r37": "EBU R37", "itu_detectability": "ITU-R BT.1359 detectability",
        "itu_acceptability": "ITU-R BT.1359 acceptability", "atsc_is191": "ATSC IS-191"}


def verdicts(offset_ms: float | None, names: Iterable[str] = STANDARDS) -> dict[str, str]:
  """``{standard: 'pass' | 'fail' | 'unknown'}`` for one offset (None: not measurable)."""
  return {n: "unknown" if offset_ms is None else
          ("pass" if STANDARDS[n].passes(offset_ms) else "fail") for n in names}


# A file fails a tolerance only when its measured offset stays outside it this long (s).
# The standards state the offsets viewers accept, not how long an excursion must last to
# count: EBU R37 gives "the end-to-end timing" as a tolerance on the programme, ITU-R
# BT.1359 derives its thresholds from viewers' detection of steady offsets, and ATSC IS-191
# from "the relative timing of sound and vision". A single analysis window (5 s) wrong for
# an instant is a measurement excursion, not a steady offset; 10 s (two windows) of
# consecutive out-of-tolerance measurements is. Files with less measured time than this
# fail when most of what was measured is out.
MIN_FAIL_S = 10.0


def file_verdicts(segments: Iterable[dict], hop_s: float = 1.0, min_fail_s: float = MIN_FAIL_S,
                  names: Iterable[str] = STANDARDS) -> dict[str, dict]:
  """Per standard, from a file's measurable segments (``start_s``, ``offset_ms``, in time
  order; every ``hop_s``): each stands for ``hop_s`` of time around its centre, so the
  measured time splits into time in and out of tolerance. The verdict is ``fail`` when the
  offset is out for ``min_fail_s`` of measured time in a row (no measurement in tolerance
  between; unmeasured seconds neither count nor interrupt) or, with less than
  ``min_fail_s`` measured, for at least half of it; ``pass`` when something was measured
  and it does not fail; ``unknown`` when nothing was measurable."""
  segs = sorted((s for s in segments if s.get("offset_ms") is not None),
                key=lambda s: s["start_s"])
  measured = len(segs) * hop_s
  out = {}
  for n in names:
    t = STANDARDS[n]
    ok = [t.passes(s["offset_ms"]) for s in segs]
    bad = len(ok) - sum(ok)
    # A run of out-of-tolerance time ends at an in-tolerance measurement only: seconds that
    # could not be measured (silence, no face, uncertain) say nothing either way.
    longest, run = 0.0, 0.0
    for good in ok:
      run = 0.0 if good else run + hop_s
      longest = max(longest, run)
    if not segs:
      verdict = "unknown"
    elif longest >= min_fail_s - 1e-9 or (measured < min_fail_s and 2 * bad >= len(ok)):
      verdict = "fail"
    else:
      verdict = "pass"
    out[n] = t.to_dict() | {
        "segments_pass": sum(ok), "segments_fail": bad, "measured_s": round(measured, 3),
        "in_tolerance_s": round(sum(ok) * hop_s, 3), "out_of_tolerance_s": round(bad * hop_s, 3),
        "fraction_in": round(sum(ok) / len(ok), 4) if ok else None,
        "longest_out_s": round(longest, 3), "min_fail_s": min_fail_s, "verdict": verdict}
  return out
