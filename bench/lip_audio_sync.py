"""A model-free check of real recordings' sync: mouth opening against loudness.

  python -m bench.lip_audio_sync ../shared/data/real_clips/*/*.mp4 \\
      --compare bench/faces_v1/real_clips_shifts.json --json_out bench/lip_audio_sync.json

The injected-shift benchmark (``bench.detect_shifts``) scores a detector against "the clip
was in sync before we shifted it". When a detector is off by the same amount at every
injected shift, either the detector is biased on that clip or the recording is not in sync.
This script asks the recording itself, without any trained model: the inner-lip opening
(FaceMesh points 13/14, divided by the inter-ocular distance) per video frame, against the
audio's loudness (mean log-mel) per 12.5 ms mel frame; both high-passed and normalised, then
cross-correlated over lags of +-300 ms. The lag of the peak is the clip's offset by this
measure (positive = the audio's loudness follows the mouth later = audio late).

Speech has a natural lead of the mouth over the sound, so this measure has a bias of its
own, constant across clips of one kind; what is compared is how the clips differ. With
``--compare`` (a ``bench.detect_shifts`` JSON), each clip's detection at zero injected shift
is printed beside it, with their correlation over the clips.
"""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
from tqdm import tqdm

from bench.common import machine
from modeformer_jax import cli, errors, media
from modeformer_jax.media import crops, features

_UPPER_INNER, _LOWER_INNER = 13, 14
MEL_HOP_S = features.MEL_CONFIG["hop_length"] / features.SAMPLE_RATE


def mouth_opening(frames: np.ndarray) -> np.ndarray:
  """Inner-lip opening / inter-ocular distance per frame (NaN where no face is found)."""
  mp = crops.mediapipe()
  out = np.full(len(frames), np.nan)
  with mp.solutions.face_mesh.FaceMesh(
      static_image_mode=False, max_num_faces=1, refine_landmarks=False,
      min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
    for i, frame in enumerate(frames):
      res = mesh.process(np.ascontiguousarray(frame))
      if not res.multi_face_landmarks:
        continue
      p = np.array([(q.x, q.y) for q in res.multi_face_landmarks[0].landmark])
      p *= (frame.shape[1], frame.shape[0])
      iod = np.hypot(*(p[list(crops.LEFT_EYE)].mean(0) - p[list(crops.RIGHT_EYE)].mean(0)))
      out[i] = np.hypot(*(p[_LOWER_INNER] - p[_UPPER_INNER])) / max(iod, 1e-6)
  return out


def _high_pass(x: np.ndarray, width: int) -> np.ndarray:
  """x minus its moving average over ``width`` samples, scaled to unit variance."""
  kernel = np.ones(width) / width
  pad = np.pad(x, width // 2, mode="edge")
  y = x - np.convolve(pad, kernel, mode="valid")[:x.size]
  return (y - y.mean()) / max(float(y.std()), 1e-9)


def sync_lag(opening: np.ndarray, loudness: np.ndarray, fps: float = features.FPS,
             max_lag_s: float = 0.3) -> tuple[float, float]:
  """(lag in ms, peak correlation): audio loudness against mouth opening on the mel clock.

  The opening (one value per video frame, at the frame's start time) is interpolated onto
  the mel frames' times, the same clock the model's windows use (mel frame ``3.2 i`` for
  video frame ``i``).
  """
  t_mel = np.arange(loudness.size) * MEL_HOP_S
  t_vid = np.arange(opening.size) / fps
  ok = np.isfinite(opening)
  if ok.sum() < 10:
    raise ValueError("the face was found in fewer than 10 frames")
  inside = t_mel <= t_vid[-1]
  a = np.interp(t_mel[inside], t_vid[ok], opening[ok])
  e = loudness[inside]
  width = round(0.5 / MEL_HOP_S)
  a, e = _high_pass(a, width), _high_pass(e, width)
  max_lag = round(max_lag_s / MEL_HOP_S)
  lags = np.arange(-max_lag, max_lag + 1)
  # corr(L) = mean_t a(t) e(t + L): a peak at L > 0 means the sound follows the mouth.
  corr = np.array([np.mean(a[max(0, -k):a.size - max(0, k)] * e[max(0, k):e.size - max(0, -k)])
                   for k in lags])
  best = int(np.argmax(corr))
  if best in (0, corr.size - 1):
    raise ValueError(f"no correlation peak inside +-{max_lag_s * 1000:.0f} ms "
                     f"(the best is at the edge, r = {corr[best]:.2f})")
  # Parabolic interpolation of the peak: sub-hop precision.
  y0, y1, y2 = corr[best - 1:best + 2]
  den = y0 - 2 * y1 + y2
  frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
  return float((lags[best] + frac) * MEL_HOP_S * 1000.0), float(corr[best])


def measure(path: str) -> dict:
  """Decodes ``path`` and returns its mouth/loudness lag (ms) and peak correlation."""
  dec = media.decode(path)
  opening = mouth_opening(dec.frames)
  loudness = features.log_mel(dec.audio, num_frames=len(dec.frames)).mean(axis=0)
  lag_ms, peak = sync_lag(opening, loudness)
  return {"file": path, "lag_ms": lag_ms, "lag_frames": lag_ms / 1000.0 * features.FPS,
          "peak_correlation": peak, "face_frames": float(np.isfinite(opening).mean())}


def plot_against_model(rows: list[dict], path: str, summary: dict) -> str:
  """Scatter of the model's whole-frame answer against the model-free lag, one dot a clip."""
  from modeformer_jax.evaluation import plots
  fig, (ax,) = plots._new_figure(size=(6.5, 5.0))
  pts = [r for r in rows if r["model_frames"] is not None]
  x = np.array([r["lag_frames"] for r in pts])
  y = np.array([r["model_frames"] for r in pts])
  ax.scatter(x, y, s=30)
  for r, xi, yi in zip(pts, x, y):
    ax.annotate(pathlib.Path(r["file"]).parent.name + "/" + pathlib.Path(r["file"]).stem[:12],
                (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
  lim = max(4.0, float(np.abs(np.concatenate([x, y])).max()) + 0.5)
  ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--", label="equal")
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.axhline(0, color="black", lw=0.5)
  ax.axvline(0, color="black", lw=0.5)
  ax.set_xlabel("mouth opening vs loudness lag (frames, + = audio late; no model)")
  ax.set_ylabel("model's offset at zero injected shift (frames)")
  r = summary.get("pearson_with_model")
  ax.set_title("Each clip's own sync, two ways" + (f" (Pearson r = {r:.2f})" if r else ""))
  ax.legend(loc="upper left", fontsize=8)
  return plots._save(fig, path)


def main(argv: list[str] | None = None) -> None:
  parser = cli.parser(__name__, __doc__.split("\n\n")[0])
  parser.add_argument("videos", nargs="+")
  parser.add_argument("--compare", help="a bench.detect_shifts JSON: its detections at 0")
  parser.add_argument("--json_out")
  parser.add_argument("--plot", help="PNG: the model's frames against this lag, per clip")
  args = parser.parse_args(argv)
  detected = {}
  if args.compare:
    for r in json.loads(pathlib.Path(args.compare).read_text())["rows"]:
      if r["injected"] == 0:
        detected[pathlib.Path(r["file"]).resolve()] = r["detected"]
  rows, failed = [], []
  for path in tqdm(args.videos, desc="clips", unit="clip"):
    try:
      row = measure(path)
    except (errors.FeatureError, ValueError) as e:
      failed.append({"file": path, "error": str(e)})
      continue
    row["model_frames"] = detected.get(pathlib.Path(path).resolve())
    rows.append(row)
  print(f"# {machine()}")
  print(f"{'file':48s} {'lag ms':>8s} {'frames':>7s} {'corr':>5s} {'model':>6s}")
  for r in rows:
    m = "" if r["model_frames"] is None else f"{r['model_frames']:+d}"
    print(f"{r['file'][-48:]:48s} {r['lag_ms']:+8.1f} {r['lag_frames']:+7.2f} "
          f"{r['peak_correlation']:5.2f} {m:>6s}")
  for f in failed:
    print(f"skipped {f['file']}: {f['error']}", file=sys.stderr)
  both = [(r["lag_frames"], r["model_frames"]) for r in rows if r["model_frames"] is not None]
  summary = {"clips": len(rows), "skipped": len(failed),
             "median_lag_ms": float(np.median([r["lag_ms"] for r in rows])) if rows else None}
  if len(both) >= 3:
    x, y = np.array(both, dtype=float).T
    summary["pearson_with_model"] = float(np.corrcoef(x, y)[0, 1])
    rank = lambda v: np.argsort(np.argsort(v))
    summary["spearman_with_model"] = float(np.corrcoef(rank(x), rank(y))[0, 1])
  print(json.dumps(summary))
  if args.plot and len(both) >= 1:
    plot_against_model(rows, args.plot, summary)
  if args.json_out:
    pathlib.Path(args.json_out).write_text(json.dumps(
        {"machine": machine(), "summary": summary, "rows": rows, "skipped": failed}, indent=1))


if __name__ == "__main__":
  main()
