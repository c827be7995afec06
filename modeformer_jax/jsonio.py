"""Results as plain JSON values, for every command that writes or prints them.

Light on purpose (no numpy import): the QC batch's parent process uses it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any


def jsonable(obj: Any) -> Any:
  """``obj`` as plain JSON types: arrays and numpy/JAX scalars unwrapped (``tolist``),
  NaN / inf as None, mapping keys as str, paths as str. Anything else raises a TypeError
  naming it, rather than writing something a reader cannot load."""
  if obj is None or isinstance(obj, (bool, int, str)):
    return obj
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  if hasattr(obj, "tolist"):  # numpy and JAX arrays and scalars, without importing them
    return jsonable(obj.tolist())
  raise TypeError(f"result is not JSON-serialisable: {type(obj).__name__} value {obj!r:.80}")
