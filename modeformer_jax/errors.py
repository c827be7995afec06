"""The errors people see, in one module that imports nothing heavy.

Front ends (``detect``, ``monitor``, ``qc``, the batch jobs) catch these to skip a bad file
or source, count it and go on, without importing PyAV, OpenCV or JAX for it.
"""
from __future__ import annotations

ERROR_KINDS = ("corrupt", "no_video", "no_audio", "audio_short", "too_short", "no_face",
               "no_speech", "conflict")


class FeatureError(ValueError):
  """A file that cannot yield a clip: ``path``, ``kind`` (see ``ERROR_KINDS``), ``reason``."""

  def __init__(self, path: str, kind: str, reason: str):
    if kind not in ERROR_KINDS:
      raise ValueError(f"unknown FeatureError kind {kind!r}; expected one of {ERROR_KINDS}")
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.kind = kind
    self.reason = reason

  def __reduce__(self):
    # Keeps the exception intact when it crosses a multiprocessing boundary.
    return (FeatureError, (self.path, self.kind, self.reason))


class NoFaceError(ValueError):
  """No usable face in enough frames (``features`` turns it into a ``no_face`` error)."""


class ClipTooShortError(ValueError):
  """A clip has fewer window positions than the evaluation needs."""


class PackageError(ValueError):
  """A package that is incomplete, of another format, or that decodes differently."""


class CheckpointMismatchError(ValueError):
  """A checkpoint was written by a different model config."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class CompilerMissing(RuntimeError):
  """The target's compiler is not installed (``make aot`` installs both)."""


class CompiledMismatch(ValueError):
  """A saved executable was made for another target, shape or config."""
