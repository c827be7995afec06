"""Synthetic talking-mouth dataset in the LRS2 layout (the embedded default for demos and tests).

  python -m data_prep.synthetic --out demo_out/synthetic
  python -m data_prep.synthetic --out /tmp/syn --num_speakers 4 --num_test_speakers 2 \\
      --clips_per_speaker 2 --audio_offset_frames 3

One module per concern, in the order a clip is made:

  seeds       the SeedSequence key of every random draw (determinism), smooth random curves
  speakers    a speaker's face and voice, and the scene shared by the clips of one video
  plan        the speech plan: timed syllable segments that drive both sound and mouth
  speech      the plan's audio: formant synthesis, room reverb, background noise
  mouth       the plan's mouth motion: lip opening and rounding per millisecond and per frame
  render      the frames: the face with its moving mouth, blinks, head motion and light
  clip        one clip: plan, audio and frames aligned, with the optional audio offset
  encode      deterministic h264/AAC mp4 writing
  dataset     the LRS2 layout, speaker splits, resumable parallel generation and the CLI
  long        long test videos with known truth for sync QC (offsets per piece in ms, drift,
              cuts, silence, no face, a two-face composite): ``python -m data_prep.synthetic.long``
  constants   frame rate, sample rate and frame size

The names below are re-exported so ``from data_prep import synthetic`` serves its callers.
"""
from data_prep.synthetic.clip import MIN_MARGIN_FRAMES, render_clip
from data_prep.synthetic.constants import (
    FPS,
    FRAME_SIZE,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
)
from data_prep.synthetic.dataset import (
    FORMAT,
    clip_name,
    generate_dataset,
    main,
)
from data_prep.synthetic.encode import rgb_to_i420, write_mp4
from data_prep.synthetic.mouth import articulator_tracks
from data_prep.synthetic.plan import VOWELS, plan_speech
from data_prep.synthetic.render import render_video
from data_prep.synthetic.speakers import (
    SceneParams,
    SpeakerParams,
    make_scene,
    make_speaker,
)
from data_prep.synthetic.speech import synthesize_audio

__all__ = [
    "FORMAT", "FPS", "FRAME_SIZE", "MIN_MARGIN_FRAMES", "SAMPLES_PER_FRAME", "SAMPLE_RATE",
    "VOWELS", "SceneParams", "SpeakerParams", "articulator_tracks", "clip_name",
    "generate_dataset", "main", "make_scene", "make_speaker", "plan_speech", "render_clip",
    "render_video", "rgb_to_i420", "synthesize_audio", "write_mp4",
]
