"""Configs: the fields every config file shares, and ``--config file.py:arg`` on the command line.

The config files live at the repository's top level (``configs/*.py``, loaded by path as
big_vision does); each imports only ``ml_collections`` and this module, which holds what they
share: :func:`parse_arg` for the ``"variant=paper,runlocal"`` argument, :func:`training_config`
with a comment on every field, :func:`model_config` from ``models.MODEL_VARIANTS``.

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

import sys
import textwrap
from typing import Any, Callable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from modeformer_jax import cli
from modeformer_jax.model import models

CONFIG_HELP = ("Config file and its argument, e.g. configs/modeformer.py:paper; "
               "override any field with --config.<field>=<value>, e.g. "
               "--config.model.dtype=bfloat16.")
_HELP_WORDS = ("-h", "--help", "-help", "--helpfull", "-helpfull")


def _help_text(prog: str, doc: str, fv: flags.FlagValues) -> str:
  """The usage line, ``doc`` and every flag of ``fv`` (one CLI's own flags, in definition
  order), in the argparse commands' style (``cli``: plain text, defaults that say something).
  """
  width = cli.width()
  lines = [f"usage: {prog} [flags]", "", cli.format_doc(doc, width), "", "flags:"]
  for name in fv:
    flag = fv[name]
    if flag.name != name:  # a short name of a flag listed under its long name
      continue
    spelled = f"--[no]{name}" if flag.boolean else f"--{name}"
    text = cli.plain(flag.help) + cli.default_note(flag.default, flag.help)
    lines.append(textwrap.fill(f"{spelled}: {text}", width, initial_indent="  ",
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
  The command is named after the calling module (``python -m modeformer_jax.eval``).
  """
  prog = cli.prog(sys._getframe(1).f_globals.get("__name__", "__main__"))
  full = [prog, *(sys.argv[1:] if argv is None else argv)]
  fv = _define(full, define, config_required)
  # Before parsing, so that --help works without the required flags.
  if any(a in _HELP_WORDS for a in full[1:]):
    print(_help_text(prog, doc, fv))
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


def config_file(name: str) -> str:
  """The path of ``configs/<name>``: beside this package's source tree, else under the cwd.

  The config files are not installed with the package (they are loaded by path), so code
  that needs one by name (the demo, tests) finds it in the checkout it runs from.
  """
  import pathlib
  for root in (pathlib.Path(__file__).resolve().parents[2], pathlib.Path.cwd()):
    path = root / "configs" / name
    if path.is_file():
      return str(path)
  raise FileNotFoundError(f"configs/{name} is neither beside the modeformer_jax package nor "
                          f"under {pathlib.Path.cwd()}; run from the repository root")


def load_config(spec: str, *overrides: str) -> ml_collections.ConfigDict:
  """The config of ``"configs/grid.py:steps=10"`` with ``"--config.a.b=value"`` overrides.

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

def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``"variant=paper,runlocal"`` style config arguments.

  A bare word that names a boolean default sets it True; a bare word otherwise is taken
  as the value of the first default (usually ``variant``). Values are cast to the type
  of their default.
  """
  out = dict(defaults)
  first = next(iter(defaults)) if defaults else None
  for part in filter(None, (p.strip() for p in (arg or "").split(","))):
    if "=" in part:
      key, value = part.split("=", 1)
    elif isinstance(defaults.get(part), bool):
      key, value = part, "True"
    else:
      key, value = first, part
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes", "y")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return ml_collections.ConfigDict(out)


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The model sub-config of a named variant (``models.MODEL_VARIANTS``), every field set."""
  cfg = models.model_config(variant).to_dict()
  # bn_axis_name is None in every variant; declare its type so overrides can set it.
  cfg["bn_axis_name"] = ml_collections.config_dict.placeholder(str)
  return ml_collections.ConfigDict(cfg)


def training_config(*, variant: str, data_dir: str, batch_size: int, num_hard: int,
                    total_steps: int, entries_per_clip: int = 1) -> ml_collections.ConfigDict:
  """The full training config shared by the dataset config files.

  ``variant`` names the model (``models.MODEL_VARIANTS``). Every field has a comment; the
  dataset files only change what differs.
  """
  c = ml_collections.ConfigDict()
  c.model = model_config(variant)
  c.seed = 0                          # params init, data order and dropout all derive from it
  c.batch_size = batch_size           # GLOBAL batch B (entries), divisible by devices/processes
  c.num_hard = num_hard               # N_H hard negatives (time-shifted audio) per entry
  # Cached two-pass step (gradient caching): entries of each device's batch embedded at a
  # time; the same gradient in memory that hardly grows with B, for one extra forward pass.
  # 0 = the one-pass step. BatchNorm statistics become per chunk (the models use GroupNorm).
  c.microbatch = 0
  # With the cached step only: the batch's lips and mel stay in pinned host memory and each
  # chunk is copied to the chip when it is embedded, so chip memory holds no whole batch
  # (at B = 2000, N_H = 25 that batch is 0.4 GB). Off by default: libtpu then adds
  # temporaries that cancel most of the saving (docs/training.md, the cached step). The
  # one-pass step ignores it: it holds every activation on the chip anyway.
  c.host_inputs = False

  c.data = ml_collections.ConfigDict()
  c.data.dir = data_dir               # output of `python -m data_prep.prepare`
  c.data.train_split = "train"
  c.data.val_split = "val"
  c.data.min_shift = 2                # |delta| >= 2: never inside the eval's +-1 tolerance
  c.data.max_shift = 15               # the evaluation searches -15..+15
  # Entries (start frames) cut from each clip of a batch: 1 in stage 1; K > 1 in stage 2,
  # which puts same-clip easy negatives in the batch.
  c.data.entries_per_clip = entries_per_clip
  c.data.brightness = 0.0             # augmentation: max additive brightness (pixel values)
  c.data.contrast = 0.0               # augmentation: max relative contrast change
  c.data.max_crop_shift = 0           # augmentation: max lip-crop translation (pixels)
  c.data.color = 0.0                  # augmentation: max relative gain per colour channel
  c.data.scale = 0.0                  # augmentation: max relative zoom (0.1 = 0.9x..1.1x)
  c.data.rotation = 0.0               # augmentation: max in-plane rotation (degrees)
  c.data.flip = False                 # augmentation: mirror left-right half of the time
  c.data.audio_gain_db = 0.0          # augmentation: max +- gain per mel window (dB)
  c.data.noise_snr_db = 0.0           # augmentation: > 0 adds noise at SNR in [x, x+20] dB
  c.data.workers = 2                  # grain prefetch processes per host (0 = in-process)
  c.data.val_clips = 200              # fixed validation subset for the in-training accuracy

  c.loss = ml_collections.ConfigDict()
  c.loss.tau = 0.1                    # InfoNCE temperature
  c.loss.learn_tau = False            # learn log(1/tau) instead of fixing it
  # Easy negatives = every other audio window of the global batch (the gathered InfoNCE).
  # The paper uses them in stage 2 only; configs/lrs.py:stage=1 turns them off.
  c.loss.easy_negatives = True
  c.loss.tolerance = 1                # same-clip windows within +-1 frame are not negatives

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-4                   # Adam, as in the paper
  c.optim.schedule = "constant"       # 'constant' | 'cosine'
  c.optim.warmup_steps = 0
  c.optim.total_steps = 0             # cosine decay length; 0 = the run's total_steps
  c.optim.grad_clip = 1.0             # global-norm clipping (0 = off)
  c.optim.weight_decay = 0.0

  c.total_steps = total_steps
  c.log_every = 50                    # console + TensorBoard scalars
  c.eval_every = 1000                 # validation sync accuracy on data.val_clips clips
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3              # latest K; the best-by-val-accuracy is kept as well
  c.init_from = ""                    # checkpoint dir/step to start from (stage 2 <- stage 1)
  return c
