"""Build and check a clip package (``modeformer_jax.data.clip_package``) from prepared shards.

  python -m data_prep.device_package build \\
      --data data/lrc_ar_landmarks:train,data/grid_s1_landmarks:train --out device_pkg
  python -m data_prep.device_package check \\
      --data data/lrc_ar_landmarks:train,data/grid_s1_landmarks:train --package device_pkg

``build`` writes the lips as H.264 (PyAV's libx264, here) and the mel as lzma'd uint8, then
decodes its own lips files with OpenCV (the accelerator machine's decoder) to record each
clip's mean. ``check`` decodes the package as ``train_device`` does and compares it with the
shards, clip by clip: lips within ``LIPS_MIN_PSNR_DB`` / ``LIPS_MAX_MEAN_ABS``, mel within half
its quantisation step; it exits 1 on any difference.

Only ``train`` splits are packaged, and never a dataset cut from ``real_clips`` (the project's
test of people never seen): held-out clips must not reach training.
"""
from __future__ import annotations

import argparse
import json
import lzma
import pathlib
import shlex
import sys
import time
from typing import Any, Iterator

import numpy as np

from modeformer_jax.data import clip_package as cp, records
from modeformer_jax.model import input_spec

HELD_OUT_ROOTS = ("real_clips",)


def parse_sources(data: str) -> list[tuple[str, str]]:
  """``DIR:SPLIT[,DIR:SPLIT...]`` -> ``[(dir, split)]``; only train splits are accepted."""
  out = []
  for item in data.split(","):
    item = item.strip()
    if not item:
      continue
    d, sep, split = item.rpartition(":")
    if not sep or not d:
      raise ValueError(f"{item!r}: expected DIR:SPLIT")
    if split != "train":
      raise ValueError(f"{item}: only train splits are packaged (held-out clips never "
                       "reach training)")
    root = records.read_manifest(d).get("source_root", "")
    if any(part in HELD_OUT_ROOTS for part in pathlib.PurePath(root).parts):
      raise ValueError(f"{d} was prepared from {root}, the test of people never seen")
    out.append((d, split))
  if not out:
    raise ValueError("no DIR:SPLIT given")
  return out


def dataset_name(data_dir: str) -> str:
  return records.read_manifest(data_dir).get("dataset") or pathlib.Path(data_dir).name


def iter_clips(sources: list[tuple[str, str]], limit: int | None = None
               ) -> Iterator[tuple[int, str, np.ndarray, np.ndarray]]:
  """``(source, clip_id, lips, mel)`` of every source in order (``limit`` per source)."""
  for k, (d, split) in enumerate(sources):
    name = dataset_name(d)
    src = records.open_split(d, split)
    n = len(src) if limit is None else min(limit, len(src))
    for i in range(n):
      rec = records.decode_record(src[i])
      yield k, f"{name}/{rec['clip_id']}", records.decode_lips(rec), records.decode_mel(rec)


class _LipsWriter:
  """H.264 files of at most ``max_frames`` frames; a clip never spans two files."""

  def __init__(self, out: pathlib.Path, crf: int, preset: str, max_frames: int):
    self.out, self.crf, self.preset, self.max_frames = out, crf, preset, max_frames
    self.files: list[dict[str, Any]] = []
    self._container = self._stream = None

  def _open(self) -> None:
    import av  # only where packages are built; the reader needs OpenCV alone
    name = cp.LIPS_FILE.format(len(self.files))
    self._container = av.open(str(self.out / name), "w")
    s = self._container.add_stream("libx264", rate=25)
    s.height, s.width = cp.LIP_SHAPE[:2]
    s.pix_fmt = "yuv444p"   # lips are small: chroma subsampling would halve their colour
    s.options = {"crf": str(self.crf), "preset": self.preset}
    self._stream = s
    self.files.append({"name": name, "frames": 0})

  def add(self, lips: np.ndarray) -> None:
    import av
    if self._container is None or self.files[-1]["frames"] + len(lips) > self.max_frames:
      self.close()
      self._open()
    for f in lips:
      for p in self._stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        self._container.mux(p)
    self.files[-1]["frames"] += len(lips)

  def close(self) -> None:
    if self._container is not None:
      for p in self._stream.encode():
        self._container.mux(p)
      self._container.close()
      self._container = None


def build(data: str, out: str | pathlib.Path, *, crf: int = 18, preset: str = "veryslow",
          max_frames_per_file: int = 8192, limit: int | None = None,
          command: str | None = None, progress: bool = True) -> dict[str, Any]:
  """Writes the package of ``data`` (``DIR:train,...``) to ``out``; returns its index."""
  t0 = time.time()
  sources = parse_sources(data)
  spec = input_spec.read_dataset_spec(",".join(d for d, _ in sources))
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / cp.INDEX).unlink(missing_ok=True)   # a package without its index is unfinished
  writer = _LipsWriter(out, crf, preset, max_frames_per_file)
  clips, mel_q, frame, mel_at = [], [], 0, 0
  per_source = [0] * len(sources)
  for k, clip_id, lips, mel in iter_clips(sources, limit):
    per_source[k] += 1
    writer.add(lips)
    q, lo, scale = cp.quantise_mel(mel)
    mel_q.append(q)
    clips.append({"clip_id": clip_id, "num_frames": len(lips), "frame": frame,
                  "mel": mel_at, "mel_frames": int(mel.shape[1]), "mel_lo": lo,
                  "mel_scale": scale})
    frame += len(lips)
    mel_at += mel.shape[1]
    if progress and len(clips) % 200 == 0:
      print(f"{len(clips)} clips, {frame} frames, {time.time() - t0:.0f} s", flush=True)
  writer.close()
  mel_bytes = lzma.compress(np.concatenate(mel_q, axis=1).tobytes(), preset=9)
  (out / cp.MEL_FILE).write_bytes(mel_bytes)
  # The mean of each clip as OpenCV decodes it here: the accelerator checks its own decode.
  lips = np.empty((frame,) + cp.LIP_SHAPE, np.uint8)
  at = 0
  for f in writer.files:
    cp.decode_lips_file(out / f["name"], lips[at:at + f["frames"]])
    f["bytes"] = (out / f["name"]).stat().st_size
    at += f["frames"]
  for c, m in zip(clips, cp.clip_means(lips, clips)):
    c["lips_mean"] = round(float(m), 4)
  index = {
      "format": cp.FORMAT, "version": cp.VERSION, "input_spec": spec,
      "sources": [{"dir": d, "split": s, "dataset": dataset_name(d), "clips": n}
                  for (d, s), n in zip(sources, per_source)],
      "lips": {"codec": "h264", "pix_fmt": "yuv444p", "crf": crf, "preset": preset,
               "files": writer.files},
      "mel": {"file": cp.MEL_FILE, "frames": mel_at, "bits": 8, "bytes": len(mel_bytes)},
      "tolerance": {"lips_min_psnr_db": cp.LIPS_MIN_PSNR_DB,
                    "lips_max_mean_abs": cp.LIPS_MAX_MEAN_ABS,
                    "mel": "half of the clip's mel_scale"},
      "clips": clips,
      "command": command,
  }
  (out / cp.INDEX).write_text(json.dumps(index, indent=0))
  if progress:
    print(summary(out, index) + f"; built in {time.time() - t0:.0f} s")
  return index


def package_bytes(path: str | pathlib.Path) -> int:
  """Bytes of every file of a package folder."""
  return sum(f.stat().st_size for f in pathlib.Path(path).iterdir() if f.is_file())


def summary(path: str | pathlib.Path, index: dict[str, Any]) -> str:
  """One line: clips, frames and sizes (per lip frame, as the extrapolation needs)."""
  frames = sum(c["num_frames"] for c in index["clips"])
  lips = sum(f["bytes"] for f in index["lips"]["files"])
  mel = index["mel"]["bytes"]
  return (f"{path}: {len(index['clips'])} clips, {frames} frames; "
          f"{package_bytes(path) / 2**20:.2f} MiB (lips {lips / frames:.0f} B/frame, "
          f"mel {mel / frames:.0f} B/frame)")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
  return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def check(package: str | pathlib.Path, data: str, *, limit: int | None = None,
          threads: int = 2) -> dict[str, Any]:
  """Compares a package with the shards it was built from; ``failures`` lists differences.

  The package is decoded by ``clip_package.load`` (what ``train_device`` runs), so its own
  decode check runs too (a failure there is one of ``failures``).
  """
  failures: list[str] = []
  try:
    pkg = cp.load(package, threads=threads)
  except cp.PackageError as e:
    return {"clips": 0, "failures": [str(e)]}
  worst = {"psnr_db": float("inf"), "mean_abs": 0.0, "mel_error_over_step": 0.0}
  n = 0
  for i, (_, clip_id, lips, mel) in enumerate(iter_clips(parse_sources(data), limit)):
    n += 1
    if i >= len(pkg):
      failures.append(f"{clip_id}: not in the package")
      continue
    row = pkg.clips[i]
    if row["clip_id"] != clip_id or row["num_frames"] != len(lips):
      failures.append(f"clip {i}: package has {row['clip_id']} ({row['num_frames']} frames), "
                      f"shards {clip_id} ({len(lips)} frames)")
      continue
    p_lips, p_mel = pkg.clip(i)
    db, mae = psnr(p_lips, lips), float(np.abs(p_lips.astype(np.int16) - lips).mean())
    worst["psnr_db"], worst["mean_abs"] = min(worst["psnr_db"], db), max(worst["mean_abs"], mae)
    if db < cp.LIPS_MIN_PSNR_DB or mae > cp.LIPS_MAX_MEAN_ABS:
      failures.append(f"{clip_id}: lips {db:.1f} dB PSNR, mean abs {mae:.2f} (tolerance "
                      f">= {cp.LIPS_MIN_PSNR_DB} dB, <= {cp.LIPS_MAX_MEAN_ABS})")
    if p_mel.shape != mel.shape:
      failures.append(f"{clip_id}: mel {p_mel.shape} vs {mel.shape}")
      continue
    # Half a step, plus float32 rounding of lo + q * scale.
    err = float(np.abs(p_mel - mel).max()) / row["mel_scale"]
    worst["mel_error_over_step"] = max(worst["mel_error_over_step"], err)
    if err > 0.5 + 1e-3:
      failures.append(f"{clip_id}: mel off by {err:.3f} quantisation steps (tolerance 0.5)")
  if n != len(pkg):
    failures.append(f"the package holds {len(pkg)} clips, the shards {n}")
  return {"clips": n, **worst, "failures": failures}


def main(argv: list[str] | None = None) -> int:
  """CLI entry point (see the module docstring)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  b = sub.add_parser("build", help="write a package")
  b.add_argument("--data", required=True, help="DIR:train[,DIR:train...] prepared shards")
  b.add_argument("--out", required=True)
  b.add_argument("--crf", type=int, default=18, help="x264 quality (lower = larger, closer)")
  b.add_argument("--preset", default="veryslow", help="x264 preset (slower = smaller)")
  b.add_argument("--max_frames_per_file", type=int, default=8192)
  b.add_argument("--limit", type=int, default=None, help="at most N clips per source")
  c = sub.add_parser("check", help="compare a package with its shards")
  c.add_argument("--data", required=True)
  c.add_argument("--package", required=True)
  c.add_argument("--limit", type=int, default=None, help="as given to build")
  a = p.parse_args(argv)
  if a.cmd == "build":
    build(a.data, a.out, crf=a.crf, preset=a.preset, max_frames_per_file=a.max_frames_per_file,
          limit=a.limit, command=shlex.join(["python", "-m", "data_prep.device_package",
                                             *(sys.argv[1:] if argv is None else argv)]))
    return 0
  res = check(a.package, a.data, limit=a.limit)
  print(json.dumps({k: v for k, v in res.items() if k != "failures"}))
  for f in res["failures"][:20]:
    print("FAIL", f)
  print(f"{len(res['failures'])} failures in {res['clips']} clips")
  return 1 if res["failures"] else 0


if __name__ == "__main__":
  sys.exit(main())
