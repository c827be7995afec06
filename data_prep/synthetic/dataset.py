"""The dataset: LRS2 layout, speaker splits, resumable parallel generation, and the CLI.

Layout (what ``data_prep.prepare --layout lrs2`` reads)::

  OUT/mvlrs_v1/main/spk007v001/00003.mp4     h264 yuv420p 160x160 @ 25 fps + AAC 16 kHz mono
  OUT/mvlrs_v1/pretrain/                     empty (LRS2 has it; nothing synthetic goes there)
  OUT/{pretrain,train,val,test}.txt          one ``<id>/<nnnnn>`` per line, sorted
  OUT/speakers.json                          seed, audio offset, speaker parameters and splits
  OUT/synthetic_config.json                  the generation arguments (checked on resume)

``<id>`` is ``spk{speaker:03d}v{video:03d}``: a speaker's clips are grouped into videos of up to
``clips_per_video`` clips that share a scene (background, framing, lighting, noise, room).
Speakers ``0 .. num_speakers-1`` are train speakers, the next ``num_test_speakers`` are test
speakers and the next ``num_val_speakers`` validation speakers, so test and val speakers never
appear in training. With ``num_val_speakers=0`` the last clip of every train speaker is held
out as validation instead. ``speakers.json`` is written last: its presence marks a finished
set. A rerun keeps the clips already written (an interrupted run resumes); a rerun with other
arguments is refused.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import sys
import time

import cv2
import tqdm

from data_prep.synthetic.clip import render_clip
from data_prep.synthetic.constants import FPS, FRAME_SIZE, SAMPLE_RATE
from data_prep.synthetic.encode import write_mp4
from data_prep.synthetic.seeds import keyed_rng
from data_prep.synthetic.speakers import make_scene, make_speaker
from modeformer_jax import cli

FORMAT = "modeformer-synthetic-v1"


def clip_name(speaker: int, video: int, index: int) -> str:
  """LRS2-style ``<id>/<nnnnn>`` with ``<id> = spk{speaker:03d}v{video:03d}``."""
  return f"spk{speaker:03d}v{video:03d}/{index + 1:05d}"


def _clip_job(job: dict) -> dict:
  path = pathlib.Path(job["path"])
  if not path.exists():
    frames, audio = render_clip(job["speaker"], job["seconds"], job["seed"],
                                job["audio_offset_frames"], job["scene"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames, audio, job["crf"])
  return {"name": job["name"], "bytes": path.stat().st_size}


def _init_worker() -> None:
  cv2.setNumThreads(1)   # the pool provides the parallelism


def generate_dataset(out_dir: str | os.PathLike, num_speakers: int = 24,
                     num_test_speakers: int = 6, num_val_speakers: int = 4,
                     clips_per_speaker: int = 10, min_seconds: float = 3.0,
                     max_seconds: float = 5.0, seed: int = 0, audio_offset_frames: int = 0,
                     workers: int = 2, clips_per_video: int = 5, crf: int = 20,
                     progress: bool = True) -> dict:
  """Writes the dataset to ``out_dir`` (see the module docstring); returns a summary dict.

  ``num_speakers`` counts train speakers; test and val speakers come on top. Clips already
  on disk are kept (they are deterministic), so an interrupted run resumes.
  """
  for name, v in (("num_speakers", num_speakers), ("clips_per_speaker", clips_per_speaker),
                  ("clips_per_video", clips_per_video)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}")
  if num_test_speakers < 0 or num_val_speakers < 0:
    raise ValueError("num_test_speakers and num_val_speakers must be >= 0")
  if not 0 < min_seconds <= max_seconds:
    raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
  if num_val_speakers == 0 and clips_per_speaker < 2:
    raise ValueError("num_val_speakers=0 holds out one clip per train speaker: "
                     "clips_per_speaker must be >= 2")
  t_start = time.perf_counter()
  out = pathlib.Path(out_dir)
  # Resuming reuses clips already on disk, which is only right for the same arguments.
  config = {"format": FORMAT, "num_speakers": num_speakers,
            "num_test_speakers": num_test_speakers, "num_val_speakers": num_val_speakers,
            "clips_per_speaker": clips_per_speaker, "clips_per_video": clips_per_video,
            "min_seconds": float(min_seconds), "max_seconds": float(max_seconds),
            "seed": int(seed), "audio_offset_frames": int(audio_offset_frames),
            "crf": int(crf)}
  config_path = out / "synthetic_config.json"
  if config_path.exists():
    old = json.loads(config_path.read_text())
    changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if changed:
      raise ValueError(f"{config_path}: {out} holds a synthetic set made with other "
                       f"arguments ({', '.join(changed)}); use a new --out folder")
  out.mkdir(parents=True, exist_ok=True)
  config_path.write_text(json.dumps(config, indent=1))
  main_dir = out / "mvlrs_v1" / "main"
  main_dir.mkdir(parents=True, exist_ok=True)
  (out / "mvlrs_v1" / "pretrain").mkdir(parents=True, exist_ok=True)

  splits = (["train"] * num_speakers + ["test"] * num_test_speakers + ["val"] * num_val_speakers)
  lists: dict[str, list[str]] = {"pretrain": [], "train": [], "val": [], "test": []}
  speakers, jobs = [], []
  for spk, split in enumerate(splits):
    sp = make_speaker(seed, spk)
    scenes = {}
    clips = []
    for c in range(clips_per_speaker):
      video, index = divmod(c, clips_per_video)
      if video not in scenes:
        scenes[video] = make_scene(seed, spk, video)
      clip_seed = [seed, spk, 2, c]
      num_frames = int(round(keyed_rng(*clip_seed, 99).uniform(min_seconds, max_seconds) * FPS))
      name = clip_name(spk, video, index)
      clip_split = split
      if split == "train" and num_val_speakers == 0 and c == clips_per_speaker - 1:
        clip_split = "val"
      lists[clip_split].append(name)
      clips.append({"name": name, "split": clip_split, "frames": num_frames,
                    "seconds": num_frames / FPS})
      jobs.append({"path": str(main_dir / f"{name}.mp4"), "name": name,
                   "speaker": sp.asdict(), "scene": scenes[video].asdict(),
                   "seconds": num_frames / FPS, "seed": clip_seed,
                   "audio_offset_frames": int(audio_offset_frames), "crf": int(crf)})
    speakers.append({"speaker": spk, "split": split, "params": sp.asdict(),
                     "scenes": {str(v): s.asdict() for v, s in scenes.items()}, "clips": clips})

  total_bytes = 0
  bar = tqdm.tqdm(total=len(jobs), desc="synthetic clips", unit="clip", disable=not progress)
  if workers <= 1:
    _init_worker()
    results = map(_clip_job, jobs)
    for r in results:
      total_bytes += r["bytes"]
      bar.update()
  else:
    # spawn, not fork: the caller (the demo) may already have started JAX's threads.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker) as pool:
      for r in pool.imap_unordered(_clip_job, jobs, chunksize=1):
        total_bytes += r["bytes"]
        bar.update()
  bar.close()

  for split, names in lists.items():
    (out / f"{split}.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
  seconds = sum(c["seconds"] for s in speakers for c in s["clips"])
  meta = {
      "format": FORMAT, "seed": int(seed), "audio_offset_frames": int(audio_offset_frames),
      "fps": FPS, "sample_rate": SAMPLE_RATE, "frame_size": FRAME_SIZE,
      "video_codec": "h264 yuv420p", "crf": int(crf), "audio_codec": "aac mono",
      "num_speakers": num_speakers, "num_test_speakers": num_test_speakers,
      "num_val_speakers": num_val_speakers, "clips_per_speaker": clips_per_speaker,
      "clips_per_video": clips_per_video, "min_seconds": min_seconds,
      "max_seconds": max_seconds,
      "val": "separate speakers" if num_val_speakers else "last clip of each train speaker",
      "counts": {k: len(v) for k, v in lists.items()},
      "speakers": speakers,
  }
  tmp = out / "speakers.json.part"
  tmp.write_text(json.dumps(meta, indent=1))
  os.replace(tmp, out / "speakers.json")
  return {"out": str(out), "clips": len(jobs), "counts": meta["counts"],
          "seconds_of_video": round(seconds, 2), "bytes": total_bytes,
          "wall_seconds": round(time.perf_counter() - t_start, 2)}


def main(argv: list[str] | None = None) -> dict:
  """CLI entry point of ``python -m data_prep.synthetic`` (see the module docstring)."""
  p = cli.parser("data_prep.synthetic", "Write the synthetic talking-mouth dataset (LRS2 "
                 "layout, h264/aac mp4).")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--num_speakers", type=int, default=24, help="train speakers")
  p.add_argument("--num_test_speakers", type=int, default=6)
  p.add_argument("--num_val_speakers", type=int, default=4,
                 help="0: hold out the last clip of each train speaker as val instead")
  p.add_argument("--clips_per_speaker", type=int, default=10)
  p.add_argument("--clips_per_video", type=int, default=5)
  p.add_argument("--min_seconds", type=float, default=3.0)
  p.add_argument("--max_seconds", type=float, default=5.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--audio_offset_frames", type=int, default=0,
                 help="delay of the audio against the video for every clip (+: audio late)")
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--crf", type=int, default=20, help="h264 quality (lower: better)")
  a = p.parse_args(argv)
  summary = generate_dataset(
      a.out, num_speakers=a.num_speakers, num_test_speakers=a.num_test_speakers,
      num_val_speakers=a.num_val_speakers, clips_per_speaker=a.clips_per_speaker,
      min_seconds=a.min_seconds, max_seconds=a.max_seconds, seed=a.seed,
      audio_offset_frames=a.audio_offset_frames, workers=a.workers,
      clips_per_video=a.clips_per_video, crf=a.crf)
  print(json.dumps(summary), file=sys.stdout)
  return summary

