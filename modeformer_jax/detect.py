"""Audio-video offset detection: ``python -m modeformer_jax.detect``.

  python -m modeformer_jax.detect my_video.mp4                   # the shipped model
  python -m modeformer_jax.detect a.mp4 b.mov --checkpoint runs/x --json
  python -m modeformer_jax.detect a.mp4 --fix a_fixed.mp4         # remux with audio moved
  python -m modeformer_jax.detect --prepared /data/lrs2_prepared:test --checkpoint runs/x

For every video frame the best audio offset in -15..+15 frames is found; the predicted
offset is the largest peak of the histogram of those (ties broken by the averaged score
curve), reported in frames and milliseconds. **Positive = audio late** (the sound of frame
i is heard at frame i + k). The confidence is the averaged score at the predicted offset
minus the median of the averaged curve (SyncNet's median-minus-best margin, for
similarities). A PNG of the histogram and curve is written per video; over a prepared
split the dataset-level histogram (the paper's Fig. 4) is written too.

Without ``--checkpoint`` the model shipped in ``modeformer_jax/weights/grid_s1`` is used;
read its MODEL_CARD.md: it was trained on ONE speaker of the GRID corpus.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

from modeformer_jax import (checkpoints, evaluation, export, features, plots, records,
                            sync_eval)

SHIPPED = pathlib.Path(__file__).resolve().parent / "weights" / "grid_s1"


def guess_layout(path: str) -> str:
  """'crop' for square face-crop videos (<= 256 px, as LRS2/LRS3/VoxCeleb2), else 'raw'."""
  import av
  with av.open(str(path)) as c:
    if not c.streams.video:
      raise features.FeatureError(str(path), "no_video", "no video stream")
    s = c.streams.video[0]
    w, h = s.codec_context.width, s.codec_context.height
  return "crop" if (w == h and w <= 256) else "raw"


def resolve_layout(path: str, layout: str = "auto", model_layout: str | None = None) -> str:
  """The lip-crop layout to use for ``path``.

  An explicit ``layout`` wins. For 'auto': a model trained on face-detected crops
  (``model_layout == 'raw'``, e.g. the shipped GRID model) gets face detection on every
  video, because the crop geometry must match training (on the shared real clips the
  shipped model's exact-detection rate went from 0.4% with fixed crop boxes to 26% with
  face detection; bench/RESULTS.md). Otherwise the layout is guessed from the frame size.
  """
  if layout != "auto":
    return layout
  if model_layout == "raw":
    return "raw"
  return guess_layout(path)


def trained_layout(checkpoint: str | pathlib.Path, meta: dict) -> str | None:
  """The feature layout a model was trained with: from an export's ``model.json``, else
  from a training workdir's data manifest (None when unknown)."""
  return meta.get("input_layout") or export.training_layout(str(checkpoint))


def detect_file(embedder: evaluation.Embedder, path: str, layout: str = "auto",
                audio_shift_frames: int = 0) -> dict[str, Any]:
  """Detects the offset of one video file (raises ``FeatureError`` on bad input)."""
  layout = guess_layout(path) if layout == "auto" else layout
  clip = features.extract_clip(path, layout=layout, min_frames=features.MIN_FRAMES,
                               audio_shift_frames=audio_shift_frames)
  return detect_arrays(embedder, clip.lips, clip.mel, name=str(path)) | {"layout": layout}


def detect_shifted(embedder: evaluation.Embedder, path: str, shifts: Sequence[int],
                   layout: str = "auto") -> list[dict[str, Any]]:
  """Detects the offset of ``path`` with its audio delayed by each of ``shifts`` frames.

  The video is decoded and lip-cropped once; each shift goes through the same
  ``features.shift_audio`` + ``features.log_mel`` as ``extract_clip(audio_shift_frames=k)``,
  so this is ``[detect_file(..., audio_shift_frames=k) for k in shifts]`` without
  re-decoding, re-detecting faces or re-embedding the video per shift (only the audio
  changes). Each result gains ``injected``.
  """
  layout = guess_layout(path) if layout == "auto" else layout
  dec = features.decode(path)
  clip = features.extract_clip(path, layout=layout, min_frames=features.MIN_FRAMES,
                               decoded=dec)
  v = embedder.video(evaluation.video_windows(clip.lips))
  out = []
  for k in shifts:
    mel = features.log_mel(features.shift_audio(dec.audio, k) if k else dec.audio,
                           clip.num_frames)
    a = embedder.audio(evaluation.audio_windows(mel, len(v)))
    (scores,) = evaluation.embedded_scores(v, a, [len(v)])
    out.append(sync_eval.detect_offset(scores)
               | {"name": str(path), "num_frames": int(clip.lips.shape[0]), "layout": layout,
                  "injected": int(k)})
  return out


def detect_arrays(embedder: evaluation.Embedder, lips: np.ndarray, mel: np.ndarray,
                  name: str = "") -> dict[str, Any]:
  """Offset detection from lip crops and mel (the shared feature format)."""
  ((_, scores, reason),) = list(evaluation.score_clips(embedder, [(name, lips, mel)]))
  if scores is None:
    raise ValueError(reason)
  result = sync_eval.detect_offset(scores)
  result["name"] = name
  result["num_frames"] = int(lips.shape[0])
  return result


def fix_offset(src: str, dst: str, offset_frames: int) -> None:
  """Copies ``src`` to ``dst`` with the audio moved earlier by ``offset_frames`` (no re-encode).

  Packets are copied as they are; only audio timestamps change, so the video stream is
  bit-identical. Audio that would start before zero is dropped.
  """
  import av
  from fractions import Fraction
  shift_s = offset_frames / features.FPS
  with av.open(src) as inp, av.open(dst, "w") as out:
    vin = inp.streams.video[0]
    ain = inp.streams.audio[0] if inp.streams.audio else None
    vout = out.add_stream_from_template(vin)
    aout = out.add_stream_from_template(ain) if ain is not None else None
    streams = [vin] + ([ain] if ain is not None else [])
    for pkt in inp.demux(*streams):
      if pkt.dts is None:
        continue
      if pkt.stream is vin:
        pkt.stream = vout
      else:
        delta = int(round(shift_s / Fraction(pkt.time_base)))
        pkt.pts = pkt.pts - delta if pkt.pts is not None else None
        pkt.dts = pkt.dts - delta
        if pkt.dts < 0 or (pkt.pts is not None and pkt.pts < 0):
          continue
        pkt.stream = aout
      out.mux(pkt)


def _describe(r: dict) -> str:
  k = r["offset_frames"]
  side = "audio late" if k > 0 else ("audio early" if k < 0 else "in sync")
  return (f"{r['name']}: offset {k:+d} frames ({r['offset_ms']:+.0f} ms, {side}), "
          f"confidence {r['confidence']:.3f}, {r['vote_fraction']:.0%} of frames agree")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("videos", nargs="*", help="video files (mp4/mov/avi/mkv/mpg)")
  parser.add_argument("--checkpoint", default=None,
                      help=f"workdir / checkpoint / exported model (default: {SHIPPED})")
  parser.add_argument("--layout", default="auto", choices=["auto", *features.LAYOUT_MODES],
                      help="'crop' for face-cropped videos, 'raw' to detect the face; 'auto' "
                      "uses the model's training layout when it was 'raw', else guesses from "
                      "the frame size")
  parser.add_argument("--prepared", default=None,
                      help="DIR:SPLIT of a prepared dataset: the dataset-level histogram")
  parser.add_argument("--max_clips", type=int, default=None)
  parser.add_argument("--out", default="detect_out", help="folder for the PNGs")
  parser.add_argument("--json", action="store_true", help="print JSON only")
  parser.add_argument("--fix", default=None, help="write a copy with the audio re-aligned "
                      "(one input video only)")
  args = parser.parse_args(argv)
  if not args.videos and not args.prepared:
    parser.error("give video files or --prepared DIR:SPLIT")
  if args.fix and len(args.videos) != 1:
    parser.error("--fix needs exactly one input video")
  ckpt = args.checkpoint or SHIPPED
  if args.checkpoint is None:
    if not (SHIPPED / "model.json").exists():
      parser.error(f"no shipped model at {SHIPPED}; pass --checkpoint")
    if not args.json:
      print(f"using the shipped model {SHIPPED} (trained on one GRID speaker; see "
            "MODEL_CARD.md there)", file=sys.stderr)
  model, params, meta = checkpoints.load_params(ckpt)
  embedder = evaluation.Embedder(model, params, chunk=128)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  results, failed = [], 0
  model_layout = trained_layout(ckpt, meta)
  for path in args.videos:
    try:
      r = detect_file(embedder, path, resolve_layout(path, args.layout, model_layout))
    except (features.FeatureError, ValueError) as e:
      failed += 1
      results.append({"name": str(path), "error": str(e)})
      if not args.json:
        print(f"error: {e}", file=sys.stderr)
      continue
    r["plot"] = plots.plot_offset(r, out / (pathlib.Path(path).stem + "_offset.png"),
                                  title=pathlib.Path(path).name)
    results.append(r)
    if not args.json:
      print(_describe(r))
    if args.fix:
      fix_offset(path, args.fix, r["offset_frames"])
      if not args.json:
        print(f"wrote {args.fix} with the audio moved by {-r['offset_ms']:+.0f} ms")
  if args.prepared:
    data_dir, _, split = args.prepared.rpartition(":")
    per_clip = []
    from tqdm import tqdm
    clips = evaluation.record_clips(data_dir, split, max_clips=args.max_clips)
    n = len(records.open_split(data_dir, split))
    for name, scores, reason in tqdm(evaluation.score_clips(embedder, clips), desc="detect",
                                     total=n if args.max_clips is None else min(n, args.max_clips),
                                     disable=args.json):
      if scores is not None:
        per_clip.append(sync_eval.detect_offset(scores) | {"name": name})
    hist = sync_eval.dataset_histogram(per_clip)
    hist["plot"] = plots.plot_offset_histogram(hist, out / f"{split}_offset_histogram.png")
    results.append({"dataset": args.prepared, "histogram": hist})
    if not args.json:
      print(f"{args.prepared}: {hist['num_clips']} clips, mean offset "
            f"{hist['mean_offset']:+.2f} frames; histogram in {hist['plot']}")
  if args.json:
    print(json.dumps(sync_eval.jsonable(results), indent=1))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
