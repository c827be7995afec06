"""Self-contained HTML sync-QC reports: one page per analysed file, plus a folder index.

Each page carries its own CSS, its chart is inline SVG drawn here, and the only script is an
optional table sorter, so a report opens offline and can be mailed or archived as one file.
Offsets use the project sign: positive = audio late (lags the picture), negative = audio early
(leads). Any field of a result may be missing or None; it is then shown as a dash or left out.
"""
from __future__ import annotations

import html
import math
import os
import pathlib
from typing import Any, Mapping, Sequence

from modeformer_jax import __version__

PathLike = str | os.PathLike
_DASH, _MINUS, _PM, _TO = "\u2014", "\u2212", "\u00b1", "\u2013"
_TRACK_COLOURS = ("#1f5fbf", "#d9730d", "#2e8b57", "#8e44ad", "#a0522d", "#008b8b")
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
_BADGE_CLASS = {"pass": "pass", "stable": "pass", "fail": "fail", "drifting": "warn"}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;
 margin:0 auto;padding:16px 24px;max-width:1200px;background:#fff}
h1{font-size:22px;margin:0 0 4px;word-break:break-all}h2{font-size:17px;margin:22px 0 8px}
.sub{color:#666;font-size:13px}.big{font-size:26px;font-weight:600;margin:10px 0 2px}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-size:12px;font-weight:600;
 color:#fff;margin:2px 4px 2px 0;white-space:nowrap}
.pass{background:#2e7d32}.fail{background:#c62828}.warn{background:#e08a00}
.unknown{background:#8a8a8a}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12.5px;width:100%}
table.compact{width:auto}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 8px;text-align:left;vertical-align:middle}
td{white-space:nowrap}table.wrap td{white-space:normal}
th{background:#f3f3f3;position:sticky;top:0;font-weight:600}
table.sortable th{cursor:pointer}.n{text-align:right;font-variant-numeric:tabular-nums}
tr.na td{color:#9a9a9a;background:#fafafa}tr.na .badge{opacity:.45}
.tracks{display:flex;flex-wrap:wrap;gap:12px}
.track{border:1px solid #ddd;border-left-width:6px;border-radius:6px;padding:8px 10px;
 display:flex;gap:10px;min-width:260px}
.track img,.noimg{width:72px;height:72px;object-fit:cover;border-radius:4px;background:#eee}
.noimg{display:flex;align-items:center;justify-content:center;color:#999;font-size:11px}
.chart{display:block;border:1px solid #e3e3e3;border-radius:6px}
footer{margin-top:24px;padding-top:8px;border-top:1px solid #ddd;color:#666;font-size:12px}
.err{color:#c62828;font-weight:600}
"""
# Click a header to sort by it (again to reverse); a cell's data-v holds the raw number.
_SORT_JS = """
document.querySelectorAll('table.sortable th').forEach((th,i)=>th.addEventListener('click',()=>{
 const tb=th.closest('table').tBodies[0],asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
 const key=r=>{const c=r.cells[i],v=c.dataset.v??c.textContent,n=parseFloat(v);
  return isNaN(n)?[1,v]:[0,n];};
 [...tb.rows].sort((a,b)=>{const x=key(a),y=key(b),d=x[0]-y[0]||(x[1]<y[1]?-1:x[1]>y[1]?1:0);
  return asc?d:-d;}).forEach(r=>tb.appendChild(r));}));
"""


def _e(x: Any) -> str:
  return html.escape("" if x is None else str(x), quote=True)


def _num(x: Any) -> float | None:
  """Finite float or None (None, NaN, strings and other junk all become None)."""
  try:
    v = float(x)
  except (TypeError, ValueError):
    return None
  return v if math.isfinite(v) else None


def _fmt(x: Any, digits: int = 1, signed: bool = False) -> str:
  v = _num(x)
  if v is None:
    return _DASH
  return (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}").replace("-", _MINUS)


def _clock(t: Any) -> str:
  """Seconds as m:ss (h:mm:ss past an hour)."""
  v = _num(t)
  if v is None:
    return _DASH
  s = int(round(v))
  h, m, sec = s // 3600, s % 3600 // 60, s % 60
  return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _span(a: Any, b: Any) -> str:
  return f"{_clock(a)}{_TO}{_clock(b)}"


def _pct(x: Any) -> str:
  """``0.873`` -> ``87%``; a dash when missing."""
  return f"{100 * x:.0f}%" if _num(x) is not None else "\u2013"


def _offset_words(ms: Any, unc: Any = None) -> str:
  """``+23.5 ms ± 3.1 (audio late)``; ``not measurable`` when there is no offset."""
  v, u = _num(ms), _num(unc)
  if v is None:
    return "not measurable"
  side = "in sync" if abs(v) < 0.05 else ("audio late" if v > 0 else "audio early")
  return f"{_fmt(v, signed=True)} ms" + (f" {_PM} {u:.1f}" if u is not None else "") + f" ({side})"


def _verdict(v: Any) -> str:
  return str(v or "unknown").lower()


def _badge(verdict: Any, label: Any = None, title: str | None = None) -> str:
  """Coloured pill: pass/stable green, fail red, drifting amber, anything else grey."""
  v = _verdict(verdict)
  text = f"{label}: {v}" if label is not None else v
  tip = f' title="{_e(title)}"' if title else ""
  return f'<span class="badge {_BADGE_CLASS.get(v, "unknown")}"{tip}>{_e(text)}</span>'


def _dict(x: Any) -> Mapping[str, Any]:
  return x if isinstance(x, Mapping) else {}


def _list(x: Any) -> list:
  return list(x) if isinstance(x, (list, tuple)) else []


def _nice_ticks(lo: float, hi: float, target: int = 8) -> list[float]:
  raw = max(hi - lo, 1e-9) / target
  mag = 10 ** math.floor(math.log10(raw))
  step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _bands(result: Mapping[str, Any]) -> list[tuple[str, float, float, bool]]:
  """(name, early_ms, late_ms, strong) of the shaded bands: ITU acceptability, then EBU R37."""
  tol = _dict(result.get("tolerances"))
  strong = [k for k in tol if "EBU" in str(k)][:1] or list(tol)[:1]
  light = [k for k in tol if "accept" in str(k).lower() and k not in strong][:1]
  out = []
  for name, is_strong in [(k, False) for k in light] + [(k, True) for k in strong]:
    early, late = _num(_dict(tol[name]).get("early_ms")), _num(_dict(tol[name]).get("late_ms"))
    if early is not None and late is not None:
      out.append((str(name), abs(early), abs(late), is_strong))
  return out


def _legend(items: Sequence[tuple[str, str]], x0: float, width: float) -> tuple[list[str], int]:
  """Legend entries (swatch SVG at the origin, label) in rows; returns (svg parts, rows)."""
  out, x, row = [], x0, 0
  for swatch, label in items:
    w = 44 + 6.6 * len(label)  # rough width at 12px: enough that entries never collide
    if x + w > x0 + width and x > x0:
      x, row = x0, row + 1
    out.append(f'<g transform="translate({x:.0f},{14 + 18 * row})">{swatch}'
               f'<text x="24" y="4" font-size="12">{_e(label)}</text></g>')
    x += w
  return out, row + 1


def _mid(s: Mapping[str, Any]) -> float:
  return ((_num(s.get("start_s")) or 0.0) + (_num(s.get("end_s")) or 0.0)) / 2


def _track_colour(track: Any) -> str:
  """One colour per track id, shared by the chart points and the track cards."""
  t = _num(track)
  return _TRACK_COLOURS[int(t) % len(_TRACK_COLOURS)] if t is not None else _TRACK_COLOURS[0]


def _y_limit(need: Sequence[float]) -> float:
  """Half-range of the symmetric y axis, on a tick, holding every value in ``need``.

  Symmetric about 0 so early and late read alike, and never under +-100 ms so a clean file
  does not blow its few-ms scatter up into alarming swings.
  """
  lim = max([100.0, *need]) * 1.08
  ticks = _nice_ticks(-lim, lim)
  return math.ceil(lim / (ticks[1] - ticks[0]) - 1e-9) * (ticks[1] - ticks[0])


def _gap_runs(segs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
  """[start, end, reason, count] runs of overlapping unmeasurable segments sharing a reason."""
  runs: list[list[Any]] = []
  for s in segs:
    a, b = _num(s.get("start_s")) or 0.0, _num(s.get("end_s")) or 0.0
    why = s.get("reason") or "not measurable"
    if runs and runs[-1][2] == why and a <= runs[-1][1] + 1e-6:
      runs[-1][1], runs[-1][3] = max(runs[-1][1], b), runs[-1][3] + 1
    else:
      runs.append([a, b, why, 1])
  return runs


def _offset_chart(result: Mapping[str, Any]) -> str:
  """Inline SVG of offset against time: points with error bars, bands, drift, shots, gaps."""
  segs = sorted((s for s in _list(result.get("segments")) if isinstance(s, Mapping)),
                key=lambda s: _num(s.get("start_s")) or 0.0)
  dur = _num(result.get("duration_s")) or max([_num(s.get("end_s")) or 0 for s in segs] + [1])
  dur = max(dur, 1e-3)
  meas = [s for s in segs if s.get("measurable") and _num(s.get("offset_ms")) is not None]
  bands, drift = _bands(result), _dict(result.get("drift"))
  slope, icpt = _num(drift.get("ms_per_min")), _num(drift.get("intercept_ms"))
  has_drift = slope is not None and icpt is not None
  need = [max(e, l) for _, e, l, _ in bands]
  need += [abs(_num(s["offset_ms"])) + (_num(s.get("uncertainty_ms")) or 0.0) for s in meas]
  lim = _y_limit(need + ([abs(icpt), abs(icpt + slope * dur / 60)] if has_drift else []))
  tracks = sorted({int(_num(s.get("track"))) for s in meas if _num(s.get("track")) is not None})

  fills = {True: "#c8e6c9", False: "#eef6ee"}
  items = [(f'<rect x="0" y="-5" width="18" height="10" fill="{fills[st]}" stroke="#9c9"/>',
            f"{n} ({_MINUS}{e:g}/+{l:g} ms)") for n, e, l, st in reversed(bands)]
  items += [(f'<circle cx="9" cy="0" r="4" fill="{_track_colour(t)}"/>', f"track {t}")
            for t in tracks[:6]]
  items.append(('<line x1="9" y1="-6" x2="9" y2="6" stroke="#555"/>', "uncertainty"))
  if has_drift:
    items.append(('<line x1="0" y1="0" x2="18" y2="0" stroke="#7b1fa2" stroke-width="2" '
                  'stroke-dasharray="5 3"/>', "drift fit"))
  items += [('<line x1="9" y1="-7" x2="9" y2="7" stroke="#444" stroke-dasharray="2 2"/>',
             "shot change"),
            ('<rect x="0" y="-4" width="18" height="8" fill="#b0b0b0"/>', "not measurable")]
  W, L, R, B = 1000, 64, 18, 50
  legend, rows = _legend(items, L, W - L - R)
  T = 22 + 18 * rows
  pw, ph = W - L - R, 330
  H = T + ph + B

  def x(t: float) -> float:
    return L + pw * min(max(t / dur, 0.0), 1.0)

  def y(v: float) -> float:
    return T + ph * (lim - v) / (2 * lim)

  o = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="offset '
       'over time" font-family="system-ui,Helvetica,Arial,sans-serif">',
       f'<defs><clipPath id="plot"><rect x="{L}" y="{T}" width="{pw}" height="{ph}"/></clipPath>'
       f'</defs><rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fff" stroke="#bbb"/>',
       *legend]
  for v in _nice_ticks(-lim, lim):
    o.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
             f'<text x="{L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">'
             f'{_fmt(v, 0, signed=abs(v) > 1e-9)}</text>')
  tstep = next((s for s in _TIME_STEPS if dur / s <= 12), 3600 * math.ceil(dur / 43200))
  for i in range(int(dur // tstep) + 1):
    tx = x(i * tstep)
    o.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{T}" y2="{T + ph}" stroke="#f0f0f0"/>'
             f'<text x="{tx:.1f}" y="{T + ph + 16}" font-size="11" text-anchor="middle">'
             f'{_clock(i * tstep)}</text>')
  o.append('<g clip-path="url(#plot)">')
  for name, early, late, strong in bands:
    o.append(f'<rect x="{L}" y="{y(late):.1f}" width="{pw}" height="{y(-early) - y(late):.1f}" '
             f'fill="{fills[strong]}" fill-opacity="{0.7 if strong else 1}"><title>{_e(name)}: '
             f'{_MINUS}{early:g} ms (early) to +{late:g} ms (late)</title></rect>')
  # Unmeasurable segments: a faint column, and a grey strip on the time axis that names the
  # reason on hover (one per run, so overlapping windows do not stack dozens of tooltips).
  for a, b, why, n in _gap_runs([s for s in segs if s not in meas]):
    x0, w = x(a), max(x(b) - x(a), 1.0)
    o.append(f'<g><title>{_e(why)}: {_span(a, b)} ({n} segment{"s" * (n > 1)})</title>'
             f'<rect x="{x0:.1f}" y="{T}" width="{w:.1f}" height="{ph}" fill-opacity="0.035"/>'
             f'<rect x="{x0:.1f}" y="{T + ph - 10}" width="{w:.1f}" height="10" '
             'fill="#b0b0b0"/></g>')
  o.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#333"/>')
  for t in filter(lambda t: t is not None, map(_num, _list(result.get("shots")))):
    o.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{T}" y2="{T + ph}" stroke="#444" '
             f'stroke-dasharray="2 3"><title>shot change at {_clock(t)} ({t:.1f} s)</title></line>')
  # A thin line joins consecutive measurable segments; an unmeasurable one breaks it.
  path, run = [], []
  for s in segs + [None]:
    if s is not None and s in meas:
      run.append(f"{x(_mid(s)):.1f},{y(_num(s['offset_ms'])):.1f}")
    elif run:
      path, run = path + ["M" + " L".join(run)], []
  if path:
    o.append(f'<path d="{" ".join(path)}" fill="none" stroke="#999" stroke-width="0.8"/>')
  if has_drift:
    o.append(f'<line x1="{x(0):.1f}" y1="{y(icpt):.1f}" x2="{x(dur):.1f}" '
             f'y2="{y(icpt + slope * dur / 60):.1f}" stroke="#7b1fa2" stroke-width="2" '
             f'stroke-dasharray="7 4"><title>{_e(drift.get("text") or "drift fit")}</title></line>')
  main = next((n for n, _, _, st in bands if st), None)
  radius = 3.4 if len(meas) < 150 else 2.6  # long files: smaller dots keep the scatter legible
  for s in meas:
    t, v, u = _mid(s), _num(s["offset_ms"]), _num(s.get("uncertainty_ms")) or 0.0
    tr, c = _num(s.get("track")), _track_colour(s.get("track"))
    verdict = _verdict(_dict(s.get("verdicts")).get(main)) if main else ""
    tip = (f"{_span(s.get('start_s'), s.get('end_s'))}: {_offset_words(v, u)}, confidence "
           f"{_fmt(s.get('confidence'), 2)}, track {_fmt(tr, 0)}"
           + (f", {main} {verdict}" if main else ""))
    ring = 'stroke="#c62828" stroke-width="1.6"' if verdict == "fail" else 'stroke="#fff"'
    o.append(f'<g><title>{_e(tip)}</title><line x1="{x(t):.1f}" x2="{x(t):.1f}" '
             f'y1="{y(v - u):.1f}" y2="{y(v + u):.1f}" stroke="{c}" stroke-opacity="0.6"/>'
             f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="{radius}" fill="{c}" {ring}/></g>')
  o.append("</g>")
  mid = T + ph / 2
  o.append(f'<text x="{L + 6}" y="{T + 14}" font-size="11" fill="#555">\u25b2 audio late</text>'
           f'<text x="{L + 6}" y="{T + ph - 16}" font-size="11" fill="#555">\u25bc audio early'
           f'</text><text x="16" y="{mid:.0f}" font-size="12" text-anchor="middle" '
           f'transform="rotate(-90 16 {mid:.0f})">offset (ms)</text><text x="{L + pw / 2:.0f}" '
           f'y="{H - 10}" font-size="12" text-anchor="middle">time (m:ss)</text>')
  if not meas:
    o.append(f'<text x="{L + pw / 2:.0f}" y="{mid - 12:.0f}" font-size="15" fill="#777" '
             'text-anchor="middle">no measurable segment</text>')
  return "\n".join(o + ["</svg>"])


def _page(title: str, body: Sequence[str]) -> str:
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          '<meta name="viewport" content="width=device-width, initial-scale=1">'
          f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
          + f"\n<script>{_SORT_JS}</script></body></html>\n")


def _write(path: PathLike, text: str) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _td(text: str, v: Any = None, num: bool = False) -> str:
  """A table cell of ready HTML; ``v`` is the raw value the sorter compares (numbers only)."""
  dv = f' data-v="{_num(v) if _num(v) is not None else ""}"' if num else ""
  return f'<td{" class=n" if num else ""}{dv}>{text}</td>'


def _table(head: Sequence[str], rows: Sequence[str], cls: str = "", numeric: Sequence[str] = ()):
  th = "".join(f'<th{" class=n" if h in numeric else ""}>{_e(h)}</th>' for h in head)
  return (f'<div class=scroll><table class="{cls}"><thead><tr>{th}</tr></thead><tbody>'
          f'{"".join(rows)}</tbody></table></div>')


def _tracks_html(result: Mapping[str, Any]) -> str:
  cards = []
  for t in map(_dict, _list(result.get("tracks"))):
    tid, thumb = _fmt(t.get("id"), 0), t.get("thumbnail")
    if isinstance(thumb, str) and thumb:
      uri = thumb if thumb.startswith("data:image/") else "data:image/png;base64," + thumb
      img = f'<img alt="face of track {_e(tid)}" src="{_e(uri)}">'
    else:
      img = '<div class="noimg">no thumbnail</div>'
    cards.append(
        f'<div class="track" style="border-left-color:{_track_colour(t.get("id"))}">{img}<div>'
        f'<b>track {_e(tid)}</b><br>{_span(t.get("start_s"), t.get("end_s"))}, '
        f'{_fmt(t.get("num_frames"), 0)} frames<br>offset {_e(_offset_words(t.get("offset_ms")))}'
        f'<br>confidence {_fmt(t.get("confidence"), 2)}, segments won '
        f'{_fmt(t.get("segments_won"), 0)}</div></div>')
  if not cards:
    return "<p class=sub>no face track</p>"
  return f'<div class="tracks">{"".join(cards)}</div>'


def _segments_html(result: Mapping[str, Any], stds: Sequence[str]) -> str:
  rows = []
  for i, s in enumerate(map(_dict, _list(result.get("segments")))):
    ok = bool(s.get("measurable")) and _num(s.get("offset_ms")) is not None
    off = _fmt(s.get("offset_ms"), signed=True)
    if ok and _num(s.get("uncertainty_ms")) is not None:
      off += f" {_PM} {_fmt(s.get('uncertainty_ms'))}"
    verd = _dict(s.get("verdicts"))
    cells = [_td(str(i), i, True),
             _td(_span(s.get("start_s"), s.get("end_s")), s.get("start_s"), True),
             _td(off, s.get("offset_ms"), True),
             _td(_fmt(s.get("offset_frames"), 0, signed=True), s.get("offset_frames"), True),
             _td(_fmt(s.get("confidence"), 2), s.get("confidence"), True),
             _td(_fmt(s.get("track"), 0), s.get("track"), True),
             _td(_pct(s.get("speech_fraction")), s.get("speech_fraction"), True),
             _td(_pct(s.get("face_fraction")), s.get("face_fraction"), True),
             *[_td(_badge(verd.get(k), title=k)) for k in stds], _td(_e(s.get("reason") or ""))]
    rows.append(f'<tr{"" if ok else " class=na"}>{"".join(cells)}</tr>')
  num = ["#", "time", "offset (ms)", "frames", "conf.", "track", "speech", "face"]
  return _table(num + list(stds) + ["reason"], rows, "sortable", num) if rows else \
      "<p class=sub>no segments</p>"


def _footer(result: Mapping[str, Any]) -> str:
  timing, opts = _dict(result.get("timing")), _dict(result.get("options"))
  parts = [f"model {result['model']}" if result.get("model") else ""]
  parts.append("options " + ", ".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
  for key, fmt in (("wall_s", "wall {} s"), ("realtime_factor", "{}\u00d7 real time"),
                   ("peak_rss_mb", "peak RSS {} MB")):
    parts.append(fmt.format(_fmt(timing[key], 0 if key == "peak_rss_mb" else 1))
                 if _num(timing.get(key)) is not None else "")
  parts.append(f"modeformer_jax {__version__}")
  return f"<footer>{_e(' · '.join(p for p in parts if p))}</footer>"


def write_file_report(result: dict, path: PathLike) -> pathlib.Path:
  """Write one self-contained HTML sync-QC report for one analysed file; returns its path."""
  result = _dict(result)
  name = str(result.get("name") or result.get("path") or "unnamed")
  head = [f"<h1>{_e(name)}</h1><div class=sub>{_e(result.get('path'))}</div>"]
  if result.get("error"):
    head.append(f"<p class=err>analysis failed ({_e(result.get('kind') or 'error')}): "
                f"{_e(result['error'])}</p>")
    return _write(path, _page(f"sync QC: {name}", head))
  g, drift = _dict(result.get("global")), _dict(result.get("drift"))
  tol, res = _dict(result.get("tolerances")), _list(result.get("resolution"))
  facts = [f"duration {_clock(result.get('duration_s'))} ({_fmt(result.get('duration_s'))} s)"
           if _num(result.get("duration_s")) is not None else ""]
  facts.append(f"{_fmt(result.get('source_fps'), 2)} fps" if _num(result.get("source_fps")) else "")
  facts.append(f"{res[0]}\u00d7{res[1]}" if len(res) == 2 else "")
  facts.append(f"audio: {result['audio_source']}" if result.get("audio_source") else "")
  about = [f"global offset = {_fmt(g['offset_frames'], 0, signed=True)} frame(s)"
           if _num(g.get("offset_frames")) is not None else "",
           f"confidence {_fmt(g.get('confidence'), 2)}" if g.get("confidence") is not None else "",
           f"{_fmt(g.get('measurable_segments'), 0)} of {_fmt(g.get('num_segments'), 0)} "
           "segments measurable", f"track {g['track']}" if g.get("track") is not None else ""]
  # A file without a global offset says why (e.g. "conflicting evidence" and its tally).
  refused = (f"no global offset: {g['reason']}" + (f" ({g['why']})" if g.get("why") else "")
             if g.get("offset_ms") is None and g.get("reason") else "")
  drift_txt = drift.get("text") or (f"{_fmt(drift['ms_per_min'], signed=True)} ms/min"
                                    if _num(drift.get("ms_per_min")) is not None else "no estimate")
  ci = [_fmt(v, signed=True) for v in _list(drift.get("ci_ms_per_min"))]
  ci_txt = f" (95% CI {ci[0]} to {ci[1]} ms/min)" if len(ci) == 2 else ""

  def limits(v: Mapping[str, Any]) -> str:
    return f"{_MINUS}{_fmt(v.get('early_ms'), 0)} / +{_fmt(v.get('late_ms'), 0)}"

  badges = "".join(_badge(_dict(v).get("verdict"), k, f"{limits(_dict(v))} ms")
                   for k, v in tol.items())
  tol_rows = [f"<tr><td>{_e(k)}</td><td class=n>{limits(_dict(v))}</td><td>"
              f"{_badge(_dict(v).get('verdict'))}</td><td class=n>"
              f"{_fmt(_dict(v).get('in_tolerance_s'), 0)}</td><td class=n>"
              f"{_fmt(_dict(v).get('out_of_tolerance_s'), 0)}</td><td class=n>"
              f"{_pct(_dict(v).get('fraction_in'))}</td><td class=n>"
              f"{_fmt(_dict(v).get('longest_out_s'), 0)}</td></tr>" for k, v in tol.items()]
  body = head + [
      f"<div class=sub>{_e(' · '.join(f for f in facts if f))}</div>",
      f"<div class=big>{_e(_offset_words(g.get('offset_ms'), g.get('uncertainty_ms')))}</div>",
      f"<div class=sub>{_e(', '.join(a for a in about if a))}</div>",
      f"<p class=err>{_e(refused)}</p>" if refused else "",
      f"<p>drift: {_badge(drift.get('verdict'))} {_e(drift_txt)}{_e(ci_txt)}</p>",
      f"<div>{badges or '<span class=sub>no tolerance verdicts</span>'}</div>",
      "<h2>Offset over time</h2>", _offset_chart(result),
      "<p class=sub>Positive offset = audio late (lags the picture). Each point is one segment "
      "with its uncertainty; a red ring marks a segment that fails the darker band's standard. "
      "Hover for details.</p>"]
  if tol_rows:
    body += ["<h2>Tolerances</h2>", _table(["standard", "early / late limit (ms)", "verdict",
                                            "s in", "s out", "measured time in",
                                            "longest out (s)"], tol_rows, "compact",
                                           ["early / late limit (ms)", "s in", "s out",
                                            "measured time in", "longest out (s)"]),
             "<p class=sub>A file fails a standard when its measured offset is outside it "
             f"for {_fmt(_dict(next(iter(tol.values()), {})).get('min_fail_s'), 0)} s in a "
             "row (or for half of what was measured, when less was measured); uncertain "
             "segments (low calibrated reliability, or the best match at the edge of the "
             "search) do not count.</p>"]
  body += ["<h2>Face tracks</h2>", _tracks_html(result), "<h2>Segments</h2>",
           _segments_html(result, [str(k) for k in tol]), _footer(result)]
  return _write(path, _page(f"sync QC: {name}", body))


def write_index(results: list[dict], path: PathLike,
                links: dict[str, str] | None = None) -> pathlib.Path:
  """Write the index page of a folder run: summary counts, one row per file, failures apart.

  ``links`` maps a result's name (or path) to the href of its report; unmapped names are plain.
  """
  links = links or {}
  ok = [r for r in results if isinstance(r, Mapping) and not r.get("error")]
  bad = [r for r in results if isinstance(r, Mapping) and r.get("error")]
  stds: list[str] = []
  for r in ok:
    stds += [str(k) for k in _dict(r.get("tolerances")) if str(k) not in stds]
  body = [f"<h1>Sync QC: {len(results)} file{'s' * (len(results) != 1)}</h1>",
          f"<p><b>{len(ok)}</b> file{'s' * (len(ok) != 1)} analysed, <b class={'err' * bool(bad)}>"
          f"{len(bad)}</b> error{'s' * (len(bad) != 1)}</p>"]
  summary = []
  for k in stds:
    vs = [_verdict(_dict(_dict(r.get("tolerances")).get(k)).get("verdict")) for r in ok]
    counts = {v: vs.count(v) for v in ("pass", "fail")}
    counts["unknown"] = len(vs) - counts["pass"] - counts["fail"]
    summary.append(f"<tr><td>{_e(k)}</td>" + "".join(
        f'<td class=n><span class="badge {v}">{n}</span></td>' if n else "<td class=n>0</td>"
        for v, n in counts.items()) + "</tr>")
  if summary:
    body.append(_table(["standard", "pass", "fail", "unknown"], summary, "compact",
                       ["pass", "fail", "unknown"]))
  rows = []
  for r in ok:
    name = str(r.get("name") or r.get("path") or "unnamed")
    href = links.get(name) or links.get(str(r.get("path")))
    g, d, tol = _dict(r.get("global")), _dict(r.get("drift")), _dict(r.get("tolerances"))
    off = _fmt(g.get("offset_ms"), signed=True)
    if _num(g.get("offset_ms")) is not None and _num(g.get("uncertainty_ms")) is not None:
      off += f" {_PM} {_fmt(g.get('uncertainty_ms'))}"
    rows.append("<tr>" + "".join([
        f'<td><a href="{_e(href)}">{_e(name)}</a></td>' if href else f"<td>{_e(name)}</td>",
        _td(_clock(r.get("duration_s")), r.get("duration_s"), True),
        _td(off, g.get("offset_ms"), True),
        _td(f"{_fmt(d.get('ms_per_min'), signed=True)} {_badge(d.get('verdict'))}",
            d.get("ms_per_min"), True),
        *[_td(_badge(_dict(tol.get(k)).get("verdict"))) for k in stds],
        _td(f"{_fmt(g.get('measurable_segments'), 0)} / {_fmt(g.get('num_segments'), 0)}",
            g.get("measurable_segments"), True)]) + "</tr>")
  num = ["duration", "offset (ms)", "drift (ms/min)", "measurable / segments"]
  body += ["<h2>Files</h2>", _table(["file", *num[:3], *stds, num[3]], rows, "sortable", num)
           if rows else "<p class=sub>no file analysed</p>"]
  if bad:
    body += ["<h2>Failed files</h2>", _table(["file", "kind", "reason"], [
        f"<tr><td>{_e(r.get('name') or r.get('path'))}<div class=sub>{_e(r.get('path'))}</div>"
        f"</td><td>{_e(r.get('kind') or 'error')}</td><td>{_e(r.get('error'))}</td></tr>"
        for r in bad], "wrap")]
  body.append(f"<footer>modeformer_jax {_e(__version__)}</footer>")
  return _write(path, _page("Sync QC index", body))
