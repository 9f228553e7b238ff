"""Optimiser and learning-rate schedule built from config.optim (optax)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import ml_collections
import optax

DEFAULT_GROUP = "default"


def make_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to optim.learning_rate, then constant or cosine decay."""
  peak = float(optim.learning_rate)
  warmup = int(optim.warmup_steps)
  if optim.decay == "constant":
    decay = optax.constant_schedule(peak)
  elif optim.decay == "cosine":
    decay_steps = max(1, int(total_steps) - warmup)
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(optim.end_lr_factor))
  else:
    raise ValueError(f"config.optim.decay={optim.decay!r}: expected 'constant' or 'cosine'")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _base_optimizer(optim: ml_collections.ConfigDict,
                    learning_rate: optax.Schedule) -> optax.GradientTransformation:
  """The optimiser proper; Adam is the paper's choice."""
  if optim.name == "adam":
    return optax.adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  if optim.name == "adamw":
    return optax.adamw(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                       weight_decay=optim.weight_decay)
  if optim.name == "sgd":
    return optax.sgd(learning_rate, momentum=optim.b1)
  raise ValueError(f"config.optim.name={optim.name!r}: expected 'adam', 'adamw' or 'sgd'")


def param_group_labels(multipliers: Mapping[str, float]) -> Callable[[Any], Any]:
  """Returns a function labelling each parameter with its top-level module name if that name
  has a learning-rate multiplier, else DEFAULT_GROUP."""

  def label(params):
    def leaf_label(path, _):
      top = getattr(path[0], "key", str(path[0]))
      return top if top in multipliers else DEFAULT_GROUP
    return jax.tree_util.tree_map_with_path(leaf_label, params)

  return label


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   param_names: list[str] | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimiser, schedule of the base learning rate) for config.optim.

  Per-module learning rates: optim.lr_multipliers maps a top-level parameter collection name
  (e.g. the pretrained visual backbone) to a factor on the base schedule. Names that are not in
  the model (param_names) are an error rather than silently ignored.
  """
  schedule = make_schedule(optim, total_steps)
  multipliers = dict(optim.lr_multipliers)
  if param_names is not None:
    unknown = sorted(set(multipliers) - set(param_names))
    if unknown:
      raise ValueError(f"config.optim.lr_multipliers names {unknown}, which are not top-level "
                       f"parameter names of the model ({sorted(param_names)})")
  if multipliers:
    transforms = {DEFAULT_GROUP: _base_optimizer(optim, schedule)}
    for name, factor in multipliers.items():
      # Bind factor now (late binding in a loop would give every group the last factor).
      scaled = lambda step, factor=float(factor): factor * schedule(step)
      transforms[name] = _base_optimizer(optim, scaled)
    tx = optax.multi_transform(transforms, param_group_labels(multipliers))
  else:
    tx = _base_optimizer(optim, schedule)
  if optim.grad_clip_norm and optim.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(optim.grad_clip_norm)), tx)
  return tx, schedule
