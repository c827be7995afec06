"""One clip written the ways real files come: rotation tags, anamorphic pixels, surround and
multi-track audio, variable frame rate (random and regular drops), interlaced MXF, ProRes at
29.97 fps, audio that starts late, ends early or runs on past the video.

  python -m data_prep.synthetic.formats --out DIR [--shift 3] [--kinds rotate90,vfr]

writes ``base.mp4`` (h264 + AAC, 25 fps, the clip as rendered) and one file per kind with the
audio delayed by ``--shift`` more frames, so a detector's answer on ``KIND.*`` must be its answer
on ``base.mp4`` plus the shift. ``formats.json`` lists the files and what each exercises.

Every kind shows the same picture and the same speech once a player has honoured what the
container says (rotation, sample aspect ratio, channel layout, timestamps, start times); a
decoder that ignores any of it sees something else. Writing uses PyAV only (no ffmpeg CLI).
"""
from __future__ import annotations

import dataclasses
import fractions
import json
import os
import pathlib
from typing import Callable

import av
import cv2
import numpy as np
import soxr

from data_prep.synthetic.constants import FPS, SAMPLE_RATE
from data_prep.synthetic.encode import write_mp4
from modeformer_jax import cli

BROADCAST_RATE = 48000


@dataclasses.dataclass(frozen=True)
class Kind:
  """A file format variant: its file suffix, what it exercises and its writer."""
  suffix: str
  exercises: str
  write: Callable[[str, np.ndarray, np.ndarray, int], None]


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
  if rate == SAMPLE_RATE:
    return audio.astype(np.float32)
  return soxr.resample(audio, SAMPLE_RATE, rate, quality="HQ").astype(np.float32)


def _bed(n: int, seed: int, level_db: float) -> np.ndarray:
  """Steady band-limited noise (room tone, an effects bed) at ``level_db`` dBFS RMS."""
  rng = np.random.default_rng(seed)
  x = np.convolve(rng.standard_normal(n + 64), np.hanning(16), "same")[:n]
  x /= np.sqrt(np.mean(x ** 2)) + 1e-12
  return (x * 10 ** (level_db / 20)).astype(np.float32)


def _tone(n: int, rate: int, level_db: float = -18.0) -> np.ndarray:
  """A 1 kHz line-up tone, as broadcast tapes carry on spare tracks."""
  t = np.arange(n) / rate
  return (np.sin(2 * np.pi * 1000 * t) * 10 ** (level_db / 20) * np.sqrt(2)).astype(np.float32)


def _video_stream(container, codec: str, rate, width: int, height: int, pix_fmt: str,
                  options: dict[str, str] | None = None):
  vs = container.add_stream(codec, rate=rate)
  vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
  vs.codec_context.thread_count = 1
  if options:
    vs.options = options
  return vs


def _mux_video(container, vs, frames: np.ndarray, pts: np.ndarray | None = None) -> None:
  for i, img in enumerate(frames):
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    vf.pts = int(pts[i]) if pts is not None else i
    container.mux(vs.encode(vf.reformat(format=vs.pix_fmt)))
  container.mux(vs.encode())


def _mux_audio(container, ast, planes: np.ndarray, rate: int, layout: str, fmt: str,
               start: int = 0) -> None:
  """Encodes ``planes`` ``[C, N]`` float in [-1, 1] with first sample pts ``start``."""
  frame_size = ast.codec_context.frame_size or 1024
  if ast.codec_context.time_base is None:   # PCM encoders leave it unset
    ast.codec_context.time_base = fractions.Fraction(1, rate)
  planes = np.clip(planes, -1, 1).astype(np.float32)
  if fmt.startswith("s16"):
    planes = np.round(planes * 32767).astype(np.int16)
  elif fmt.startswith("s32"):
    planes = np.round(planes * 2147483392).astype(np.int32)
  planar = fmt.endswith("p")
  for s in range(0, planes.shape[1], frame_size):
    part = planes[:, s:s + frame_size]
    data = part if planar else part.T.reshape(1, -1)
    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
    af.sample_rate, af.pts, af.time_base = rate, start + s, fractions.Fraction(1, rate)
    for pkt in ast.encode(af):
      container.mux(pkt)
  container.mux(ast.encode())


def _h264(container, width: int, height: int, rate=FPS):
  return _video_stream(container, "libx264", rate, width, height, "yuv420p",
                       {"crf": "18", "preset": "veryfast"})


def write_rotate90(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """A phone's portrait video: pixels stored turned, a display matrix says turn back."""
  stored = np.ascontiguousarray(np.rot90(frames, k=1, axes=(1, 2)))   # turned left (CCW)
  with av.open(path, "w", format="mp4") as c:
    vs = _h264(c, stored.shape[2], stored.shape[1])
    vs.set_display_rotation(-90)   # display: turn the stored pixels 90 degrees clockwise
    ast = c.add_stream("aac", rate=BROADCAST_RATE, layout="stereo")
    _mux_video(c, vs, stored)
    a = _resample(audio, BROADCAST_RATE)
    _mux_audio(c, ast, np.stack([a, a]), BROADCAST_RATE, "stereo", "fltp")


def write_anamorphic(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0,
                     audio_trim_s: float = 0.0) -> None:
  """Pixels 3/4 as wide as they show (SAR 4:3, like HDV 1440x1080), MKV with Opus audio
  (its last ``audio_trim_s`` seconds cut off, when given)."""
  if audio_trim_s:
    audio = audio[:len(audio) - int(round(audio_trim_s * SAMPLE_RATE))]
  t, h, w, _ = frames.shape
  sw = (w * 3 // 4) // 2 * 2
  stored = np.stack([cv2.resize(f, (sw, h), interpolation=cv2.INTER_AREA) for f in frames])
  with av.open(path, "w", format="matroska") as c:
    vs = _h264(c, sw, h)
    vs.codec_context.sample_aspect_ratio = fractions.Fraction(4, 3)
    ast = c.add_stream("libopus", rate=BROADCAST_RATE, layout="stereo")
    _mux_video(c, vs, stored)
    a = _resample(audio, BROADCAST_RATE)
    _mux_audio(c, ast, np.stack([a, a]), BROADCAST_RATE, "stereo", "flt")


def write_surround51(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """5.1 AAC with the dialogue in the centre channel only and an effects bed elsewhere."""
  a = _resample(audio, BROADCAST_RATE)
  n = a.size
  planes = np.stack([_bed(n, seed + i, -38.0) for i in range(6)])   # FL FR FC LFE BL BR
  planes[2] = a
  planes[3] = np.convolve(_bed(n, seed + 9, -30.0), np.ones(200) / 200, "same")   # rumble
  with av.open(path, "w", format="mp4") as c:
    vs = _h264(c, frames.shape[2], frames.shape[1])
    ast = c.add_stream("aac", rate=BROADCAST_RATE, layout="5.1")
    _mux_video(c, vs, frames)
    _mux_audio(c, ast, planes, BROADCAST_RATE, "5.1", "fltp")


def _mono_tracks(audio: np.ndarray, seed: int, voice_tracks: tuple[int, ...]) -> np.ndarray:
  """Four mono tracks: the voice on ``voice_tracks``, line-up tone, silence or a bed elsewhere."""
  a = _resample(audio, BROADCAST_RATE)
  others = [_tone(a.size, BROADCAST_RATE), np.zeros_like(a), _bed(a.size, seed, -30.0),
            np.zeros_like(a)]
  return np.stack([a if i in voice_tracks else others[i] for i in range(4)])


def _pcm_tracks(c, n: int, codec: str = "pcm_s24le") -> list:
  return [c.add_stream(codec, rate=BROADCAST_RATE, layout="mono") for _ in range(n)]


def _mux_tracks(c, streams: list, tracks: np.ndarray, fmt: str = "s32") -> None:
  for ast, x in zip(streams, tracks):
    _mux_audio(c, ast, x[None], BROADCAST_RATE, "mono", fmt)


def write_mono_tracks(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """MOV with four mono PCM tracks: tone, the voice, a noise bed, silence."""
  tracks = _mono_tracks(audio, seed, voice_tracks=(1,))
  tracks[2], tracks[1] = tracks[1].copy(), tracks[2].copy()   # voice on track 3 of 4
  with av.open(path, "w", format="mov") as c:
    vs = _h264(c, frames.shape[2], frames.shape[1])
    streams = _pcm_tracks(c, len(tracks))
    _mux_video(c, vs, frames)
    _mux_tracks(c, streams, tracks)


def write_vfr(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0,
              keep: np.ndarray | None = None) -> None:
  """Frames dropped irregularly (a phone under load) with their true timestamps kept
  (``keep``: which frames stay; default: each of the inner ones with probability 0.7)."""
  if keep is None:
    rng = np.random.default_rng(seed)
    keep = np.ones(len(frames), bool)
    keep[1:-1] = rng.random(len(frames) - 2) > 0.3
  _write_timed(path, frames[keep], np.flatnonzero(keep) / FPS, audio)


def _write_timed(path: str, frames: np.ndarray, times_s: np.ndarray, audio: np.ndarray,
                 fmt: str = "mp4", clock: int = 90000) -> None:
  """h264 pictures shown at ``times_s`` (rounded to a ``clock`` Hz time base, as the
  container stores them) with stereo 48 kHz audio (AAC; Opus in Matroska)."""
  pts = np.round(np.asarray(times_s) * clock).astype(np.int64)
  with av.open(path, "w", format=fmt) as c:
    vs = _h264(c, frames.shape[2], frames.shape[1])
    vs.codec_context.time_base = fractions.Fraction(1, clock)
    vs.time_base = fractions.Fraction(1, clock)
    codec, sample_fmt = ("libopus", "flt") if fmt == "matroska" else ("aac", "fltp")
    ast = c.add_stream(codec, rate=BROADCAST_RATE, layout="stereo")
    _mux_video(c, vs, frames, pts)
    a = _resample(audio, BROADCAST_RATE)
    _mux_audio(c, ast, np.stack([a, a]), BROADCAST_RATE, "stereo", sample_fmt)


def write_mxf_interlaced(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0
                         ) -> None:
  """MPEG-2 coded interlaced in MXF with four mono 24-bit PCM tracks."""
  with av.open(path, "w", format="mxf") as c:
    vs = _video_stream(c, "mpeg2video", FPS, frames.shape[2], frames.shape[1], "yuv422p",
                       {"flags": "+ilme+ildct"})
    vs.bit_rate = 8_000_000
    streams = _pcm_tracks(c, 4)
    _mux_video(c, vs, frames)
    _mux_tracks(c, streams, _mono_tracks(audio, seed, voice_tracks=(0, 1)))


NTSC_RATE = fractions.Fraction(30000, 1001)


def _captured_2997(n: int) -> np.ndarray:
  """Which of ``n`` rendered 25 fps frames a 29.97 fps camera catches: per 29.97 fps frame,
  the rendered frame nearest in time (within half a 25 fps frame)."""
  m = int(n / FPS * NTSC_RATE)
  return np.minimum(np.round(np.arange(m) / float(NTSC_RATE) * FPS).astype(int), n - 1)


def write_prores_2997(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """ProRes 422 MOV at 30000/1001 fps: each frame is the rendered 25 fps frame nearest in time
  (as a camera at 29.97 fps would have caught it, within half a 25 fps frame)."""
  rate = NTSC_RATE
  src = _captured_2997(len(frames))
  with av.open(path, "w", format="mov") as c:
    vs = _video_stream(c, "prores_ks", rate, frames.shape[2], frames.shape[1], "yuv422p10le",
                       {"profile": "2"})
    ast = c.add_stream("pcm_s16le", rate=BROADCAST_RATE, layout="stereo")
    _mux_video(c, vs, frames[src])
    a = _resample(audio, BROADCAST_RATE)
    _mux_audio(c, ast, np.stack([a, a]), BROADCAST_RATE, "stereo", "s16")


def write_late_audio(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """The audio stream starts 0.2 s after the video; its first sample is the sound of 0.2 s."""
  lead = int(0.2 * SAMPLE_RATE)
  with av.open(path, "w", format="mp4") as c:
    vs = _h264(c, frames.shape[2], frames.shape[1])
    ast = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
    _mux_video(c, vs, frames)
    _mux_audio(c, ast, audio[None, lead:], SAMPLE_RATE, "mono", "fltp", start=lead)


def write_vfr_every7(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """Every 7th frame dropped by the encoder (21.4 fps on average), timestamps kept."""
  keep = np.arange(len(frames)) % 7 != 6
  write_vfr(path, frames, audio, seed, keep=keep)


def write_audio_trimmed(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """The anamorphic MKV with Opus audio whose last 0.3 s were trimmed: the audio stream ends
  before the video (an edit cut on a picture, encoder padding removed)."""
  write_anamorphic(path, frames, audio, seed, audio_trim_s=0.3)


def write_video_short(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """The video stream ends 0.5 s before the audio (the sound runs on over a last frame)."""
  n = len(frames) - int(round(0.5 * FPS))
  with av.open(path, "w", format="mp4") as c:
    vs = _h264(c, frames.shape[2], frames.shape[1])
    ast = c.add_stream("aac", rate=BROADCAST_RATE, layout="stereo")
    _mux_video(c, vs, frames[:n])
    a = _resample(audio, BROADCAST_RATE)
    _mux_audio(c, ast, np.stack([a, a]), BROADCAST_RATE, "stereo", "fltp")


# --- Hard variable-rate cases (bench.plain_vs_qc --vfr): how real VFR files look. Each
# keeps the true time of every picture it shows; what differs is which pictures survive and
# how exactly their timestamps are stored.

def write_vfr7_jitter(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """Every 7th frame dropped and each timestamp off by up to +-8 ms (a phone stamping
  pictures when its encoder gets them, not when the sensor took them)."""
  keep = np.flatnonzero(np.arange(len(frames)) % 7 != 6)
  jitter = np.random.default_rng(seed).uniform(-0.008, 0.008, keep.size)
  jitter[0] = 0.0
  _write_timed(path, frames[keep], keep / FPS + jitter, audio)


def write_vfr_bursts(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0) -> None:
  """Runs of 1 to 4 frames dropped together, about a quarter of all (an encoder that
  falls behind for a moment, then catches up)."""
  rng = np.random.default_rng(seed)
  keep = np.ones(len(frames), bool)
  i = 3
  while i < len(frames) - 1:
    run = int(rng.integers(1, 5))
    keep[i:min(i + run, len(frames) - 1)] = False
    i += run + int(rng.integers(4, 12))
  _write_timed(path, frames[keep], np.flatnonzero(keep) / FPS, audio)


def write_mkv_2997_drops(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0
                         ) -> None:
  """A 29.97 fps capture with every 7th frame dropped, in Matroska (Opus audio), whose
  timestamps are whole milliseconds: frames 33 and 34 ms apart, gaps of 67."""
  src = _captured_2997(len(frames))
  keep = np.flatnonzero(np.arange(src.size) % 7 != 6)
  _write_timed(path, frames[src[keep]], keep / float(NTSC_RATE), audio, fmt="matroska",
               clock=1000)


def write_conv_2997_25(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0
                       ) -> None:
  """A 29.97 fps capture converted to 25 fps by taking the nearest picture (a standards
  converter without motion compensation): pictures repeat and go missing in a beating
  pattern, at a constant 25 fps."""
  src = _captured_2997(len(frames))
  n = int(src.size / float(NTSC_RATE) * FPS)
  near = np.minimum(np.round(np.arange(n) / FPS * float(NTSC_RATE)).astype(int), src.size - 1)
  _write_timed(path, frames[src[near]], np.arange(n) / FPS, audio)


def write_conv_2997_25_vfr(path: str, frames: np.ndarray, audio: np.ndarray, seed: int = 0
                           ) -> None:
  """The 29.97 to 25 fps conversion of a capture that had already dropped every 7th frame
  (timestamps kept): the converter repeats the picture before each gap."""
  src = _captured_2997(len(frames))
  kept = np.flatnonzero(np.arange(src.size) % 7 != 6)
  n = int(src.size / float(NTSC_RATE) * FPS)
  t = np.arange(n) / FPS * float(NTSC_RATE)
  # The newest kept 29.97 picture at or before each 25 fps instant (nearest when it exists).
  near = np.minimum(np.round(t).astype(int), src.size - 1)
  last = kept[np.maximum(np.searchsorted(kept, near, side="right") - 1, 0)]
  _write_timed(path, frames[src[last]], np.arange(n) / FPS, audio)


KINDS: dict[str, Kind] = {
    "rotate90": Kind(".mp4", "display rotation (-90 degrees, a portrait phone video)",
                     write_rotate90),
    "anamorphic": Kind(".mkv", "sample aspect ratio 4:3 (stored 3/4 wide), Opus audio",
                       write_anamorphic),
    "surround51": Kind(".mp4", "5.1 AAC, dialogue in the centre channel only",
                       write_surround51),
    "mono_tracks": Kind(".mov", "four mono 24-bit PCM tracks, the voice on the third",
                        write_mono_tracks),
    "vfr": Kind(".mp4", "variable frame rate: ~30% of frames dropped, timestamps kept",
                write_vfr),
    "mxf_interlaced": Kind(".mxf", "interlaced MPEG-2 in MXF, four mono 24-bit PCM tracks",
                           write_mxf_interlaced),
    "prores_2997": Kind(".mov", "ProRes 422 at 29.97 fps, 48 kHz PCM", write_prores_2997),
    "late_audio": Kind(".mp4", "the audio stream starts 0.2 s after the video",
                       write_late_audio),
    "vfr_every7": Kind(".mp4", "every 7th frame dropped (21.4 fps average), timestamps kept",
                       write_vfr_every7),
    "audio_trimmed": Kind(".mkv", "anamorphic MKV, Opus audio ending 0.3 s before the video",
                          write_audio_trimmed),
    "video_short": Kind(".mp4", "the video ends 0.5 s before the audio", write_video_short),
}
# The hard variable-rate suite (``write_suite(kinds=list(VFR_KINDS))``), apart from
# ``KINDS`` so the format suites stay as they were measured.
VFR_KINDS: dict[str, Kind] = {
    "vfr7_jitter": Kind(".mp4", "every 7th frame dropped, timestamps off by up to +-8 ms",
                        write_vfr7_jitter),
    "vfr_bursts": Kind(".mp4", "runs of 1-4 frames dropped together (~25%), timestamps kept",
                       write_vfr_bursts),
    "mkv_2997_drops": Kind(".mkv", "29.97 fps capture, every 7th frame dropped, whole-ms "
                           "Matroska timestamps, Opus", write_mkv_2997_drops),
    "conv_2997_25": Kind(".mp4", "29.97 fps capture converted to 25 fps by nearest picture",
                         write_conv_2997_25),
    "conv_2997_25_vfr": Kind(".mp4", "29.97 fps capture with every 7th frame dropped, "
                             "converted to 25 fps", write_conv_2997_25_vfr),
}


def _from_source(path: str, size: tuple[int, int] | None, shift: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """A real clip's frames (fitted into ``size`` = (W, H) on black) and audio, and the audio
  delayed by ``shift`` frames (silence in front)."""
  from modeformer_jax import media
  from modeformer_jax.media import features
  dec = media.decode(path)
  frames = dec.frames
  if size is not None:
    w, h = size
    fh, fw = frames.shape[1:3]
    scale = min(w / fw, h / fh)
    nw, nh = int(fw * scale) // 2 * 2, int(fh * scale) // 2 * 2
    canvas = np.zeros((len(frames), h, w, 3), np.uint8)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    for i, f in enumerate(frames):
      canvas[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_CUBIC)
    frames = canvas
  return frames, dec.audio, features.shift_audio(dec.audio, shift)


def write_suite(out: str | os.PathLike, shift: int = 3, kinds: list[str] | None = None,
                seconds: float = 6.0, speaker: int = 5, seed: int = 7,
                source: str | None = None, size: tuple[int, int] | None = None) -> dict:
  """Writes ``base.mp4`` plus every kind (audio +``shift`` frames) of one clip.

  The clip is a rendered synthetic speaker, or with ``source`` a real video (its frames fitted
  into ``size``, its audio shifted with silence in front). Returns the manifest also written
  to ``OUT/formats.json``.
  """
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  known = KINDS | VFR_KINDS
  kinds = list(KINDS) if kinds is None else kinds
  unknown = sorted(set(kinds) - set(known))
  if unknown:
    raise ValueError(f"unknown kinds {unknown}; choose from {sorted(known)}")
  if source is not None:
    frames, audio, shifted = _from_source(source, size, shift)
  else:
    from data_prep.synthetic.clip import render_clip
    from data_prep.synthetic.speakers import make_speaker
    sp = make_speaker(speaker, 30)
    frames, audio = render_clip(sp, seconds, seed)
    _, shifted = render_clip(sp, seconds, seed, audio_offset_frames=shift)
  write_mp4(out / "base.mp4", frames, audio)   # the synthetic set's own h264 + AAC writer
  files = {"base": {"file": "base.mp4", "shift_frames": 0, "exercises": "the reference"}}
  for name in kinds:
    kind = known[name]
    fname = name + kind.suffix
    kind.write(str(out / fname), frames, shifted, seed)
    files[name] = {"file": fname, "shift_frames": int(shift), "exercises": kind.exercises}
  manifest = {"shift_sign": "positive: audio late", "source": source or "synthetic",
              "files": files}
  (out / "formats.json").write_text(json.dumps(manifest, indent=1))
  return manifest


# The hard variable-rate suites: VFR_KINDS with the audio VFR_SHIFT frames late, on the
# synthetic speaker and on two real talking heads (``real_clips/hdtf``, 512x512) fitted into
# 1080p and 720p canvases: folder -> (source under real_clips or None, canvas W x H).
VFR_SHIFT = 2
VFR_SUITES: dict[str, tuple[str | None, tuple[int, int] | None]] = {
    "vfr_synthetic": (None, None),
    "vfr_hdtf_1080p": ("hdtf/WDA_KatieHill_000.mp4", (1920, 1080)),
    "vfr_hdtf_720p": ("hdtf/WDA_AlexandriaOcasioCortez_000.mp4", (1280, 720)),
}


def write_vfr_suites(out: str | os.PathLike, real_clips: str | os.PathLike | None,
                     names: list[str] | None = None) -> dict[str, dict]:
  """``VFR_SUITES`` (or those ``names``) under ``out``, each written once (a folder with its
  ``formats.json`` is kept); the real-face suites only where ``real_clips`` holds their
  source. Returns each suite's manifest by folder name."""
  out = pathlib.Path(out)
  done = {}
  for name in names or list(VFR_SUITES):
    source, size = VFR_SUITES[name]
    folder = out / name
    if source is not None:
      if real_clips is None or not (pathlib.Path(real_clips) / source).is_file():
        continue
      source = str(pathlib.Path(real_clips) / source)
    if (folder / "formats.json").is_file():
      done[name] = json.loads((folder / "formats.json").read_text())
    else:
      done[name] = write_suite(folder, VFR_SHIFT, list(VFR_KINDS), source=source, size=size)
  return done


def main(argv: list[str] | None = None) -> None:
  p = cli.parser(__name__, __doc__)
  p.add_argument("--out", required=True)
  p.add_argument("--shift", type=int, default=3, help="extra audio delay of every kind, frames")
  p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of KINDS or the "
                 f"hard variable-rate ones: {','.join(VFR_KINDS)}")
  p.add_argument("--seconds", type=float, default=6.0, help="length of the synthetic clip")
  p.add_argument("--source", default=None, help="a real video to use instead of a synthetic "
                 "speaker")
  p.add_argument("--size", default=None, help="WxH canvas the source is fitted into "
                 "(e.g. 1920x1080)")
  a = p.parse_args(argv)
  size = tuple(int(v) for v in a.size.lower().split("x")) if a.size else None
  m = write_suite(a.out, a.shift, a.kinds.split(","), a.seconds, source=a.source, size=size)
  for name, f in m["files"].items():
    print(f"{f['file']:>22}  {f['exercises']}")


if __name__ == "__main__":
  main()
