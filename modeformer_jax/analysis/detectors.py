"""Loading a detector (``load_detector``): a shipped model, an exported one or a training run,
with the crop it was trained with and the compile cache.

The analysis of a file (plain ``detect`` and ``--qc`` alike) is this package's: one pass
that measures every 5-frame lip window against the audio, summarised over the whole file
(``detect_file``, the plain answer) or over time (``--qc``). **Positive = audio late** (the
sound of frame i is heard at frame i + k).

A file is cut into lips with the crop the model was trained with (``InputSpec.crop``,
recorded in every checkpoint and exported model); ``resolve_crop`` is the one place that
decides, and warns when a caller asks for something else.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib


from modeformer_jax.evaluation import embedding
from modeformer_jax.model import checkpoints, input_spec
from modeformer_jax.model.input_spec import CropSpec, InputSpec

log = logging.getLogger("modeformer_jax.analysis.detectors")

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "weights"
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
  crop: CropSpec             # what the analysis cuts (``resolve_crop``)
  meta: dict


COMPILE_CACHE_ENV = "MODEFORMER_COMPILE_CACHE"


def use_compile_cache() -> str | None:
  """Turns on XLA's persistent compilation cache for the towers, so a second run starts in
  seconds instead of compiling again (~7 s on 2 cores): ``$MODEFORMER_COMPILE_CACHE``, else
  ``~/.cache/modeformer_jax/xla``; ``off`` leaves it off. A cache the user set up already
  (``jax_compilation_cache_dir``) is kept. Returns the folder in use."""
  import os

  import jax
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  folder = os.environ.get(COMPILE_CACHE_ENV) or str(
      pathlib.Path.home() / ".cache" / "modeformer_jax" / "xla")
  if folder.lower() == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return folder


def load_detector(checkpoint: str | pathlib.Path | None = None, *, which: str = "best",
                  layout: str = "auto", chunk: int = 128, warn: bool = True) -> Detector:
  """Loads a detector: the shipped ``DEFAULT_MODEL`` without ``checkpoint``, else an exported
  model, a training workdir (``which`` checkpoint) or a checkpoint directory. The one loader
  of ``detect``, sync QC, the demo and the benchmarks."""
  ckpt = str(checkpoint or DEFAULT_MODEL)
  use_compile_cache()
  model, params, meta = checkpoints.load_model(ckpt, which=which)
  if meta.get("input_spec") or layout == "auto":
    spec = input_spec.from_model_meta(meta, ckpt)
  else:   # a checkpoint from before specs were recorded: the layout names its crop
    spec = input_spec.for_layout(layout)
  return Detector(ckpt, embedding.Embedder(model, params, chunk=chunk), spec,
                  resolve_crop(spec, layout, warn), meta)
