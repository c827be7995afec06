"""PNG plots and the Table-1 text table for evaluation, detection, training and ablation.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas instead of pyplot, so
no global backend or figure state is touched (safe inside a training loop or a test run).
Accuracies come in as fractions in ``[0, 1]`` and are drawn as percentages. Clip-length keys
may be ints or strings (as after a JSON round trip).
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from modeformer_jax.evaluation.protocol import CLIP_LENGTHS, MAX_OFFSET

PathLike = str | os.PathLike


def _new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6.0, 4.0)):
  fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  return fig, axes.reshape(-1)


def _save(fig: Figure, path: PathLike) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return path


def _by_length(accs: Mapping[Any, Any]) -> dict[int, float]:
  """``{K: acc}`` with int keys, sorted; ``None`` becomes NaN."""
  out = {}
  for k, v in accs.items():
    out[int(k)] = float("nan") if v is None else float(v)
  return dict(sorted(out.items()))


def plot_accuracy_by_length(results_by_name: Mapping[str, Mapping[Any, float]],
                            path: PathLike, title: str = "Sync accuracy vs clip length") -> str:
  """Accuracy (%) against clip length (frames), one line per model/config."""
  if not results_by_name:
    raise ValueError("plot_accuracy_by_length: no results to plot")
  fig, (ax,) = _new_figure()
  for name, accs in results_by_name.items():
    accs = _by_length(accs)
    ax.plot(list(accs), [100 * a for a in accs.values()], marker="o", label=str(name))
  ax.set_xticks(list(CLIP_LENGTHS))
  ax.set_xlabel("clip length (frames)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


def plot_offset(detection: Mapping[str, Any], path: PathLike, title: str = "") -> str:
  """Two panels for one clip: histogram of per-frame best offsets; averaged score curve."""
  hist = np.asarray(detection["histogram"])
  curve = np.asarray(detection["mean_curve"], dtype=np.float64)
  max_offset = (hist.shape[0] - 1) // 2
  offsets = np.arange(-max_offset, max_offset + 1)
  pred = int(detection["offset_frames"])
  fig, (ax_h, ax_c) = _new_figure(ncols=2)
  ax_h.bar(offsets, hist, color="tab:blue")
  ax_h.axvline(pred, color="tab:red", linestyle="--", label=f"predicted {pred:+d}")
  ax_h.set_xlabel("offset (frames, + = audio late)")
  ax_h.set_ylabel("video frames")
  ax_h.set_title("per-frame best offset")
  ax_h.legend()
  ax_c.plot(offsets, curve, marker=".", color="tab:green")
  ax_c.axvline(pred, color="tab:red", linestyle="--")
  if np.isfinite(curve).any():
    ax_c.axhline(float(np.nanmedian(curve)), color="gray", linestyle=":", label="median")
    ax_c.legend()
  ax_c.set_xlabel("offset (frames, + = audio late)")
  ax_c.set_ylabel("mean cosine similarity")
  ax_c.set_title("averaged score curve")
  headline = (f"offset {pred:+d} frames ({detection.get('offset_ms', pred * 40.0):+.0f} ms), "
              f"confidence {detection.get('confidence', float('nan')):.3f}")
  fig.suptitle(f"{title}: {headline}" if title else headline)
  return _save(fig, path)


def plot_offset_histogram(data: Mapping[Any, Any] | Sequence[int] | np.ndarray,
                          path: PathLike, title: str = "Predicted offsets",
                          max_offset: int | None = None) -> str:
  """Dataset-level histogram of predicted offsets (the paper's Fig. 4 style).

  ``data`` is unambiguous by type: a :func:`protocol.dataset_histogram` result (uses its
  ``counts``), a mapping ``{offset: count}``, or a sequence of per-clip offsets.
  """
  if isinstance(data, Mapping) and "counts" in data:
    counts = np.asarray(data["counts"], np.int64)
    m = (counts.shape[0] - 1) // 2
    counted = {int(o): int(c) for o, c in zip(range(-m, m + 1), counts)}
  elif isinstance(data, Mapping):
    counted = {int(o): int(c) for o, c in data.items()}
  else:
    values = np.asarray(data).reshape(-1).astype(np.int64)
    counted = {int(o): int(c) for o, c in zip(*np.unique(values, return_counts=True))}
  if max_offset is None:
    max_offset = max([MAX_OFFSET] + [abs(o) for o in counted])
  offsets = np.arange(-max_offset, max_offset + 1)
  heights = np.array([counted.get(int(o), 0) for o in offsets])
  fig, (ax,) = _new_figure(size=(7.0, 4.0))
  ax.bar(offsets, heights, color="tab:blue")
  ax.axvline(0, color="gray", linestyle=":")
  ax.set_xlabel("predicted offset (frames, + = audio late)")
  ax.set_ylabel("clips")
  ax.set_title(f"{title} (n={int(heights.sum())})")
  return _save(fig, path)


def plot_training_curves(history: Mapping[str, Iterable[tuple[float, float]]],
                         path: PathLike, title: str = "") -> str:
  """One panel per metric (e.g. ``loss``, ``val_accuracy``), value against step."""
  if not history:
    raise ValueError("plot_training_curves: empty history")
  names = list(history)
  ncols = min(3, len(names))
  nrows = math.ceil(len(names) / ncols)
  fig, axes = _new_figure(ncols=ncols, nrows=nrows, size=(5.0, 3.5))
  for ax, name in zip(axes, names):
    points = [(float(s), float(v)) for s, v in history[name]]
    points = [(s, v) for s, v in points if math.isfinite(v)]
    if points:
      steps, values = zip(*points)
      ax.plot(steps, values, marker="." if len(points) < 50 else None)
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  for ax in axes[len(names):]:
    ax.set_visible(False)
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def plot_ablation(table: Mapping[Any, Mapping[Any, float]], path: PathLike,
                  x_label: str = "N_H (hard negatives per clip)",
                  title: str = "Accuracy vs N_H") -> str:
  """Accuracy (%) against the ablated value (``{n_h: {K: acc}}``), one line per clip length."""
  if not table:
    raise ValueError("plot_ablation: empty table")
  xs = sorted(table, key=float)
  lengths = sorted({int(k) for row in table.values() for k in row})
  fig, (ax,) = _new_figure()
  for k in lengths:
    ys = [100 * _by_length(table[x]).get(k, float("nan")) for x in xs]
    ax.plot([float(x) for x in xs], ys, marker="o", label=f"{k} frames")
  ax.set_xlabel(x_label)
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(fig, path)


def format_table(rows: Mapping[str, Mapping[Any, float]],
                 lengths: Sequence[int] = CLIP_LENGTHS, decimals: int = 2) -> str:
  """The paper's Table 1 as Markdown: rows = model/config, columns = clip length, in %."""
  header = ["Model"] + [f"{k} frames" for k in lengths]
  body = []
  for name, accs in rows.items():
    accs = _by_length(accs)
    cells = []
    for k in lengths:
      a = accs.get(int(k))
      cells.append("-" if a is None or not math.isfinite(a) else f"{100 * a:.{decimals}f}")
    body.append([str(name)] + cells)
  widths = [max(len(r[c]) for r in [header] + body) for c in range(len(header))]

  def line(cells: Sequence[str]) -> str:
    padded = [cells[0].ljust(widths[0])] + [x.rjust(w) for x, w in zip(cells[1:], widths[1:])]
    return "| " + " | ".join(padded) + " |"

  rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
  return "\n".join([line(header), rule] + [line(r) for r in body])
