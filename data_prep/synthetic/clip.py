"""One clip: the speech plan, its audio and its frames, aligned and optionally offset.

Alignment
  Sample ``n`` of a clip's audio plays at ``n / 16000`` s; video frame ``t`` covers
  ``[t / 25, (t + 1) / 25)`` s, i.e. samples ``640 t .. 640 t + 639``. The mouth in frame
  ``t`` is the articulator track (smoothed with a centred 31 ms window, so it neither leads
  nor lags) averaged over that interval. ``audio_offset_frames = k`` delays the audio by
  exactly ``640 k`` samples for every clip (positive: audio late, the sound of frame ``t``
  plays with frame ``t + k``); the speech plan extends ``max(32, |k|)`` frames beyond the clip
  on both sides, so the shifted audio is continuous speech rather than zero padding. For
  ``|k| > 32`` the margin, hence the clip's random stream, depends on ``k``.
  ``audio_offset_samples = d`` delays by ``d`` samples instead (sub-frame offsets: 320 is
  +20 ms); the margin is then ``max(32, ceil(|d| / 640))`` frames, so ``d = 640 k`` gives the
  same clip as ``audio_offset_frames = k``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from data_prep.synthetic.constants import FPS, SAMPLES_PER_FRAME
from data_prep.synthetic.mouth import frame_tracks
from data_prep.synthetic.plan import plan_speech
from data_prep.synthetic.render import render_video
from data_prep.synthetic.seeds import keyed_rng, seed_key
from data_prep.synthetic.speakers import (
  SceneParams,
  SpeakerParams,
  scene_from_rng,
)
from data_prep.synthetic.speech import synthesize_audio

MIN_MARGIN_FRAMES = 32                    # speech-plan margin beyond each clip end


def render_clip(speaker: SpeakerParams | dict, seconds: float, seed: int | Sequence[int],
                audio_offset_frames: int = 0, scene: SceneParams | dict | None = None,
                audio_offset_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Renders one clip.

  Args:
    speaker: ``SpeakerParams`` (or its dict from ``speakers.json``).
    seconds: length; the clip has ``T = round(25 seconds)`` frames and ``640 T`` samples.
    seed: int or sequence of ints; the clip's random content.
    audio_offset_frames: delay of the audio against the video, in frames (positive: late).
    scene: the video's scene; by default one is drawn from ``seed``.
    audio_offset_samples: delay of the audio in samples at 16 kHz (positive: late); replaces
      ``audio_offset_frames``, which must then be 0.

  Returns:
    ``frames`` uint8 ``[T, 160, 160, 3]`` RGB at 25 fps and ``audio`` float32 ``[640 T]``
    mono at 16 kHz, in [-1, 1].
  """
  sp = speaker if isinstance(speaker, SpeakerParams) else SpeakerParams.from_dict(speaker)
  key = seed_key(seed)
  if scene is None:
    scene = scene_from_rng(keyed_rng(*key, 1))
  elif isinstance(scene, dict):
    scene = SceneParams.from_dict(scene)
  num_frames = int(round(seconds * FPS))
  if num_frames < 1:
    raise ValueError(f"a clip needs at least one frame, got {seconds} s")
  if audio_offset_samples is None:
    delay = int(audio_offset_frames) * SAMPLES_PER_FRAME
  elif audio_offset_frames:
    raise ValueError("give audio_offset_frames or audio_offset_samples, not both")
  else:
    delay = int(audio_offset_samples)
  # Whole frames of plan beyond the shift; for delay = 640 k this is max(32, |k|) as before.
  margin = max(MIN_MARGIN_FRAMES, -(-abs(delay) // SAMPLES_PER_FRAME))
  rng = np.random.default_rng(np.random.SeedSequence(key + [margin]))
  t0 = -margin / FPS
  total = num_frames + 2 * margin
  segs = plan_speech(rng, t0, (num_frames + margin) / FPS, sp.rate)
  open_f, round_f = frame_tracks(segs, t0, margin, num_frames)
  # Separate streams, so a change to the audio leaves the video's draws alone and vice versa.
  audio_rng = np.random.default_rng(rng.integers(2 ** 63))
  video_rng = np.random.default_rng(rng.integers(2 ** 63))
  ext = synthesize_audio(segs, sp, scene, audio_rng, t0, total * SAMPLES_PER_FRAME)
  start = margin * SAMPLES_PER_FRAME - delay
  audio = ext[start:start + num_frames * SAMPLES_PER_FRAME].copy()
  frames = render_video(sp, scene, open_f, round_f, video_rng)
  return frames, audio
