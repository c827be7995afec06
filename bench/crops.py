"""Lip crops on real video: Haar face boxes vs lip landmarks, coverage, placement and speed.

  python -m bench.crops --src ../shared/data/real_clips --out bench/crops

For every clip (first ``--max_frames`` frames) both detector crops are computed. Placement
is judged against an independent reference, MediaPipe's BlazeFace mouth key point (a
different model from the FaceMesh landmarks the crop uses): a crop is *misplaced* when its
centre is more than 12% of the BlazeFace face width from that point (the measure of
../shared/notes/face_detectors.md). Frames where BlazeFace finds no face are not judged.
Coverage is the share of frames where the method's own detector found the face (the rest
are interpolated). Writes ``crops_<clip>.png`` side by side (frame, Haar crop, landmark
crop) for the clips named in ``--show`` and prints a table.
"""
from __future__ import annotations

import pathlib
import time

import numpy as np

from bench.common import machine
from modeformer_jax import cli, errors, media
from modeformer_jax.media import crops
from modeformer_jax.model.input_spec import CropSpec

MISPLACED = 0.12


def blazeface_mouths(frames: np.ndarray) -> np.ndarray:
  """``[T, 3]``: mouth x, y and face width from BlazeFace (NaN where no face)."""
  mp = crops.mediapipe()
  out = np.full((frames.shape[0], 3), np.nan)
  h, w = frames.shape[1:3]
  with mp.solutions.face_detection.FaceDetection(
      model_selection=0, min_detection_confidence=0.5) as det:
    for i, f in enumerate(frames):
      res = det.process(np.ascontiguousarray(f))
      if res.detections:
        d = max(res.detections, key=lambda d: d.location_data.relative_bounding_box.width)
        kp = d.location_data.relative_keypoints[3]
        out[i] = (kp.x * w, kp.y * h, d.location_data.relative_bounding_box.width * w)
  return out


def judge(centre: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
  """(misplaced, judged) frames of crop centres ``[T, 2]`` against reference mouths."""
  ok = ~np.isnan(ref[:, 0]) & ~np.isnan(centre[:, 0])
  dist = np.hypot(*(centre[ok] - ref[ok, :2]).T) / ref[ok, 2]
  return int((dist > MISPLACED).sum()), int(ok.sum())


def main(argv: list[str] | None = None) -> None:
  p = cli.parser(__name__, __doc__.split("\n\n")[0])
  p.add_argument("--src", default="../shared/data/real_clips")
  p.add_argument("--out", default="bench/crops")
  p.add_argument("--max_frames", type=int, default=200)
  p.add_argument("--show", default="lrs2_crop/00004.mp4,raw/astorfi_sample_2997fps.mp4,"
                 "lrs2_crop/00008.mp4,lrs2_crop/00009.mp4",
                 help="clips (relative to --src) to draw side by side")
  a = p.parse_args(argv)
  src, out = pathlib.Path(a.src), pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  show = set(a.show.split(","))
  print(machine())
  rows, tot = [], {"haar": [0, 0, 0, 0, 0.0], "landmarks": [0, 0, 0, 0, 0.0]}
  for path in sorted(src.glob("*/*.mp4")):
    rel = f"{path.parent.name}/{path.name}"
    frames = media.decode(str(path)).frames[:a.max_frames]
    ref = blazeface_mouths(frames)
    t0 = time.perf_counter()
    try:
      track = crops.haar_track(frames)
      indices, cand = crops.detect_faces(frames)
      haar_found = float(np.mean([len(c) > 0 for c in cand]))
      haar_centre = crops.haar_crop_centre(track)
    except errors.NoFaceError:
      haar_found, haar_centre = 0.0, np.full((len(frames), 2), np.nan)
    t_haar = time.perf_counter() - t0
    t0 = time.perf_counter()
    geom = crops.face_geometry(frames)
    lm_track, _ = crops.landmark_track(frames, CropSpec("landmarks").options)
    t_lm = time.perf_counter() - t0
    lm_found = float(np.mean(~np.isnan(geom[:, 0])))
    row = {"clip": rel, "frames": len(frames)}
    for name, found, centre, sec in (("haar", haar_found, haar_centre, t_haar),
                                     ("landmarks", lm_found, lm_track[:, :2], t_lm)):
      bad, judged = judge(centre, ref)
      row[name] = (found, bad, judged, len(frames) / sec)
      acc = tot[name]
      acc[0] += found * len(frames)
      acc[1] += len(frames)
      acc[2] += bad
      acc[3] += judged
      acc[4] += sec
    rows.append(row)
    print(f"{rel:40s} {len(frames):4d} frames | haar found {100 * row['haar'][0]:5.1f}% "
          f"misplaced {row['haar'][1]:3d}/{row['haar'][2]:3d} | landmarks found "
          f"{100 * row['landmarks'][0]:5.1f}% misplaced {row['landmarks'][1]:3d}/"
          f"{row['landmarks'][2]:3d}")
    if rel in show:
      _draw(frames, rel, out / f"crops_{path.parent.name}_{path.stem}.png")
  print("\nmethod      frames with a face   misplaced (vs BlazeFace mouth)   frames/s")
  for name, (found, n, bad, judged, sec) in tot.items():
    print(f"{name:10s}  {100 * found / n:6.2f}% of {n}       {100 * bad / max(judged, 1):5.2f}% "
          f"({bad} of {judged})              {n / sec:6.0f}")


def _draw(frames: np.ndarray, rel: str, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  try:
    haar = crops.lip_crop(frames, CropSpec("haar"))
  except errors.NoFaceError:
    haar = np.zeros((len(frames), 48, 96, 3), np.uint8)
  lm = crops.lip_crop(frames, CropSpec("landmarks"))
  picks = np.linspace(0, len(frames) - 1, 5).astype(int)
  fig, axes = plt.subplots(3, 5, figsize=(11, 5.2))
  for j, i in enumerate(picks):
    for r, (img, title) in enumerate(((frames[i], f"frame {i}"), (haar[i], "Haar"),
                                      (lm[i], "landmarks"))):
      axes[r, j].imshow(img)
      axes[r, j].set_title(title, fontsize=8)
      axes[r, j].axis("off")
  fig.suptitle(rel)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


if __name__ == "__main__":
  main()
