"""Loading ml_collections config files by the ``path.py:arg`` string form."""
from __future__ import annotations

import importlib.util
import os
import sys

import ml_collections


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads ``"configs/modeformer.py:tiny"``: imports the file and calls ``get_config(arg)``."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  # Config files import `configs.common`; make the repository root importable.
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)
  name = "_modeformer_config_" + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
