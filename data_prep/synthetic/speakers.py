"""Who speaks and where: a speaker's face and voice, and the scene shared by a video's clips."""
from __future__ import annotations

import dataclasses

import numpy as np

from data_prep.synthetic.seeds import keyed_rng

RGB = tuple[float, float, float]   # a colour, each channel 0-255


def _json_dict(params) -> dict:
  """A dataclass as a JSON-ready dict (tuples become lists)."""
  d = dataclasses.asdict(params)
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclasses.dataclass
class SpeakerParams:
  """Everything fixed about one synthetic speaker (JSON-serialisable via ``asdict``)."""
  speaker: int
  # Face (pixels in the 160x160 frame, colours RGB 0-255).
  skin: RGB
  hair: RGB
  iris: RGB
  lip: RGB
  teeth: RGB
  face_half_width: float
  face_half_height: float
  face_cy: float
  eye_y: float
  eye_dx: float
  brow_gap: float
  nose_y: float
  mouth_y: float
  mouth_half_width: float
  max_open: float            # lip gap at full opening
  upper_lip: float           # lip thickness
  lower_lip: float
  hair_style: int
  # Voice.
  f0: float                  # mean pitch, Hz
  f0_range: float            # pitch excursion, semitones
  formant_scale: float
  breathiness: float
  rate: float                # speaking-rate factor (1 = about 4 syllables/s)

  def asdict(self) -> dict:
    """The parameters as a JSON-ready dict (as stored in ``speakers.json``)."""
    return _json_dict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "SpeakerParams":
    """Inverse of ``asdict``; unknown keys are ignored, missing ones refused."""
    names = {f.name for f in dataclasses.fields(cls)}
    missing = names - set(d)
    if missing:
      raise ValueError(f"speaker parameters lack {sorted(missing)}")
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()
                  if k in names})


@dataclasses.dataclass
class SceneParams:
  """What the clips of one video share: background, framing, lighting, room and noise."""
  bg_top: RGB
  bg_bottom: RGB
  clothes: RGB
  dx: float
  dy: float
  scale: float
  gain: float
  light_x: float             # horizontal light gradient across the frame
  light_y: float
  snr_db: float
  noise_tilt: float          # 0 white hiss .. 1 low rumble
  reverb: float
  reverb_tau: float
  level: float               # peak level of the clip's audio

  def asdict(self) -> dict:
    """The parameters as a JSON-ready dict (as stored in ``speakers.json``)."""
    return _json_dict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "SceneParams":
    """Inverse of ``asdict``."""
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _colour(rgb) -> RGB:
  return tuple(float(np.clip(c, 0, 255)) for c in rgb)


def make_speaker(seed: int, speaker: int) -> SpeakerParams:
  """The parameters of speaker ``speaker`` of the dataset with ``seed``."""
  r = keyed_rng(seed, speaker, 0)
  tone = r.uniform(0, 1)          # light to dark skin
  skin = np.array([236, 196, 166]) * (1 - tone) + np.array([104, 70, 50]) * tone
  skin = skin * r.uniform(0.94, 1.06, 3)
  # Lips redder and clearly darker than the skin, whatever the skin tone, so they stand out
  # in luma (the chroma planes are subsampled by yuv420p).
  lip = skin * np.array([0.78, 0.45, 0.5]) * r.uniform(0.75, 0.95)
  hair = r.choice([[30, 22, 18], [70, 45, 25], [120, 85, 50], [190, 160, 110], [90, 90, 90],
                   [15, 15, 18]]) * r.uniform(0.85, 1.15)
  iris = r.choice([[60, 40, 25], [50, 90, 130], [70, 110, 70], [40, 30, 25]])
  high = r.uniform() < 0.5        # voice register, correlated with size and formants
  f0 = r.uniform(165, 250) if high else r.uniform(90, 150)
  fs = r.uniform(1.08, 1.2) if high else r.uniform(0.9, 1.04)
  return SpeakerParams(
      speaker=int(speaker), skin=_colour(skin), hair=_colour(hair), iris=_colour(iris),
      lip=_colour(lip), teeth=_colour(np.array([238, 232, 215]) * r.uniform(0.9, 1.0)),
      face_half_width=float(r.uniform(54, 64)), face_half_height=float(r.uniform(74, 84)),
      face_cy=float(r.uniform(74, 80)), eye_y=float(r.uniform(50, 57)),
      eye_dx=float(r.uniform(24, 30)), brow_gap=float(r.uniform(9, 13)),
      nose_y=float(r.uniform(74, 79)), mouth_y=float(r.uniform(90, 93)),
      mouth_half_width=float(r.uniform(24, 31)), max_open=float(r.uniform(17, 23)),
      upper_lip=float(r.uniform(3.5, 5.5)), lower_lip=float(r.uniform(4.5, 7.0)),
      hair_style=int(r.integers(0, 3)),
      f0=float(f0), f0_range=float(r.uniform(2, 5)), formant_scale=float(fs),
      breathiness=float(r.uniform(0.02, 0.12)), rate=float(r.uniform(0.85, 1.2)))


def make_scene(seed: int, speaker: int, video: int) -> SceneParams:
  """The scene shared by the clips of one video."""
  return scene_from_rng(keyed_rng(seed, speaker, 1, video))


def scene_from_rng(r: np.random.Generator) -> SceneParams:
  """A random scene drawn from ``r``."""
  base = r.uniform(40, 210, 3)
  return SceneParams(
      bg_top=_colour(base), bg_bottom=_colour(base * r.uniform(0.5, 0.9)),
      clothes=_colour(r.uniform(20, 220, 3)),
      dx=float(r.uniform(-2, 2)), dy=float(r.uniform(-1.5, 1.5)),
      scale=float(r.uniform(0.97, 1.03)),
      gain=float(r.uniform(0.85, 1.12)), light_x=float(r.uniform(-0.2, 0.2)),
      light_y=float(r.uniform(-0.1, 0.1)), snr_db=float(r.uniform(15, 35)),
      noise_tilt=float(r.uniform(0, 1)), reverb=float(r.uniform(0.0, 0.15)),
      reverb_tau=float(r.uniform(0.02, 0.07)), level=float(r.uniform(0.35, 0.8)))
