"""Media: reading audio-video files and live sources onto the model's clock.

* ``decode``: the one decoding path (``Reader`` in chunks, ``decode`` whole), the 25-fps
  clock by nearest timestamp, rotation and pixel aspect, integrity checks.
* ``channels``: which audio channels carry the speech (``choose_audio``, by layout for live).
* ``live``: ``LiveReader`` for network streams, stdin and growing files, with reconnects.
* ``remux``: ``fix_offset``, a file's audio moved without re-encoding.
* ``features`` (log-mel, whole clips), ``mel_stream`` (log-mel as audio arrives) and
  ``crops`` (lip crops: fixed box, Haar, MediaPipe landmarks) are imported by name.

The names below are the package's public edge; front ends use ``media.Reader`` and so on.
"""
from modeformer_jax.media.channels import (
    LIVE_REASON,
    SILENT_DBFS,
    SPEECH_SPREAD_DB,
    AudioChannel,
    AudioChoice,
    channel_stats,
    frame_levels,
    sound_stats,
    choose_audio,
    choose_by_layout,
)
from modeformer_jax.media.decode import (
    Chunk,
    Decoded,
    Reader,
    StreamInfo,
    decode,
    frame_indices_for_timestamps,
    num_output_frames,
    probe,
)
from modeformer_jax.media.live import LISTEN_SCHEMES, LiveEvent, LiveReader
from modeformer_jax.media.remux import fix_offset

__all__ = [
    "LIVE_REASON", "SILENT_DBFS", "SPEECH_SPREAD_DB", "AudioChannel", "AudioChoice",
    "channel_stats", "frame_levels", "sound_stats", "choose_audio", "choose_by_layout", "Chunk", "Decoded", "Reader",
    "StreamInfo", "decode", "frame_indices_for_timestamps", "num_output_frames", "probe",
    "LISTEN_SCHEMES", "LiveEvent", "LiveReader", "fix_offset",
]
