"""Audio-video offset detection on a user's file (the library behind ``detect``).

For every 5-frame position the best audio offset in -15..+15 frames is found; the
predicted offset is the largest peak of the histogram of those (ties broken by the averaged
score curve), reported in frames and milliseconds. **Positive = audio late** (the sound of
frame i is heard at frame i + k). The confidence is the averaged score at the predicted
offset minus the median of the averaged curve (SyncNet's median-minus-best margin, for
similarities); see ``protocol.detect_offset``.

A file is cut into lips with the crop the model was trained with (``InputSpec.crop``,
recorded in every checkpoint and exported model); ``resolve_crop`` is the one place that
decides, and warns when a caller asks for something else.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from modeformer_jax import checkpoints, embedding, features, input_spec, protocol, windows
from modeformer_jax.input_spec import CropSpec, InputSpec

log = logging.getLogger("modeformer_jax.offsets")

WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights"
# The model ``detect`` uses without --checkpoint.
DEFAULT_MODEL = WEIGHTS / "faces_v2"
LAYOUT_CHOICES = ("auto", *input_spec.LAYOUT_CROPS)


def resolve_crop(spec: InputSpec, layout: str = "auto", warn: bool = True) -> CropSpec:
  """The crop to use: the model's own for ``'auto'``, else the named layout's.

  An explicit layout whose crop differs from the model's training crop is allowed (for
  experiments) but logged as a warning: the model has never seen such crops.
  """
  if layout == "auto":
    return spec.crop
  crop = input_spec.crop_for_layout(layout)
  if crop != spec.crop and warn:
    log.warning("--layout %s crops lips by %s, but the model was trained on %s; its "
                "accuracy on these crops is unknown", layout, crop.describe(),
                spec.crop.describe())
  return crop


@dataclasses.dataclass
class Detector:
  """A model loaded for offset detection: its embedder and the crop its lips are cut with."""
  checkpoint: str
  embedder: embedding.Embedder
  spec: InputSpec            # what the model was trained on
  crop: CropSpec             # what ``detect_file`` cuts (``resolve_crop``)
  meta: dict


def load_detector(checkpoint: str | pathlib.Path | None = None, *, which: str = "best",
                  layout: str = "auto", chunk: int = 128, warn: bool = True) -> Detector:
  """Loads a detector: the shipped ``DEFAULT_MODEL`` without ``checkpoint``, else an exported
  model, a training workdir (``which`` checkpoint) or a checkpoint directory. The one loader
  of ``detect``, sync QC, the demo and the benchmarks."""
  ckpt = str(checkpoint or DEFAULT_MODEL)
  model, params, meta = checkpoints.load_model(ckpt, which=which)
  if meta.get("input_spec") or layout == "auto":
    spec = input_spec.from_model_meta(meta, ckpt)
  else:   # a checkpoint from before specs were recorded: the layout names its crop
    spec = input_spec.for_layout(layout)
  return Detector(ckpt, embedding.Embedder(model, params, chunk=chunk), spec,
                  resolve_crop(spec, layout, warn), meta)


def detect_arrays(embedder: embedding.Embedder, lips: np.ndarray, mel: np.ndarray,
                  name: str = "") -> dict[str, Any]:
  """Offset detection from lip crops and mel (the shared feature format)."""
  ((_, scores, reason),) = list(embedding.score_clips(embedder, [(name, lips, mel)]))
  if scores is None:
    raise ValueError(reason)
  return protocol.detect_offset(scores) | {"name": name, "num_frames": int(lips.shape[0])}


def detect_file(embedder: embedding.Embedder, path: str, crop: CropSpec,
                audio_shift_frames: int = 0) -> dict[str, Any]:
  """Detects the offset of one video file (raises ``FeatureError`` on bad input)."""
  clip = features.extract_clip(path, crop, audio_shift_frames=audio_shift_frames)
  return detect_arrays(embedder, clip.lips, clip.mel, name=str(path)) | {
      "crop": crop.to_dict(), "audio_source": clip.audio_source, "audio_note": clip.audio_note}


def detect_shifted(embedder: embedding.Embedder, path: str, shifts: Sequence[int],
                   crop: CropSpec) -> list[dict[str, Any]]:
  """Detects the offset of ``path`` with its audio delayed by each of ``shifts`` frames.

  Equal to ``[detect_file(..., audio_shift_frames=k) for k in shifts]`` (each shift goes
  through the same ``features.shift_audio`` + ``features.log_mel``) without re-decoding,
  re-cropping or re-embedding the video per shift: only the audio changes. Each result
  gains ``injected``.
  """
  dec = features.decode(path)
  clip = features.extract_clip(path, crop, decoded=dec)
  v = embedder.video(windows.video_windows(clip.lips))
  out = []
  for k in shifts:
    mel = features.log_mel(features.shift_audio(dec.audio, k) if k else dec.audio,
                           clip.num_frames)
    a = embedder.audio(windows.audio_windows(mel, len(v)))
    (scores,) = embedding.embedded_scores(v, a, [len(v)])
    out.append(protocol.detect_offset(scores)
               | {"name": str(path), "num_frames": int(clip.num_frames),
                  "crop": crop.to_dict(), "injected": int(k),
                  "audio_source": clip.audio_source, "audio_note": clip.audio_note})
  return out


def fix_offset(src: str, dst: str, offset_ms: float) -> None:
  """Copies ``src`` to ``dst`` with the audio moved earlier by ``offset_ms`` (no re-encode).

  ``offset_ms`` is a measured offset (positive = audio late), so the copy plays the audio
  that much earlier. Packets are copied as they are; only audio timestamps change (by the
  nearest tick of the audio stream's time base, one sample for the usual 1/sample-rate
  base), so the video stream is bit-identical. Every audio stream moves (multi-track MOV/MXF
  keep all their tracks). Audio that would start before zero is dropped.
  """
  import av
  shift_s = float(offset_ms) / 1000.0
  with av.open(src) as inp, av.open(dst, "w") as out:
    vin = inp.streams.video[0]
    vout = out.add_stream_from_template(vin)
    aouts = {a.index: out.add_stream_from_template(a) for a in inp.streams.audio}
    for pkt in inp.demux(vin, *inp.streams.audio):
      if pkt.dts is None:
        continue
      if pkt.stream is vin:
        pkt.stream = vout
      else:
        aout = aouts[pkt.stream.index]
        delta = int(round(shift_s / Fraction(pkt.time_base)))
        pkt.pts = pkt.pts - delta if pkt.pts is not None else None
        pkt.dts = pkt.dts - delta
        if pkt.dts < 0 or (pkt.pts is not None and pkt.pts < 0):
          continue
        pkt.stream = aout
      out.mux(pkt)


def describe(r: dict) -> str:
  """One line for a person: the offset, its direction and the confidence."""
  k = r["offset_frames"]
  side = "audio late" if k > 0 else ("audio early" if k < 0 else "in sync")
  audio = f"; audio: {r['audio_note']}" if r.get("audio_note") else ""
  return (f"{r['name']}: offset {k:+d} frames ({r['offset_ms']:+.0f} ms, {side}), "
          f"confidence {r['confidence']:.3f}, {r['vote_fraction']:.0%} of frames agree{audio}")
