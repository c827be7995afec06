"""Export a training checkpoint as an inference-only model directory.

  python -m modeformer_jax.export --checkpoint runs/grid_s1 --which latest \\
      --out modeformer_jax/weights/grid_s1 --set trained_on="GRID s1, 700 utterances"

The output holds ``model.json`` (the model config, ``input_layout``: the lip-crop layout of
the training data, read from the run's prepared manifest, plus the ``--set`` fields, e.g.
what it was trained on) and ``params/`` (an orbax checkpoint of the parameters only, no optimizer
state, no pickle). ``detect``, ``eval`` and ``checkpoints.load_params`` read it.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from modeformer_jax import checkpoints, records


def training_layout(checkpoint: str) -> str | None:
  """The feature layout of the data a training workdir used (None when unknown)."""
  path = pathlib.Path(checkpoint)
  workdir = path.parent.parent if path.parent.name == "checkpoints" else path
  try:
    config = json.loads((workdir / "config.json").read_text())
    return records.read_manifest(config["data"]["dir"])["features"]["feature_layout"]
  except (OSError, KeyError, TypeError, ValueError):
    return None


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", required=True, help="workdir or <workdir>/checkpoints/N")
  parser.add_argument("--which", default="latest", choices=["latest", "best"])
  parser.add_argument("--out", required=True)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="extra model.json fields (VALUE parsed as JSON when it can be)")
  args = parser.parse_args(argv)
  model, params, meta = checkpoints.load_params(args.checkpoint, which=args.which)
  card = {"exported_from": str(args.checkpoint), "step": meta.get("step")}
  layout = training_layout(args.checkpoint)
  if layout is not None:
    card["input_layout"] = layout
  for item in args.set:
    key, sep, value = item.partition("=")
    if not sep:
      parser.error(f"--set needs KEY=VALUE, got {item!r}")
    try:
      card[key] = json.loads(value)
    except json.JSONDecodeError:
      card[key] = value
  out = checkpoints.export_params(args.out, params, model.config.to_dict(), card)
  print(f"wrote {out} (step {card['step']})")


if __name__ == "__main__":
  main()
