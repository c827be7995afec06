"""Checkpoints: training state + data-iterator state with orbax, and exported weights.

Training checkpoints live in ``<workdir>/checkpoints/<step>/`` with three items:

* ``state``: the train-state dict of ``train_step.create_train_state`` as OCDBT/zarr
  arrays (``StandardSave``; no pickle anywhere): ``params`` (the model's ``audio`` and
  ``video`` towers, plus ``log_tau`` when the temperature is learned), ``opt_state``,
  ``step``, and ``batch_stats`` for BatchNorm models. There is no RNG state: training
  derives every key from ``config.seed`` and the step.
* ``data``: the grain iterator state (JSON) of every process,
* ``meta``: JSON with the step, the full config, the model config (``model``) and the
  input spec of the dataset it was trained on (``input_spec``,
  ``input_spec.read_dataset_spec``), so a checkpoint says which features it expects.

Orbax writes each step into a temporary directory and renames it when complete, so a
process killed mid-save (kill -9 included) leaves no checkpoint that a restore would pick.

Exported weights (the format of shipped models) are a directory with ``model.json`` (model
config + model card fields) and ``params/`` (a ``StandardCheckpointer`` pytree), or one
model file (``*.msgpack``, ``save_model_file``): the same ``model.json`` fields and the
parameters in one msgpack map (flax's array encoding, no pickle). The file is what a run
on a machine that returns only a few flat files (``train_device``) writes.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from modeformer_jax.errors import CheckpointMismatchError
from modeformer_jax.model.models import ModEFormer, ModelConfig

if TYPE_CHECKING:
  # Annotations only: ``train_device`` saves model files where ml_collections is absent.
  import ml_collections

ITEMS = ("state", "data", "meta")
VAL_METRIC = "val_acc5"
MODEL_FILE_SUFFIX = ".msgpack"
MODEL_FILE_FORMAT = "modeformer_jax.model_file"


def make_manager(workdir: str | os.PathLike, keep: int = 3,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest ``keep`` checkpoints plus the best one by validation accuracy."""
  policy = ocp.checkpoint_managers.AnyPreservationPolicy([
      ocp.checkpoint_managers.LatestN(n=keep),
      ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[VAL_METRIC], reverse=False,
                                    n=1, keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=not read_only,
                                         read_only=read_only,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / "checkpoints",
                               item_names=ITEMS, options=options)


def _data_args(iterator: Any, restore: bool):
  import grain
  return (grain.checkpoint.CheckpointRestore(iterator) if restore
          else grain.checkpoint.CheckpointSave(iterator))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, iterator: Any,
         config: ml_collections.ConfigDict, *, input_spec: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None) -> None:
  """Saves state, iterator and meta (config, input spec) together (asynchronously)."""
  meta = {"step": int(step), "model": dict(ModelConfig.from_mapping(config.model).to_dict()),
          "config": json.loads(config.to_json_best_effort()),
          "input_spec": dict(input_spec)}
  # Replicated state is written from a host copy: saving the device arrays makes orbax
  # compile a slicing program per parameter shape (minutes on small CPU runs).
  args = ocp.args.Composite(state=ocp.args.StandardSave(jax.device_get(state)),
                            data=_data_args(iterator, restore=False),
                            meta=ocp.args.JsonSave(meta))
  mngr.save(int(step), args=args, metrics=dict(metrics) if metrics else None)


def check_model_config(saved: Mapping[str, Any], config_model: Mapping[str, Any],
                       where: str) -> None:
  """Raises a clear error when a checkpoint's model differs from the config's."""
  a = ModelConfig.from_mapping(saved).to_dict()
  b = ModelConfig.from_mapping(config_model).to_dict()
  # Compute-only settings may change between runs (bf16 fine-tuning, remat for memory).
  free = {"dtype", "remat", "dropout", "attention_dropout", "bn_axis_name"}
  diff = {k: (a[k], b[k]) for k in a if k not in free and a[k] != b[k]}
  if diff:
    lines = ", ".join(f"{k}: checkpoint {v[0]!r} vs config {v[1]!r}" for k, v in diff.items())
    raise CheckpointMismatchError(f"{where} was written by a different model config ({lines})")


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
  return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any, iterator: Any,
            config: ml_collections.ConfigDict,
            input_spec: Mapping[str, Any] | None = None) -> Any:
  """Restores state (into ``abstract_state``'s shardings) and the iterator in place.

  With ``input_spec`` (the dataset's), resuming on data prepared with other features than
  the checkpoint's is a clear error rather than a silent mix.
  """
  meta = read_meta(mngr, step)
  where = f"checkpoint {mngr.directory}/{step}"
  check_model_config(meta["model"], config.model, where)
  saved = meta.get("input_spec")
  if input_spec is not None and saved is not None and saved != dict(input_spec):
    raise CheckpointMismatchError(f"{where} was trained on input {saved}, but "
                                  f"{config.data.dir} holds {dict(input_spec)}")
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=_data_args(iterator, restore=True)))
  return out["state"]


def _abstract_params(model: ModEFormer) -> Any:
  return jax.eval_shape(model.init, jax.random.key(0))


def _latest_or_best(mngr: ocp.CheckpointManager, which: str) -> int:
  step = mngr.best_step() if which == "best" else mngr.latest_step()
  if step is None:
    step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"no complete checkpoint under {mngr.directory}")
  return step


def load_model(path: str | os.PathLike, which: str = "best",
               model_config: Mapping[str, Any] | None = None) -> tuple[ModEFormer, Any, dict]:
  """Loads ``(model, params, meta)`` for inference or ``init_from``.

  ``path`` may be an exported model directory (has ``model.json``), a model file
  (``*.msgpack``, ``save_model_file``), a training workdir (has ``checkpoints/``; ``which``
  = 'best' or 'latest'), or ``<workdir>/checkpoints/<step>``.
  With ``model_config``, a checkpoint of a different architecture is a clear error.
  ``params`` is the model's tree (``{'audio', 'video'}``; a learned ``log_tau`` is not
  read). ``meta`` is the checkpoint's (with ``input_spec`` for checkpoints written since
  specs exist) or the exported ``model.json``.
  """
  path = pathlib.Path(path).absolute()
  if path.is_file() and path.suffix == MODEL_FILE_SUFFIX:
    return _load_model_file(path, model_config)
  if (path / "model.json").is_file():
    meta = json.loads((path / "model.json").read_text())
    model = ModEFormer(ModelConfig.from_mapping(meta["model"]))
    if model_config is not None:
      check_model_config(meta["model"], model_config, str(path))
    params = ocp.StandardCheckpointer().restore(path / "params", _abstract_params(model))
    return model, params, meta
  if (path / "checkpoints").is_dir():
    workdir, step = path, None
  elif path.parent.name == "checkpoints" and path.name.isdigit():
    workdir, step = path.parent.parent, int(path.name)
  else:
    raise FileNotFoundError(f"{path}: not an exported model (model.json or *{MODEL_FILE_SUFFIX}), "
                            "a workdir (checkpoints/) or a checkpoint step directory")
  mngr = make_manager(workdir, read_only=True)
  step = step if step is not None else _latest_or_best(mngr, which)
  meta = read_meta(mngr, step)
  if model_config is not None:
    check_model_config(meta["model"], model_config, f"{workdir}/checkpoints/{step}")
  model = ModEFormer(ModelConfig.from_mapping(meta["model"]))
  # Only the params subtree is read back; optimizer state stays on disk.
  abstract = {"params": _abstract_params(model)}
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=abstract, restore_args=jax.tree.map(
          lambda _: ocp.RestoreArgs(), abstract), partial_restore=True)))
  return model, restored["state"]["params"], meta


def export_params(out_dir: str | os.PathLike, params: Any, model_config: Mapping[str, Any],
                  card: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes an inference-only model directory (``model.json`` + ``params/``)."""
  out = pathlib.Path(out_dir).absolute()
  out.mkdir(parents=True, exist_ok=True)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(out / "params", jax.device_get(params), force=True)
  ckpt.wait_until_finished()
  meta = {"model": ModelConfig.from_mapping(model_config).to_dict(), **dict(card or {})}
  (out / "model.json").write_text(json.dumps(meta, indent=1, default=list))
  return out


def save_model_file(path: str | os.PathLike, params: Any, model_config: Mapping[str, Any],
                    card: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes params and ``model.json``'s fields as one ``*.msgpack`` file (atomically).

  ``load_model`` reads it like an exported directory; ``python -m modeformer_jax.export
  --checkpoint FILE`` turns it into one.
  """
  from flax import serialization
  path = pathlib.Path(path).absolute()
  if path.suffix != MODEL_FILE_SUFFIX:
    raise ValueError(f"{path}: a model file ends in {MODEL_FILE_SUFFIX}")
  meta = {"model": ModelConfig.from_mapping(model_config).to_dict(), **dict(card or {})}
  tree = {"format": MODEL_FILE_FORMAT, "meta_json": json.dumps(meta, default=list),
          "params": serialization.to_state_dict(jax.device_get(params))}
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(serialization.msgpack_serialize(tree))
  os.replace(tmp, path)   # a run killed mid-write leaves the previous file whole
  return path


def _load_model_file(path: pathlib.Path, model_config: Mapping[str, Any] | None
                     ) -> tuple[ModEFormer, Any, dict]:
  """``load_model`` for a ``save_model_file`` file; shapes and dtypes are checked."""
  from flax import serialization
  tree = serialization.msgpack_restore(path.read_bytes())
  if not isinstance(tree, dict) or tree.get("format") != MODEL_FILE_FORMAT:
    raise ValueError(f"{path}: not a modeformer_jax model file")
  meta = json.loads(tree["meta_json"])
  if model_config is not None:
    check_model_config(meta["model"], model_config, str(path))
  model = ModEFormer(ModelConfig.from_mapping(meta["model"]))
  abstract = _abstract_params(model)
  params = serialization.from_state_dict(abstract, tree["params"])
  for (where, want), got in zip(jax.tree_util.tree_leaves_with_path(abstract),
                                jax.tree.leaves(params)):
    if not isinstance(got, np.ndarray) or got.shape != want.shape or got.dtype != want.dtype:
      raise CheckpointMismatchError(
          f"{path}: parameter {jax.tree_util.keystr(where)} is "
          f"{getattr(got, 'dtype', type(got))} {getattr(got, 'shape', '')}; the model "
          f"wants {want.dtype} {want.shape}")
  return model, params, meta
