"""Configs on the command line: ``--config file.py:arg`` plus ``--config.a.b=value`` overrides.

Every CLI that takes a config parses its flags with :func:`parse_flags`, so they all read
the ``path.py:arg`` string form and the field overrides the same way (ml_collections'
``config_flags``, as ``train`` does)::

  def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("depth", 3, "Module depth of the table.", flag_values=fv)

  def main(argv: Sequence[str] | None = None) -> None:
    fv = config_utils.parse_flags(argv, __doc__, _define_flags)
    run(fv.config, fv.depth)

Each call parses into its own ``FlagValues``, so ``main(argv)`` can run any number of times
in one process (tests do) and ``--help`` lists exactly that CLI's flags.
"""
from __future__ import annotations

import os
import sys
import textwrap
from typing import Callable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

CONFIG_HELP = ("Config file and its argument, e.g. modeformer_jax/configs/modeformer.py:paper; "
               "override any field with --config.<field>=<value>, e.g. "
               "--config.model.dtype=bfloat16.")
_HELP_WORDS = ("-h", "--help", "-help", "--helpfull", "-helpfull")


def _help_text(doc: str, fv: flags.FlagValues) -> str:
  """``doc`` and every flag of ``fv`` (one CLI's own flags, in definition order)."""
  lines = [doc.strip(), "", "flags:"]
  for name in fv:
    flag = fv[name]
    if flag.name != name:  # a short name of a flag listed under its long name
      continue
    spelled = f"--[no]{name}" if flag.boolean else f"--{name}"
    default = "" if flag.default is None else f" (default: {flag.default_as_str})"
    lines.append(textwrap.fill(f"{spelled}: {flag.help}{default}", 90, initial_indent="  ",
                               subsequent_indent="      "))
  return "\n".join(lines)


def _define(full: list[str], define: Callable[[flags.FlagValues], None] | None,
            config_required: bool) -> flags.FlagValues:
  """A fresh FlagValues with ``--config``, the CLI's own flags and ``--help``."""
  fv = flags.FlagValues()
  # sys_argv: the overrides are found in these arguments, not in the process's sys.argv.
  config_flags.DEFINE_config_file("config", None, CONFIG_HELP, flag_values=fv, sys_argv=full,
                                  lock_config=True)
  if define is not None:
    define(fv)
  flags.DEFINE_bool("help", False, "Show this help and exit.", flag_values=fv, short_name="h")
  if config_required:
    flags.mark_flag_as_required("config", flag_values=fv)
  return fv


def _parse(fv: flags.FlagValues, full: list[str]) -> None:
  """Parses ``full`` into ``fv``; raises ValueError with the reason when it does not."""
  try:
    rest = fv(full)
    if len(rest) > 1:
      raise flags.Error(f"unexpected arguments {rest[1:]}")
    # ml_collections defers a file that does not load to the first attribute access.
    getattr(fv.config, "_probe_loaded", None)
  except (flags.Error, AttributeError, OSError) as e:  # AttributeError: unknown override
    raise ValueError(str(e)) from e


def parse_flags(argv: Sequence[str] | None, doc: str,
                define: Callable[[flags.FlagValues], None] | None = None, *,
                config_required: bool = True) -> flags.FlagValues:
  """Parses a CLI's arguments (``argv`` without the program name; default ``sys.argv``).

  Defines ``--config`` (a ConfigDict, ``None`` when optional and absent) with its
  ``--config.<field>=<value>`` overrides, then the flags ``define(fv)`` adds to ``fv``.
  ``--help`` prints ``doc`` and the flags and exits 0; a bad flag prints the error and exits 2.
  """
  prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "modeformer_jax"
  full = [prog, *(sys.argv[1:] if argv is None else argv)]
  fv = _define(full, define, config_required)
  # Before parsing, so that --help works without the required flags.
  if any(a in _HELP_WORDS for a in full[1:]):
    print(_help_text(doc, fv))
    raise SystemExit(0)
  try:
    _parse(fv, full)
  except ValueError as e:
    print(f"{prog}: {e}\nTry --help.", file=sys.stderr)
    raise SystemExit(2) from e
  # grain's worker processes read absl's global flags, which are unparsed outside app.run.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return fv


def load_config(spec: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config of ``"modeformer_jax/configs/grid.py:steps=10"`` with ``"--config.a.b=value"`` overrides.

  Raises ValueError when the file does not load or an override does not apply.
  """
  full = ["load_config", "--config", spec, *overrides]
  fv = _define(full, None, config_required=True)
  _parse(fv, full)
  return fv.config


def describe(fv: flags.FlagValues) -> str:
  """``"<config file:arg> <overrides>"`` of a parsed ``--config``, for a report's header."""
  if fv.config is None:
    return "(no config)"
  overrides = config_flags.get_override_values(fv["config"])
  flat = " ".join(f"--config.{k}={v}" for k, v in _flatten(overrides))
  return f"{config_flags.get_config_filename(fv['config'])} {flat}".strip()


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, object]]:
  out = []
  for k, v in tree.items():
    if isinstance(v, dict):
      out.extend(_flatten(v, f"{prefix}{k}."))
    else:
      out.append((f"{prefix}{k}", v))
  return out
