"""Export a training checkpoint as an inference-only model directory.

  python -m modeformer_jax.export --checkpoint runs/grid_s1 --which latest \\
      --out modeformer_jax/weights/grid_s1 --set trained_on="GRID s1, 700 utterances"

The output holds ``model.json`` (the model config, ``input_spec``: the features the model
was trained on, as recorded in the checkpoint, plus the ``--set`` fields, e.g. what it was
trained on) and ``params/`` (an orbax checkpoint of the parameters only, no optimizer
state, no pickle). ``detect``, ``eval`` and ``checkpoints.load_model`` read it.
"""
from __future__ import annotations

import json

from modeformer_jax import cli
from modeformer_jax.model import checkpoints


def main(argv: list[str] | None = None) -> None:
  parser = cli.parser(__name__, __doc__)
  parser.add_argument("--checkpoint", required=True, help="workdir or <workdir>/checkpoints/N")
  parser.add_argument("--which", default="latest", choices=["latest", "best"])
  parser.add_argument("--out", required=True)
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="extra model.json fields (VALUE parsed as JSON when it can be)")
  args = parser.parse_args(argv)
  model, params, meta = checkpoints.load_model(args.checkpoint, which=args.which)
  card = {"exported_from": str(args.checkpoint), "step": meta.get("step")}
  if not meta.get("input_spec"):
    parser.error(f"{args.checkpoint} records no input spec (written by training since specs "
                 "exist); retrain or export from a newer checkpoint")
  card["input_spec"] = meta["input_spec"]
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
