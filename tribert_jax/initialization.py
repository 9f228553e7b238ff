"""Where a training state's parameters come from, and the one checkpoint -> parameters mapping.

Initialisation order (restore_or_initialize; big_vision's "Load Checkpoint" shape):
  1. resume: the latest checkpoint under WORKDIR/checkpoints (same step, data position, rng);
  2. otherwise a fresh state (sharded init), then
     a. pretrained weights config.model names (ImageNet ResNet-50 / ResNet-18 .npz), then
     b. config.init.parts.* (the staged recipe): each named part with a checkpoint copies the
        parameters under its target prefixes from another phase's workdir (e.g. the visual
        trunk and U-Net of a separation_pretrain run, a pose_pretrain run's ST-GCN into
        TriBERT's pose encoder), over (a);
     c. config.init.checkpoint (another phase's workdir): parameters mapped by `map_parameters`
        (fresh optimiser state, step 0), over (a); validation refuses it together with (b);
  3. otherwise the random initialisation stands.
Every copy of checkpoint arrays into a model's variables goes through `map_parameters`
(phase -> phase, pose classifier -> TriBERT, the embedding export's checkpoint check).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tribert_jax import checkpointing
from tribert_jax import sharding
from tribert_jax.models import pretrained
from tribert_jax.tasks.base import Task
from tribert_jax.train_state import TrainState

# PoseClassifier's ST-GCN ("stgcn/...") is TriBERT's pose encoder's ST-GCN.
POSE_ENCODER_PREFIX_MAP = (("stgcn", "pose_encoder/stgcn"),)


# ----------------------------------------------------------------------------------------------
# The mapping.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MappingReport:
  """What map_parameters did, path by path ('a/b/kernel' strings)."""
  copied: list[str] = dataclasses.field(default_factory=list)
  reinitialised: list[str] = dataclasses.field(default_factory=list)
  kept_target: list[str] = dataclasses.field(default_factory=list)
  unused_source: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    """One line for the log."""
    return (f"copied {len(self.copied)} arrays, re-initialised {len(self.reinitialised)} "
            f"(e.g. {self.reinitialised[:3]}), kept {len(self.kept_target)} target-only arrays, "
            f"{len(self.unused_source)} source arrays unused")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a/b/kernel': array} from nested dicts."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten(value, path))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Nested dicts from {'a/b/kernel': array}."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def map_parameters(target: Mapping[str, Any], source: Mapping[str, Any], *,
                   prefix_map: Iterable[tuple[str, str]] = (("", ""),),
                   reinit_patterns: Iterable[str] = (),
                   require_all: bool = True) -> tuple[dict[str, Any], MappingReport]:
  """Copies source arrays into a freshly initialised target tree (nested dicts).

  prefix_map: (source_prefix, target_prefix) pairs; a source path 'src_prefix/rest' goes to
    'target_prefix/rest'. ("", "") maps every path to itself (pretrain -> finetune);
    ("stgcn", "pose_encoder/stgcn") moves a pose classifier's graph network into TriBERT.
  reinit_patterns: regexes (re.search on the target path) of arrays that keep their new
    initialisation even if the source has them, e.g. classification layers whose class count
    changes between MUSIC21 (21) and MUSIC (11).
  require_all: every target array under a mapped target prefix (not re-initialised) must be
    found in the source with the same shape; otherwise a ValueError lists what is missing.
  Target leaves may be arrays or jax.ShapeDtypeStructs; copied arrays take the target's dtype.
  """
  flat_target = flatten(target)
  flat_source = flatten(source)
  patterns = [re.compile(p) for p in reinit_patterns]
  prefix_map = list(prefix_map)
  report = MappingReport()
  used_source: set[str] = set()
  missing, mismatched = [], []

  def source_path_for(target_path: str) -> str | None:
    for source_prefix, target_prefix in prefix_map:
      if not target_prefix:
        rest = target_path
      elif target_path == target_prefix or target_path.startswith(target_prefix + "/"):
        rest = target_path[len(target_prefix):].lstrip("/")
      else:
        continue
      return f"{source_prefix}/{rest}" if source_prefix else rest
    return None

  merged = {}
  for path, value in flat_target.items():
    source_path = source_path_for(path)
    if source_path is None:
      merged[path] = value
      report.kept_target.append(path)
      continue
    if any(p.search(path) for p in patterns):
      merged[path] = value
      report.reinitialised.append(path)
      if source_path in flat_source:
        used_source.add(source_path)
      continue
    if source_path not in flat_source:
      missing.append(f"{path} (from {source_path})")
      merged[path] = value
      continue
    source_value = np.asarray(flat_source[source_path])
    if tuple(source_value.shape) != tuple(np.shape(value)):
      mismatched.append(f"{path}: target {tuple(np.shape(value))} vs source "
                        f"{source_path} {tuple(source_value.shape)}")
      merged[path] = value
      continue
    merged[path] = source_value.astype(value.dtype if hasattr(value, "dtype")
                                       else source_value.dtype)
    used_source.add(source_path)
    report.copied.append(path)
  if require_all and (missing or mismatched):
    raise ValueError(
        "checkpoint does not fit the model: "
        + (f"missing {len(missing)} arrays, e.g. {missing[:5]}; " if missing else "")
        + (f"shape mismatches (add a reinit pattern if intended): {mismatched[:5]}"
           if mismatched else ""))
  report.unused_source = sorted(set(flat_source) - used_source)
  return unflatten(merged), report


def load_pose_classifier(tribert_variables: Mapping[str, Any],
                         classifier_variables: Mapping[str, Any]) -> dict[str, Any]:
  """TriBERT variables (unboxed) with the PoseClassifier's ST-GCN (params/batch_stats ["stgcn"])
  copied into ["pose_encoder"]["stgcn"] (shapes must agree)."""
  classifier_variables = nn.meta.unbox(classifier_variables)
  return {collection: map_parameters(tribert_variables[collection],
                                     classifier_variables[collection],
                                     prefix_map=POSE_ENCODER_PREFIX_MAP)[0]
          for collection in ("params", "batch_stats")}


def load_checkpoint_variables(path: str, which: str, abstract_variables: Mapping[str, Any]
                              ) -> tuple[dict[str, Any], int]:
  """(variables {params, batch_stats} as numpy, step) of a checkpoint that must fit
  abstract_variables exactly (a mismatch names the arrays and the checkpoint)."""
  state, _, step = checkpointing.load_state_tree(path, which)
  source = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  target = {k: abstract_variables.get(k, {}) for k in source}
  try:
    mapped, report = map_parameters(target, source)
    if report.unused_source:
      raise ValueError(f"{len(report.unused_source)} arrays not in the model, e.g. "
                       f"{report.unused_source[:4]}")
  except ValueError as error:
    raise ValueError(f"checkpoint {path} (step {step}) does not fit config.model ({error}); "
                     "pass the pretrain run's size / --config.model overrides") from error
  return {k: mapped.get(k, {}) for k in source}, step


# ----------------------------------------------------------------------------------------------
# A state: abstract init, shardings, sharded init; the initialisation order.
# ----------------------------------------------------------------------------------------------


def make_state_initializer(task: Task, tx: optax.GradientTransformation,
                           config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Returns (init_fn jitted with sharded outputs, abstract state, state shardings, init rng)."""
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.seed))

  def boxed_init(rng):
    variables = task.init_variables(rng)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=run_rng)

  # Abstract init: shapes and logical axis names only, no FLOPs and no memory.
  boxed = jax.eval_shape(boxed_init, init_rng)
  # optax.multi_transform (per-module learning rates) masks each group's moments by putting
  # MaskedNode() inside the parameter's logical box; unboxing leaves a bare MaskedNode there, so
  # the sharding tree must hold one too (not the box's PartitionSpec).
  boxed = jax.tree.map(
      lambda x: x.value if isinstance(getattr(x, "value", None), optax.MaskedNode) else x,
      boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  specs = nn.get_partition_spec(boxed)
  shardings = sharding.logical_to_mesh_sharding(specs, mesh, sharding.sharding_rules(config))
  init = lambda rng: nn.meta.unbox(boxed_init(rng))  # noqa: E731
  abstract = jax.eval_shape(init, init_rng)
  return jax.jit(init, out_shardings=shardings), abstract, shardings, init_rng


def _place(tree: Any, shardings: Any) -> Any:
  """Host numpy tree -> global arrays with the given shardings (works on every process)."""
  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def _map_collection(state_collection: Any, source: Mapping[str, Any], shardings: Any,
                    prefix_map, reinit_patterns, what: str) -> Any:
  """Maps one variable collection (params or batch_stats) from a source checkpoint."""
  target = jax.tree.map(np.asarray, jax.device_get(state_collection))
  merged, report = map_parameters(target, source, prefix_map=prefix_map,
                                  reinit_patterns=reinit_patterns)
  logging.info("%s: %s", what, report.summary())
  if source and not report.copied and not report.reinitialised:
    raise ValueError(f"{what}: no array of the checkpoint maps into the model with prefix_map "
                     f"{list(prefix_map)} (is it the right phase's checkpoint?)")
  merged = jax.tree.unflatten(jax.tree.structure(state_collection),
                              jax.tree.leaves(merged))  # same container types as the state
  return _place(merged, shardings)


def init_from_checkpoint(state: TrainState, shardings: TrainState, path: str, which: str,
                         prefix_map, reinit_patterns, copy_batch_stats: bool) -> TrainState:
  """Copies another phase's parameters into a freshly initialised state (optimiser state,
  step and rng stay fresh). See map_parameters for the mapping rules."""
  source, _, step = checkpointing.load_state_tree(path, which)
  logging.info("initialising from %s (step %d)", path, step)
  prefix_map = [tuple(p) for p in prefix_map]
  params = _map_collection(state.params, source["params"], shardings.params, prefix_map,
                           reinit_patterns, "params")
  batch_stats = state.batch_stats
  if copy_batch_stats and state.batch_stats and source.get("batch_stats"):
    batch_stats = _map_collection(state.batch_stats, source["batch_stats"],
                                  shardings.batch_stats, prefix_map, reinit_patterns,
                                  "batch_stats")
  return state.replace(params=params, batch_stats=batch_stats)


def apply_pretrained_weights(state: TrainState, shardings: TrainState | None,
                             config: ml_collections.ConfigDict) -> TrainState:
  """A fresh state with the weights config.model names loaded (an ImageNet ResNet-50 or -18
  .npz at config.model.visual.pretrained_path); unchanged when it names none. Another phase's
  checkpoint (config.init.parts, config.init.checkpoint), applied afterwards, takes precedence
  over these."""
  model_config = config.model
  if not pretrained.pretrained_resnet_path(model_config):
    return state
  variables = pretrained.load_pretrained(
      {"params": state.params, "batch_stats": state.batch_stats}, model_config)
  params, batch_stats = variables["params"], variables["batch_stats"]
  if shardings is not None:
    params = jax.device_put(params, shardings.params)
    batch_stats = jax.device_put(batch_stats, shardings.batch_stats)
  return state.replace(params=params, batch_stats=batch_stats)


def restore_or_initialize(task: Task, tx: optax.GradientTransformation,
                          config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                          checkpointer: checkpointing.Checkpointer
                          ) -> tuple[TrainState, TrainState, dict[str, Any]]:
  """The initialisation order of the module docstring.

  Returns (state, state shardings, progress record of the restored checkpoint or {}).
  """
  init_fn, abstract, shardings, init_rng = make_state_initializer(task, tx, config, mesh)
  restored = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(abstract, shardings))
  if restored is not None:
    state, progress = restored
    logging.info("resumed from %s at step %d", checkpointer.workdir, int(state.step))
    return state, shardings, progress
  state = init_fn(init_rng)
  state = apply_pretrained_weights(state, shardings, config)
  for name, part in sorted(config.init.get("parts", {}).items()):
    if part.checkpoint:
      logging.info("init part %r from %s", name, part.checkpoint)
      state = init_from_checkpoint(state, shardings, part.checkpoint, part.which,
                                   part.prefix_map, (), True)
  if config.init.checkpoint:
    state = init_from_checkpoint(state, shardings, config.init.checkpoint, config.init.which,
                                 config.init.prefix_map, config.init.reinit_patterns,
                                 config.init.copy_batch_stats)
  return state, shardings, {}
