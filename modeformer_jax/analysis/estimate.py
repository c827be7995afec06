"""Estimators: a segment's offset from its blocks (``estimate_segment``: the whole-frame vote,
the sub-frame parabola, the jackknife), the file's one offset (``file_offset``, plain
``detect``'s answer and ``--qc``'s global offset), drift, and calibrated reliability."""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING
import math

import numpy as np

from modeformer_jax.analysis.options import AnalysisOptions
from modeformer_jax.evaluation import protocol
from modeformer_jax.model import windows

if TYPE_CHECKING:   # annotations only: evidence imports this module
  from modeformer_jax.analysis import evidence
  from modeformer_jax.analysis.lane import Lane

MEL_MS = windows.MEL_MS
FRAME_MS = windows.FRAME_MS


PHASE_MS = np.array([12.5 * (windows.mel_start(p) - 3.2 * p) for p in range(5)])


RELIABILITY_FILE = "reliability.json"


# What predicts a segment's error (bench.qc_calibration): the margin of its similarity peak
# and the share of positions voting for it. Speech and face fractions added nothing out of
# sample (their leave-one-clip-out fit was worse calibrated).
RELIABILITY_FEATURES = ("confidence", "vote_fraction")


def reliability(model: dict | None, est: dict, speech_fraction: float) -> float | None:
  """``sigmoid(bias + sum(w_f * f))`` over ``RELIABILITY_FEATURES`` of a segment estimate,
  with ``model`` = ``{"bias": b, "weights": {feature: w}}`` (None: no calibration)."""
  if not model:
    return None
  x = dict(est, speech_fraction=speech_fraction)
  z = model["bias"] + sum(w * float(x[f]) for f, w in model["weights"].items())
  return round(float(1.0 / (1.0 + math.exp(-z))), 4)


def file_offset(ev: evidence.Evidence, lane: Lane, segs: list[dict]) -> dict:
  """The file's one offset: plain ``detect``'s answer and ``--qc``'s global offset.

  The measurable segments vote with their whole frames (``protocol.vote``, pooled: the rule
  each segment's own positions vote by). The winner must hold a strict majority of them
  within one frame, else the evidence conflicts and the file gets no offset (reason
  "conflicting evidence", ``why`` tallies the readings). The ms is then fitted on the
  agreeing segments' blocks pooled (each read on the face that speaks in the segment
  centred nearest it), its whole frame within one of the vote. With no measurable segment the blocks of the "uncertain"
  ones are pooled and the answer keeps reason "uncertain"."""
  good = [s for s in segs if s["measurable"]]
  empty = {"offset_ms": None, "uncertainty_ms": None, "offset_frames": None,
           "confidence": None, "track": None, "vote_fraction": None, "vote_frames": None}
  maxk = (ev.whole_idx.shape[1] - 1) // 2
  around = None
  if good:
    hist, key = np.zeros(2 * maxk + 1), np.zeros(2 * maxk + 1)
    for s in good:
      hist[s["offset_frames"] + maxk] += 1
      key[s["offset_frames"] + maxk] += s["confidence"]
    around = protocol.vote(hist, key, pool=True) - maxk
    pooled = [s for s in good if abs(s["offset_frames"] - around) <= 1]
    if 2 * len(pooled) <= len(good):
      # No reading holds most of what was measured: any one offset would be a guess.
      read = collections.Counter(s["offset_frames"] for s in good)
      tally = ", ".join(f"{k:+d} ({n} of {len(good)})" for k, n in read.most_common())
      return empty | {"reason": "conflicting evidence",
                      "why": f"the measurable segments read {tally} frames"}
  else:
    pooled = [s for s in segs if s["reason"] == "uncertain"]
  if not pooled:
    reasons = [s["reason"] for s in segs]
    return empty | {"reason": max(set(reasons), key=reasons.count) if reasons else "no face"}
  owner: dict[int, tuple[float, int]] = {}
  for s in pooled:
    b0, b1 = s["blocks"]
    centre = (b0 + b1 - 1) / 2
    for b in range(b0, b1):
      d = abs(b - centre)
      if b not in owner or d < owner[b][0]:
        owner[b] = (d, s["track"])
  parts = [lane.blocks.data[(tr, b)] for b, (_, tr) in sorted(owner.items())
           if (tr, b) in lane.blocks.data]
  est = estimate_segment(parts, ev.whole_idx, ev.max_s, ev.options.fit_ms, curves=True, around=around)
  if est is None:
    return empty | {"reason": "no face"}
  tracks = [tr for _, tr in owner.values()]
  est["track"] = max(set(tracks), key=tracks.count)
  est["reason"] = None if good else "uncertain"
  if not good:
    est["why"] = (f"the best match is at the edge of the +-{maxk} frame search"
                  if est["at_search_edge"] else
                  f"no {ev.options.window_s:g} s stretch was measured reliably")
  est["num_positions"] = int(sum(p["n"][0] for p in parts))
  return est


def fine_grid(sums: np.ndarray, counts: np.ndarray, max_s: int) -> tuple[np.ndarray, np.ndarray]:
  """The phase-resolved similarity curve on its 2.5 ms grid: ``(ms [n], mean [n])`` sorted
  by ms, from per-phase sums and counts ``[5, 2 max_s + 1]`` over mel shifts ``-max_s..``."""
  s = np.arange(-max_s, max_s + 1)
  ms = (MEL_MS * s[None, :] + PHASE_MS[:, None]).ravel()
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = (sums / counts).ravel()
  ok = counts.ravel() > 0
  order = np.argsort(ms[ok], kind="stable")
  return ms[ok][order], mean[ok][order]


def subframe_peak(ms: np.ndarray, curve: np.ndarray, centre_ms: float, search_ms: float,
                  fit_ms: float) -> float:
  """The peak of ``curve(ms)`` near ``centre_ms``: the vertex of a least-squares parabola
  through the points within ``fit_ms`` of the largest point within ``search_ms``."""
  near = np.flatnonzero(np.abs(ms - centre_ms) <= search_ms)
  if near.size == 0:
    return float(centre_ms)
  top = ms[near[np.argmax(curve[near])]]
  sel = np.abs(ms - top) <= fit_ms
  if sel.sum() < 3:
    return float(top)
  x = ms[sel] - top
  a, b, _ = np.polyfit(x, curve[sel], 2)
  if a >= 0:
    return float(top)
  return float(top + np.clip(-b / (2 * a), -fit_ms, fit_ms))


def estimate_segment(parts: list[dict], whole_idx: np.ndarray, max_s: int, fit_ms: float,
              curves: bool = False, around: int | None = None) -> dict | None:
  """An offset from blocks' sums (whole frames, ms, jackknife uncertainty); ``curves`` adds
  the vote histogram and mean similarity per whole frame (the plain answer's plot);
  ``around``: the whole frame is picked within one frame of this offset (``_vote``)."""
  if not parts:
    return None
  sums = sum(p["sum"] for p in parts)
  cnt = sum(p["cnt"] for p in parts)
  hist = sum(p["hist"] for p in parts)
  if hist.sum() == 0:
    return None
  maxk = (whole_idx.shape[1] - 1) // 2
  with np.errstate(invalid="ignore", divide="ignore"):
    whole = np.array([sums[np.arange(5), whole_idx[:, k]].sum() /
                      cnt[np.arange(5), whole_idx[:, k]].sum() for k in range(2 * maxk + 1)])
  key = np.where(np.isfinite(whole), whole, -np.inf)
  # Pooled: on few positions (a 1 s clip: 25) one frame of a second peak of periodic
  # lips tied with each half of a peak split between two frames and won on mean
  # similarity (lrw_word_sample4: +9 for +2). The sub-frame search reaches one frame
  # either side of the pick.
  pick = protocol.vote(hist, key, pool=True,
                       around=None if around is None else around + maxk)
  k = int(pick - maxk)
  offs = np.arange(-maxk, maxk + 1)
  conf = float(whole[pick] - np.nanmedian(whole))

  def ms_of(s, c):
    grid, curve = fine_grid(s, c, max_s)
    return subframe_peak(grid, curve, k * FRAME_MS, FRAME_MS, fit_ms)

  est = ms_of(sums, cnt)
  unc = None
  if len(parts) >= 3:   # jackknife over the blocks
    loo = np.array([ms_of(sums - p["sum"], cnt - p["cnt"]) for p in parts])
    n = len(parts)
    unc = float(math.sqrt((n - 1) / n * np.sum((loo - loo.mean()) ** 2)))
  # The whole-frame answer is the frame nearest the sub-frame estimate: near a half frame
  # the per-position vote (kept as vote_frames) splits between the two neighbours, while
  # the ms estimate is good to a few ms.
  out = {"offset_frames": int(round(est / FRAME_MS)), "vote_frames": k,
         "offset_ms": round(est, 2),
         "uncertainty_ms": None if unc is None else round(unc, 2),
         "confidence": round(conf, 4), "vote_fraction": round(float(hist[pick] / hist.sum()), 3),
         # The vote's peak on the last frame searched is not a peak that was found.
         "at_search_edge": bool(abs(k) == maxk)}
  if curves:
    out |= {"offsets": offs, "histogram": hist.astype(np.int64), "mean_curve": whole}
  return out


def drift(good: list[dict], o: AnalysisOptions, duration_s: float) -> dict:
  """Theil-Sen slope of offset against time; CI from non-overlapping segments."""
  step = max(1, int(round(o.window_s / o.hop_s)))
  if len(good) < 2 * step or duration_s < 2 * o.window_s:
    return {"ms_per_min": None, "ci_ms_per_min": None, "intercept_ms": None,
            "verdict": "unknown", "text": "too few measurable segments to judge drift"}
  from scipy import stats
  t = np.array([(s["start_s"] + s["end_s"]) / 2 for s in good])
  y = np.array([s["offset_ms"] for s in good])
  slope, icpt, _, _ = stats.theilslopes(y, t)
  sub = slice(None, None, step)
  if len(t[sub]) >= 3:
    _, _, lo, hi = stats.theilslopes(y[sub], t[sub], alpha=0.95)
  else:
    lo, hi = -math.inf, math.inf
  change = abs(slope) * (t.max() - t.min())
  if lo > 0 or hi < 0:
    verdict = "drifting" if change >= o.drift_min_ms else "stable"
  else:
    verdict = "stable" if abs(max(abs(lo), abs(hi))) * (t.max() - t.min()) < o.drift_min_ms \
        or change < o.drift_min_ms / 2 else "unknown"
  per_min = slope * 60
  if verdict == "drifting":
    text = (f"audio gets {'later' if per_min > 0 else 'earlier'} by {abs(per_min):.1f} ms per "
            f"minute ({change:.0f} ms over the measured {t.max() - t.min():.0f} s)")
  elif verdict == "stable":
    text = f"no drift: {change:.0f} ms change over {t.max() - t.min():.0f} s"
  else:
    text = f"uncertain: {per_min:+.1f} ms per minute, confidence interval spans zero"
  return {"ms_per_min": round(per_min, 3),
          "ci_ms_per_min": [round(lo * 60, 3), round(hi * 60, 3)] if math.isfinite(lo) else None,
          "intercept_ms": round(float(icpt), 2), "verdict": verdict, "text": text}
