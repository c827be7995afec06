"""One ``--help`` look for every command: ``usage: python -m <module>``, the text without
reStructuredText markup, and ``(default: X)`` only where it tells the reader something.

argparse commands build their parser with :func:`parser`; the absl commands
(``config_utils.parse_flags``) print their help with the same :func:`prog`, :func:`plain` and
:func:`default_note`.

  p = cli.parser(__name__, __doc__, verbose=True)   # --verbose: MediaPipe's own log lines
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import sys
import textwrap
from typing import Any

from modeformer_jax import native_log

VERBOSE_HELP = ("also show the native libraries' log lines (MediaPipe, TensorFlow Lite, absl) "
                "on stderr; the same as MODEFORMER_VERBOSE=1")

# reST markup a docstring uses that reads as noise in a terminal.
_ROLE = re.compile(r":[\w:.-]+:`([^`<]*?)\s*(?:<[^>]*>)?`")   # :func:`x`, :mod:`t <x>` -> x / t
_LITERAL = re.compile(r"``(.+?)``", re.S)                      # ``x`` -> x, across lines too
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")                  # `x`, `link`_ -> x, link
_STRONG = re.compile(r"\*\*(.+?)\*\*", re.S)                   # **x** -> x
_LITERAL_BLOCK = re.compile(r"(?m)(\S)::$")                    # "like this::" -> "like this:"


def module_name(name: str) -> str:
  """The name a module is run by: ``__main__`` resolved through its import spec (the
  ``python -m`` case), and a package's ``pkg.__main__`` shortened to ``pkg``."""
  if name == "__main__":
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None:
      name = spec.name
  return name.removesuffix(".__main__")


def prog(module: str) -> str:
  """The command as a person types it: ``python -m data_prep.prepare`` (``module`` may be a
  module's ``__name__``); the script's name when it was run by path."""
  name = module_name(module)
  if name == "__main__":
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
  return f"python -m {name}"


def plain(text: str) -> str:
  """``text`` without reStructuredText markup (roles, literals, strong emphasis, ``::``)."""
  for pattern in (_ROLE, _LITERAL, _INTERPRETED, _STRONG):
    text = pattern.sub(r"\1", text)
  return _LITERAL_BLOCK.sub(r"\1:", text)


def default_note(default: Any, help_text: str | None) -> str:
  """`` (default: X)`` for an option's help, or ``""`` when the help already speaks of a
  default or the default is nothing (None, False, an empty string or list)."""
  if (default is None or default is False or default is argparse.SUPPRESS
      or (isinstance(default, (str, list, tuple)) and not default)
      or "default" in (help_text or "").lower()):
    return ""
  return f" (default: {default})"


_ITEM = re.compile(r"(\d+\.|[-*]) ")   # a list item's marker: "1. ", "- "
MAX_WIDTH = 100                        # wider text is hard to read, however wide the terminal


def width() -> int:
  """Help text width: the terminal's (as argparse measures it), at most ``MAX_WIDTH``."""
  return min(shutil.get_terminal_size().columns - 2, MAX_WIDTH)


def format_doc(text: str, width: int, indent: str = "") -> str:
  """A docstring for a terminal ``width`` wide: plain text (``plain``), prose paragraphs and
  list items re-filled, indented blocks (commands, tables) kept line for line."""
  out: list[str] = []
  for block in re.split(r"\n\s*\n", plain(text).strip("\n")):
    lines = block.splitlines()
    if out:
      out.append("")
    if all(not line.startswith(" ") for line in lines) and not _ITEM.match(lines[0]):
      out.extend(textwrap.wrap(" ".join(lines), width, initial_indent=indent,
                               subsequent_indent=indent, break_on_hyphens=False))
    elif _ITEM.match(lines[0]) and all(_ITEM.match(line) or line.startswith(" ")
                                       for line in lines):
      items: list[list[str]] = []
      for line in lines:
        if _ITEM.match(line):
          items.append([])
        items[-1].append(line.strip())
      for item in items:
        hang = " " * len(_ITEM.match(item[0]).group(0))
        out.extend(textwrap.wrap(" ".join(item), width, initial_indent=indent,
                                 subsequent_indent=indent + hang, break_on_hyphens=False))
    else:
      out.extend(indent + line for line in lines)
  return "\n".join(out)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """The description laid out by ``format_doc``, help strings without reST markup, and
  ``default_note`` on options that take a value."""

  def __init__(self, prog: str, **kw: Any):
    kw.setdefault("width", width())
    super().__init__(prog, **kw)

  def _fill_text(self, text: str, width: int, indent: str) -> str:
    return format_doc(text, width, indent)

  def _format_action(self, action: argparse.Action) -> str:
    if not action.help and self._note(action):
      action = copy.copy(action)   # no help of its own: still show the default
      action.help = self._note(action).strip()
    return super()._format_action(action)

  def _get_help_string(self, action: argparse.Action) -> str:
    return plain(action.help or "").strip() + self._note(action)

  @staticmethod
  def _note(action: argparse.Action) -> str:
    # Positionals and flags (nargs=0: store_true, --verbose, ...) carry no default worth
    # printing; "%(default)s" lets argparse format it (choices, types) as it does for help.
    if not action.option_strings or action.nargs == 0:
      return ""
    if not default_note(action.default, action.help):
      return ""
    return " (default: %(default)s)"


class _Verbose(argparse.Action):
  """``--verbose``: turns the native-log filter off before anything loads MediaPipe."""

  def __init__(self, option_strings: list[str], dest: str, **kw: Any):
    super().__init__(option_strings, dest, nargs=0, default=False, **kw)

  def __call__(self, parser, namespace, values, option_string=None) -> None:
    setattr(namespace, self.dest, True)
    native_log.set_verbose(True)


def parser(module: str, doc: str, *, verbose: bool = False,
           **kw: Any) -> argparse.ArgumentParser:
  """An ArgumentParser for the command ``python -m <module>`` (pass ``__name__``) described
  by ``doc`` (a docstring, or its first line), with ``HelpFormatter``; ``verbose`` adds
  ``--verbose`` (MediaPipe's native log lines on stderr). ``kw`` goes to ArgumentParser."""
  p = argparse.ArgumentParser(prog=prog(module), description=doc.strip(),
                              formatter_class=HelpFormatter, **kw)
  if verbose:
    p.add_argument("--verbose", action=_Verbose, help=VERBOSE_HELP)
  return p
