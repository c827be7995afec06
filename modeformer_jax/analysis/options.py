"""The analysis options (``AnalysisOptions``), defined once for ``detect``, ``--qc`` and
``monitor``: the same names, defaults and help text (``add_flags``, ``options_from_flags``)."""
from __future__ import annotations

import dataclasses
from typing import Any

from modeformer_jax.analysis import tracking
from modeformer_jax.model import windows
from modeformer_jax.qc import tolerances

FPS = windows.FPS


@dataclasses.dataclass
class AnalysisOptions:
  """What the analysis measures and when a segment counts as measurable."""
  window_s: float = 5.0          # segment length
  hop_s: float = 1.0             # segment step (window_s must be a multiple of it)
  max_offset_frames: int = 15    # search range, +-frames
  # The shortest video (and stretch of it with sound) analysed: every offset of the search
  # is then scored by at least this many lip windows (``min_frames``). Training clips need
  # the whole search around one window (``features.MIN_FRAMES``, 35 frames); a detection
  # pools every window, so a 1.2 s word clip (29 frames, LRW) is measurable.
  min_offset_windows: int = 5
  min_speech: float = 0.2        # fraction of a segment's audio that must be speech
  min_face: float = 0.5          # fraction of a segment's windows with the chosen face
  vad_db: float = -45.0          # speech: 12.5 ms RMS above this (dBFS) ...
  vad_above_floor_db: float = 10.0   # ... and this far above the file's noise floor,
  # ... or, in a block whose sound has speech's shape (``speech_shape``; for sound that is
  # loud throughout, with no quiet floor to stand above), above ``vad_db`` alone. Shape:
  # this share of the level's modulation at syllable rates (2-8 Hz), a level that dips
  # this many dB between syllables, and a spectral centroid that moves this many mel bins
  # (vowels against fricatives). On the real clips speech blocks measure 0.25-0.95,
  # 9-50 dB and 5-25 bins; steady noise, held or plucked tones, chords and drum hits
  # (tests/test_sync_qc.py) at most 2.1 bins, or under 2 dB.
  vad_shape_modulation: float = 0.5
  vad_shape_depth_db: float = 6.0
  vad_shape_centroid_bins: float = 5.0
  fit_ms: float = 20.0           # half-width of the parabola fit around the peak
  max_faces: int = 4             # faces tracked at once
  # Face landmarks on every n-th frame (the tracker fills the frames between, smoothed as
  # always). 2 halves the landmarks, the largest cost, at no measured loss: 22 real clips x
  # 15 injected shifts, relative exact 88.8 / 87.2 / 82.7% at 1 / 2 / 3 when chosen; on
  # today's analysis 89.0% at 2 and 85.8% at 3 (bench/RESULTS.md).
  detect_every: int = 2
  # Audio windows embedded on every n-th mel frame (12.5 ms apart at 1); a window between
  # two computed ones gets their blend (linear, unit length), so every mel frame is still
  # scored. 2 halves the audio model's work: on the 22 real clips x 15 injected shifts
  # (bench.detect_shifts) relative exact 89.0% at 1 and at 2 (within +-1 95.0 / 97.2%;
  # absolute exact 46.2 / 41.6%; 84.8% at 3), but at 2 two clips pinned by
  # tests/test_shipped_model.py (vox2_crop/00015, raw/lrw_word_sample1) miss a shift, so
  # the default stays 1. Scoring only the computed windows (no blend) gave 77.7%.
  audio_every: int = 1
  # Box-crop models: "fixed" = the picture is the face crop the model was trained on (LRS2
  # or VoxCeleb2 style face-cropped video); a FACE_FRAMES name = find faces in a wider
  # picture and place such a crop on each. Landmark models ignore it.
  face_frame: str = "fixed"
  drift_min_ms: float = 20.0     # change over the file below this is "stable"
  chunk_frames: int = 50         # frames decoded per step
  # A lip window is measured when at most this many of its 5 frames repeat the picture
  # before them (dropped frames of a variable-rate file, sources under 25 fps): 2 keeps
  # 15 fps webcams measurable (3 of 5 pictures their own), more would feed the model
  # mostly frozen mouths.
  max_held: int = 2
  # A file fails a tolerance when out of it this long in a row (``tolerances.MIN_FAIL_S``).
  min_fail_s: float = tolerances.MIN_FAIL_S
  # Segments whose calibrated reliability (the probability that their offset is within one
  # frame of the truth, ``reliability.json`` beside the model) is lower are "uncertain".
  min_reliability: float = 0.5

  @property
  def min_frames(self) -> int:
    """Frames of video with sound needed: the last ``min_offset_windows`` of the
    5-frame windows still have audio ``max_offset_frames`` later (or earlier)."""
    return windows.WINDOW_FRAMES - 1 + self.max_offset_frames + self.min_offset_windows

  def check(self) -> None:
    k = self.window_s / self.hop_s
    if self.hop_s * FPS != int(self.hop_s * FPS) or abs(k - round(k)) > 1e-9 or k < 1:
      raise ValueError(f"window_s={self.window_s} must be a whole multiple of hop_s="
                       f"{self.hop_s}, and hop_s a whole number of frames")
    if self.audio_every < 1 or self.detect_every < 1:
      raise ValueError("audio_every and detect_every must be at least 1")


def add_flags(group: Any, window_s: float | None = None) -> None:
  """The analysis options people set, on an argparse parser or group: one definition, so
  ``detect`` and ``monitor`` share names, defaults and help. ``window_s``: a front end's
  own default window (the monitor's reports read 10 s)."""
  d = AnalysisOptions()
  group.add_argument("--window", type=float, default=window_s or d.window_s,
                     help="seconds of video each offset reads (a whole number of --hop)")
  group.add_argument("--hop", type=float, default=d.hop_s,
                     help="seconds between segments (a whole number of frames)")
  group.add_argument("--max_faces", type=int, default=d.max_faces, help="faces tracked at once")
  group.add_argument("--detect_every", type=int, default=d.detect_every,
                     help="run the face landmarker on every n-th frame (faster, coarser)")
  group.add_argument("--audio_every", type=int, default=d.audio_every,
                     help="run the audio model on every n-th mel frame, the ones between "
                     "blended (2: faster; bench/RESULTS.md gives its accuracy cost)")
  group.add_argument("--min_reliability", type=float, default=d.min_reliability,
                     help="segments whose calibrated probability of being within one frame "
                     "is lower are 'uncertain' (not used for verdicts or alarms)")
  group.add_argument("--face_frame", default=d.face_frame,
                     choices=["fixed", *sorted(tracking.FACE_FRAMES)],
                     help="box-crop models only: 'fixed' = the video is a face crop like the "
                     "model's training frames; a dataset name = find faces in a wider "
                     "picture and place that dataset's face crop on each")


def options_from_flags(args: Any, **fields: Any) -> AnalysisOptions:
  """``AnalysisOptions`` from the flags of :func:`add_flags` (and a front end's own
  ``fields``); raises ValueError for inconsistent ones."""
  options = AnalysisOptions(window_s=args.window, hop_s=args.hop, max_faces=args.max_faces,
                      detect_every=args.detect_every, audio_every=args.audio_every,
                      min_reliability=args.min_reliability,
                      face_frame=args.face_frame, **fields)
  options.check()
  return options
