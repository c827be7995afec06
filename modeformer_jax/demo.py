"""The README's main job: ``make demo``.

At this stage of the project the demo runs what exists: it builds the tiny ModEFormer,
embeds randomly generated inputs (NOT real or synthetic speech) and prints the shapes,
scores and timings. Later stages replace this with generate -> prepare -> train -> eval.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp

from configs.modeformer import get_config
from modeformer_jax.models import ModEFormer, count_params


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="demo_out")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  print("NOTE: the demo currently runs the untrained tiny model on randomly generated "
        "inputs; no data, training or evaluation yet.")
  model = ModEFormer(get_config("tiny").model)
  params = model.init(jax.random.key(0))
  mel = jax.random.normal(jax.random.key(1), (8, 80, 16))
  frames = jax.random.randint(jax.random.key(2), (8, 5, 48, 96, 3), 0, 255).astype(jnp.uint8)
  t0 = time.perf_counter()
  a = jax.jit(model.embed_audio)(params, mel)
  v = jax.jit(model.embed_video)(params, frames)
  s = model.sync_score(a, v)
  jax.block_until_ready(s)
  summary = dict(params=count_params(params), audio_emb=list(a.shape),
                 video_emb=list(v.shape), scores=[round(float(x), 4) for x in s],
                 seconds=round(time.perf_counter() - t0, 2))
  print(json.dumps(summary, indent=1))
  (out / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
