"""The words for people: one-line descriptions of a result (``describe``, ``describe_plain``),
why a file has no offset (``refusal``), and plain ``detect``'s answer (``plain_answer``)."""
from __future__ import annotations

from modeformer_jax.errors import FeatureError
from modeformer_jax.model import windows

FPS = windows.FPS


def _streams_note(entry: dict) -> str:
  """What a person should know about the streams: a length mismatch, held frames."""
  st = entry.get("streams") or {}
  notes = []
  if st.get("short"):
    notes.append(f"{st['short']} ends {abs(st['mismatch_s']):.2f} s early; measured the "
                 f"{st['overlap_s']:.2f} s where both exist")
  if st.get("audio_starts_s"):
    notes.append(f"sound starts {st['audio_starts_s']:.2f} s after the first picture")
  if st.get("held_frames"):
    notes.append(f"{st['held_frames']} frame(s) missing in the source (held), "
                 f"{st.get('windows_skipped_held', 0)} lip window(s) skipped for them")
  return "".join(f"; {n}" for n in notes)


def describe(entry: dict) -> str:
  """One line per file for a person: global offset, drift and the EBU R37 verdict."""
  if "error" in entry:
    return f"{entry['name']}: error ({entry.get('kind')}): {entry['error']}"
  g, d = entry.get("global") or {}, entry.get("drift") or {}
  n = f"{g.get('measurable_segments', 0)} of {g.get('num_segments', 0)} segments measurable"
  if g.get("offset_ms") is None:
    return f"{entry['name']}: {refusal(entry)} ({n})"
  ms = g["offset_ms"]
  side = "audio late" if ms > 0 else ("audio early" if ms < 0 else "in sync")
  ebu = (entry.get("tolerances") or {}).get("EBU R37", {}).get("verdict", "unknown")
  audio = f"; audio: {entry['audio_note']}" if entry.get("audio_note") else ""
  unc = "" if g.get("uncertainty_ms") is None else f" +- {g['uncertainty_ms']:.1f}"
  unsure = f"; uncertain: {g['why']}" if g.get("reason") == "uncertain" else ""
  return (f"{entry['name']}: offset {ms:+.1f} ms{unc} ({side}), "
          f"{n}{unsure}; drift: {d.get('text', 'unknown')}; EBU R37 {ebu}{audio}"
          f"{_streams_note(entry)}")


# ------------------------------------------------------------------------------------------
# The plain answer (``detect`` without ``--qc``): the whole-file summary of the same analysis.
# ------------------------------------------------------------------------------------------

# Why a file has no whole-file answer -> the FeatureError kind plain ``detect`` reports.
_REFUSALS = {"no face": "no_face", "no speech": "no_speech", "silence": "no_speech",
             "music or steady sound": "no_speech", "no audio": "no_audio",
             "conflicting evidence": "conflict"}


def refusal(result: dict) -> str:
  """Why ``analyze``'s result has no offset, in the words plain ``detect`` and ``--qc``
  both print."""
  g = result["global"]
  reason = g.get("reason") or "no face"
  if g.get("why"):
    return f"no measurable offset: {reason}: {g['why']}"
  return f"no measurable offset: {reason} in any {result['options']['window_s']:g} s stretch"


def plain_answer(result: dict, name: str | None = None) -> dict:
  """The whole-file answer of ``analyze``'s result, in frames and ms, with what the file
  was (streams, audio choice, crop); ``--qc``'s ``global`` is the same estimate. Raises
  ``FeatureError`` when the file has no measurable offset (no face, no speech, no audio)."""
  g = result["global"]
  if g.get("offset_ms") is None:
    raise FeatureError(result["path"], _REFUSALS.get(g.get("reason") or "no face", "no_face"),
                       refusal(result))
  keep = ("offset_frames", "offset_ms", "uncertainty_ms", "vote_frames", "confidence",
          "vote_fraction", "histogram", "mean_curve", "offsets", "track", "num_positions",
          "reason", "why")
  out = {k: g[k] for k in keep if k in g}
  out |= {"name": name or result["path"], "num_frames": int(round(result["duration_s"] * FPS)),
          "crop": result["crop"], "audio_source": result.get("audio_source", ""),
          "audio_note": result.get("audio_note", ""), "streams": result.get("streams"),
          "reliable": g.get("reason") is None}
  if "injected" in result:
    out["injected"] = result["injected"]
  return out


def describe_plain(r: dict) -> str:
  """One line for a person: the offset, its direction and the confidence."""
  k = r["offset_frames"]
  side = "audio late" if k > 0 else ("audio early" if k < 0 else "in sync")
  audio = f"; audio: {r['audio_note']}" if r.get("audio_note") else ""
  unsure = f"; uncertain: {r.get('why')}" if not r.get("reliable", True) else ""
  return (f"{r['name']}: offset {k:+d} frames ({r['offset_ms']:+.0f} ms, {side}), "
          f"confidence {r['confidence']:.3f}, {r['vote_fraction']:.0%} of frames agree"
          f"{unsure}{audio}{_streams_note(r)}")
