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


def verdicts(offset_ms: float | None, names: Iterable[str] = STANDARDS) -> dict[str, str]:
  """``{standard: 'pass' | 'fail' | 'unknown'}`` for one offset (None: not measurable)."""
  return {n: "unknown" if offset_ms is None else
          ("pass" if STANDARDS[n].passes(offset_ms) else "fail") for n in names}


def file_verdicts(segment_offsets_ms: Iterable[float | None],
                  names: Iterable[str] = STANDARDS) -> dict[str, dict]:
  """Per standard: counts of measurable segments that pass and fail, and the file's
  verdict: ``fail`` if any measurable segment fails, ``pass`` if at least one was measured
  and all pass, ``unknown`` when nothing was measurable."""
  offs = [o for o in segment_offsets_ms if o is not None]
  out = {}
  for n in names:
    t = STANDARDS[n]
    ok = sum(t.passes(o) for o in offs)
    bad = len(offs) - ok
    out[n] = t.to_dict() | {"segments_pass": ok, "segments_fail": bad,
                            "verdict": "unknown" if not offs else ("fail" if bad else "pass")}
  return out
