"""A trained separation model from its workdir: config, variables, class names.

  trained = restore.load(workdir, step=None)   # latest checkpoint, or the given step

The config is WORKDIR/config.json (what the run trained with, overrides included); the model is
the one tasks/separation.py builds from config.model, and the checkpoint's parameters are read
through tribert_jax/initialization.py (every array must fit the model, a mismatch names them),
as `main.py --mode=evaluate` and the embedding export do. Nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from data_pipeline.layout import reader
from data_pipeline.layout import schema
from tribert_jax import initialization
from tribert_jax import validation
from tribert_jax.models import tribert
from tribert_jax.tasks import separation


class RestoreError(FileNotFoundError):
  """The workdir has no config.json or no (such) checkpoint; the message names the path."""


@dataclasses.dataclass
class TrainedModel:
  """A separation model with its checkpoint variables."""
  workdir: str
  config: ml_collections.ConfigDict  # WORKDIR/config.json
  model: nn.Module
  variables: dict[str, Any]  # {params, batch_stats}
  step: int
  class_names: tuple[str, ...]

  @property
  def name(self) -> str:
    return str(self.config.model.name)

  @property
  def reads_pose(self) -> bool:
    """Whether the model reads pose (config validation's rule)."""
    return bool(validation.model_uses_pose(self.config))


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """WORKDIR/config.json as a ConfigDict."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise RestoreError(f"{path}: not found (is --workdir the workdir of a training run?)")
  try:
    return ml_collections.ConfigDict(json.loads(path.read_text()))
  except (json.JSONDecodeError, TypeError, ValueError) as error:
    raise RestoreError(f"{path}: unreadable config ({error})") from error


def class_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The dataset's classes: labels.json of config.data.root when it is there, else the class
  list of config.dataset (or of the class subset); generic names if the count differs."""
  count = int(config.model.num_classes)
  names: tuple[str, ...] = ()
  root = config.data.get("root", "")
  if root and (pathlib.Path(root) / schema.LABELS_FILE).is_file():
    try:
      names = reader.read_labels(root).classes
    except ValueError:
      names = ()
  if not names:
    subset = config.class_subset.get("classes", ()) if "class_subset" in config else ()
    names = tuple(sorted(subset)) or schema.DATASET_CLASSES.get(config.get("dataset", ""), ())
  if len(names) != count:
    names = tuple(f"class {k}" for k in range(count))
  return tuple(names)


def abstract_variables(model: nn.Module, model_config: ml_collections.ConfigDict):
  """Shapes of the model's variables (no FLOPs, no memory), from the task's example inputs."""
  inputs = tribert.example_inputs(model_config, batch_size=1)
  rngs = lambda r: {"params": r, "dropout": r, "masking": r}  # noqa: E731
  return jax.eval_shape(lambda r: tribert.unbox(model.init(rngs(r), inputs, train=False)),
                        jax.random.PRNGKey(0))


def check_workdir(workdir: str | os.PathLike, step: int | None = None
                  ) -> ml_collections.ConfigDict:
  """WORKDIR/config.json of a separation model, once it is known that the workdir has a
  checkpoint (of `step`, when given): the cheap checks, before any input is decoded."""
  workdir = str(workdir)
  config = load_config(workdir)
  name = config.model.get("name", "") if "model" in config else ""
  if name not in separation.MODELS:
    raise RestoreError(f"{workdir}/config.json: config.model.name={name!r} (phase "
                       f"{config.get('phase')!r}) is not a separation model; expected one of "
                       f"{list(separation.MODELS)}")
  pose = config.model.get("pose") or {}
  if pose.get("enabled", False) and pose.get("stgcn_input", "pose") != "pose":
    raise RestoreError(f"{workdir}/config.json: config.model.pose.stgcn_input="
                       f"{pose.get('stgcn_input')!r}; the demo feeds the pose itself (only "
                       "stgcn_input='pose' checkpoints)")
  steps = validation.checkpoint_steps_on_disk(workdir)
  if not steps:
    raise RestoreError(f"no checkpoint in {workdir}/checkpoints (train first, or pass the "
                       "training run's --workdir)")
  if step is not None and step not in steps:
    raise RestoreError(f"no checkpoint of step {step} in {workdir}/checkpoints (have {steps})")
  return config


def load(workdir: str | os.PathLike, step: int | None = None) -> TrainedModel:
  """The model of WORKDIR/config.json with the latest (or `step`'s) checkpoint."""
  workdir = str(workdir)
  config = check_workdir(workdir, step)
  model = separation.build_model(config.model)
  abstract = abstract_variables(model, config.model)
  path = workdir if step is None else os.path.join(workdir, "checkpoints", str(step))
  variables, found = initialization.load_checkpoint_variables(path, "latest", abstract)
  return TrainedModel(workdir=workdir, config=config, model=model, variables=variables,
                      step=int(found), class_names=class_names(config))
