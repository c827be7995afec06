"""Where the clips of a dataset root are, and which split and speaker each belongs to.

Each layout lists ``Item(split, path, clip_id, speaker)`` for a root folder, sorted by split
and clip id, so the same folder always gives the same list (``prepare`` shards it by
position). Nothing here opens a video.

``lrs2``
  ``mvlrs_v1/{main,pretrain}/<id>/<n>.mp4`` with ``pretrain.txt``, ``train.txt``, ``val.txt``,
  ``test.txt`` beside ``mvlrs_v1`` (or inside it). A line is ``<id>/<n>`` optionally
  followed by more tokens (LRS2's test.txt marks some lines ' NF'); pretrain lines refer to
  ``mvlrs_v1/pretrain``, the others to ``mvlrs_v1/main``. A listed file that is absent
  stays an input, and ``prepare`` reports it as ``missing``. LRS2 has no speaker labels, so
  the speaker is the video id; the synthetic set's ids ``spkNNNvMMM`` give ``spkNNN``.
``lrs3``
  ``{pretrain,trainval,test}/<id>/<n>.mp4``. ``val`` is a seeded ``val_fraction`` (0.4, as
  in the paper) of trainval, drawn by video id rather than by clip: the clips of one TED
  talk share speaker, room and microphone, and splitting them would leak the speaker into
  validation. ``train`` is the rest of trainval; ``pretrain`` stays its own split.
``vox2``
  ``mp4/<speaker>/<video>/<n>.mp4``; the official ``dev/mp4`` and ``test/mp4`` roots map to
  ``train`` and ``test`` (a ``val_fraction`` of dev speakers may go to ``val``). A lone
  ``mp4`` root is split by speaker with ``val_fraction``/``test_fraction`` (0.05 each).
``folder`` (and ``raw``, the same listing for uncropped video)
  Every mp4/mov/avi/mkv/mpg/mpeg file below the root. Everything is ``train`` unless
  ``val_fraction``/``test_fraction`` are given; the draw is per file, or per group with
  ``group_by`` (a regex searched in the relative path; its first group, or the whole match,
  names the group and the speaker). Without ``group_by`` the speaker is the file's folder
  (the file name for files directly in the root).

Seeded draws shuffle the sorted group names with ``numpy.random.default_rng(seed)``: test
takes the first ``round(test_fraction * groups)``, val the next ``round(val_fraction * groups)``.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np

LAYOUTS = ("lrs2", "lrs3", "vox2", "folder", "raw")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".mpg", ".mpeg")
SPLIT_ORDER = ("pretrain", "train", "val", "test")
LRS3_VAL_FRACTION = 0.4
VOX2_HELD_OUT_FRACTION = 0.05

_SYNTHETIC_ID = re.compile(r"^(spk\d+)v\d+$")


@dataclasses.dataclass(frozen=True)
class Item:
  """One input clip."""
  split: str
  path: str        # absolute
  clip_id: str     # unique within the split
  speaker: str


def speaker_of_video(video_id: str) -> str:
  """Speaker of an LRS-style video id: ``spkNNN`` for synthetic ``spkNNNvMMM``, else the id."""
  m = _SYNTHETIC_ID.match(video_id)
  return m.group(1) if m else video_id


def _split_key(split: str) -> tuple:
  return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _sorted(items: Iterable[Item]) -> list[Item]:
  items = sorted(items, key=lambda it: (_split_key(it.split), it.clip_id))
  seen = set()
  for it in items:
    if (it.split, it.clip_id) in seen:
      raise ValueError(f"clip id {it.clip_id!r} appears twice in split {it.split!r} "
                       f"(second: {it.path})")
    seen.add((it.split, it.clip_id))
  return items


def draw_groups(groups: Iterable[str], val_fraction: float, test_fraction: float,
                seed: int) -> dict[str, str]:
  """Seeded assignment of group names to 'train' / 'val' / 'test' (see the module docstring)."""
  if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction > 1:
    raise ValueError(f"need val_fraction, test_fraction >= 0 with sum <= 1, got "
                     f"{val_fraction}, {test_fraction}")
  names = sorted(set(groups))
  order = np.random.default_rng(seed).permutation(len(names))
  n_test = int(round(test_fraction * len(names)))
  n_val = int(round(val_fraction * len(names)))
  out = {}
  for rank, i in enumerate(order):
    out[names[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
  return out


def _videos_below(root: pathlib.Path) -> list[pathlib.Path]:
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for f in sorted(filenames):
      if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith("."):
        found.append(pathlib.Path(dirpath) / f)
  return found


def _require_dir(path: pathlib.Path, what: str) -> None:
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: {what} folder not found")


# ----------------------------------------------------------------------------------------
# Layouts.
# ----------------------------------------------------------------------------------------

def lrs2_items(root: str | os.PathLike) -> list[Item]:
  """LRS2 (and the synthetic set): splits from the list files."""
  root = pathlib.Path(root).resolve()
  _require_dir(root, "dataset root")
  if (root / "mvlrs_v1").is_dir():
    video_root = root / "mvlrs_v1"
  elif (root / "main").is_dir() or (root / "pretrain").is_dir():
    video_root = root
  else:
    raise FileNotFoundError(f"{root}: no mvlrs_v1/ (or main/, pretrain/) folder: not the "
                            "LRS2 layout")
  items = []
  found_list = False
  for split in SPLIT_ORDER:
    lst = next((d / f"{split}.txt" for d in (root, video_root) if (d / f"{split}.txt").is_file()),
               None)
    if lst is None:
      continue
    found_list = True
    sub = "pretrain" if split == "pretrain" else "main"
    for lineno, line in enumerate(lst.read_text().splitlines(), 1):
      tokens = line.split()
      if not tokens:
        continue
      name = tokens[0]
      if name.endswith(".mp4"):
        name = name[:-4]
      parts = name.split("/")
      if len(parts) != 2 or not all(parts):
        raise ValueError(f"{lst}:{lineno}: expected '<id>/<n>', got {line!r}")
      items.append(Item(split, str(video_root / sub / f"{name}.mp4"), name,
                        speaker_of_video(parts[0])))
  if not found_list:
    raise FileNotFoundError(f"{root}: none of {[s + '.txt' for s in SPLIT_ORDER]} found: "
                            "the LRS2 layout needs its split lists")
  return _sorted(items)


def lrs3_items(root: str | os.PathLike, val_fraction: float = LRS3_VAL_FRACTION,
               seed: int = 0) -> list[Item]:
  """LRS3: pretrain / trainval / test folders; val drawn from trainval by video id."""
  root = pathlib.Path(root).resolve()
  _require_dir(root, "dataset root")
  present = [d for d in ("pretrain", "trainval", "test") if (root / d).is_dir()]
  if not present:
    raise FileNotFoundError(f"{root}: none of pretrain/, trainval/, test/: not the LRS3 layout")
  items = []
  per_folder = {}
  for folder in present:
    per_folder[folder] = [p for p in _videos_below(root / folder)
                          if p.suffix == ".mp4" and len(p.relative_to(root / folder).parts) == 2]
  val_ids = {}
  if "trainval" in per_folder:
    val_ids = draw_groups((p.parent.name for p in per_folder["trainval"]), val_fraction, 0.0,
                          seed)
  for folder, paths in per_folder.items():
    for p in paths:
      vid = p.parent.name
      split = {"pretrain": "pretrain", "test": "test"}.get(folder) or val_ids[vid]
      items.append(Item(split, str(p), f"{vid}/{p.stem}", speaker_of_video(vid)))
  return _sorted(items)


def vox2_items(root: str | os.PathLike, val_fraction: float | None = None,
               test_fraction: float | None = None, seed: int = 0) -> list[Item]:
  """VoxCeleb2: ``<speaker>/<video>/<n>.mp4`` below dev/mp4 + test/mp4, or a lone mp4/."""
  root = pathlib.Path(root).resolve()
  _require_dir(root, "dataset root")
  official = {s: root / d / "mp4" for s, d in (("train", "dev"), ("test", "test"))
              if (root / d / "mp4").is_dir()}
  if official:
    if test_fraction:
      raise ValueError(f"{root} has the official dev/test folders; test_fraction does not apply")
    roots = official
  elif (root / "mp4").is_dir():
    roots = {"": root / "mp4"}
  else:
    raise FileNotFoundError(f"{root}: no mp4/, dev/mp4/ or test/mp4/: not the VoxCeleb2 layout")
  found = []
  for split, base in roots.items():
    for p in _videos_below(base):
      rel = p.relative_to(base)
      if p.suffix != ".mp4" or len(rel.parts) != 3:
        continue
      found.append((split, p, rel.parts[0], "/".join(rel.with_suffix("").parts)))
  if official:
    draw = draw_groups((spk for s, _, spk, _ in found if s == "train"), val_fraction or 0.0,
                       0.0, seed)
  else:
    draw = draw_groups((spk for _, _, spk, _ in found),
                       VOX2_HELD_OUT_FRACTION if val_fraction is None else val_fraction,
                       VOX2_HELD_OUT_FRACTION if test_fraction is None else test_fraction, seed)
  items = [Item(split if split == "test" else draw[spk], str(p), cid, spk)
           for split, p, spk, cid in found]
  return _sorted(items)


def folder_items(root: str | os.PathLike, val_fraction: float = 0.0,
                 test_fraction: float = 0.0, group_by: str | None = None,
                 seed: int = 0) -> list[Item]:
  """Every video file below ``root``; optional seeded split by file or by ``group_by`` group."""
  root = pathlib.Path(root).resolve()
  _require_dir(root, "dataset root")
  paths = _videos_below(root)
  if not paths:
    raise FileNotFoundError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
  pattern = re.compile(group_by) if group_by else None
  found = []
  for p in paths:
    rel = p.relative_to(root)
    clip_id = rel.as_posix()   # keeps the extension: a.mp4 and a.avi are different clips
    if pattern is not None:
      m = pattern.search(rel.as_posix())
      if m is None:
        raise ValueError(f"{p}: --group_by {group_by!r} does not match its relative path "
                         f"{rel.as_posix()!r}")
      group = m.group(1) if m.groups() else m.group(0)
      speaker = group
    else:
      group = clip_id
      speaker = rel.parent.as_posix() if len(rel.parts) > 1 else rel.stem
    found.append((p, clip_id, group, speaker))
  draw = draw_groups((g for _, _, g, _ in found), val_fraction, test_fraction, seed)
  return _sorted(Item(draw[g], str(p), cid, spk) for p, cid, g, spk in found)


def list_items(layout: str, root: str | os.PathLike, *, val_fraction: float | None = None,
               test_fraction: float | None = None, group_by: str | None = None,
               seed: int = 0, splits: Sequence[str] | None = None) -> list[Item]:
  """The inputs of ``root`` under ``layout`` (one of ``LAYOUTS``), optionally only ``splits``."""
  if layout == "lrs2":
    if val_fraction or test_fraction or group_by:
      raise ValueError("lrs2 takes its splits from the list files; val/test fractions and "
                       "group_by do not apply")
    items = lrs2_items(root)
  elif layout == "lrs3":
    if test_fraction or group_by:
      raise ValueError("lrs3 has its own test folder; test_fraction and group_by do not apply")
    items = lrs3_items(root, LRS3_VAL_FRACTION if val_fraction is None else val_fraction, seed)
  elif layout == "vox2":
    if group_by:
      raise ValueError("vox2 splits by speaker; group_by does not apply")
    items = vox2_items(root, val_fraction, test_fraction, seed)
  elif layout in ("folder", "raw"):
    items = folder_items(root, val_fraction or 0.0, test_fraction or 0.0, group_by, seed)
  else:
    raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
  if splits is not None:
    items = [it for it in items if it.split in set(splits)]
  return items
