"""Optimiser and learning-rate schedule built from config.optim (optax).

optim.name = "bert_adam" is BertAdam as the TriBERT release trains with it
(pytorch_pretrained_bert.optimization.BertAdam, the same code as the release's
tribert/optimization.py): per-tensor gradient clipping, Adam moments without bias correction,
decoupled weight decay added to the update before the learning-rate scaling, eps outside the
square root; with decay="warmup_linear" its schedule. One difference: the release decays every
parameter whose name has no "bias"/"LayerNorm" (BatchNorm scales included); here every parameter
with at least 2 dimensions (kernels, embedding tables) is decayed, no 1-D one (biases, LayerNorm
and BatchNorm scales).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

DEFAULT_GROUP = "default"


def warmup_linear_schedule(peak: float, total_steps: int, warmup_proportion: float
                           ) -> optax.Schedule:
  """BertAdam's "warmup_linear" at update count c (0 for the first update), p = c / total:
  peak * p / w while p < w, then peak * max((p - 1) / (w - 1), 0)."""
  total, w = float(max(int(total_steps), 1)), float(warmup_proportion)

  def schedule(count):
    p = jnp.asarray(count, jnp.float32) / total
    decay = jnp.maximum((p - 1.0) / (w - 1.0), 0.0)
    return peak * (jnp.where(p < w, p / w, decay) if w > 0 else decay)

  return schedule


def make_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to optim.learning_rate, then constant or cosine decay; or BertAdam's
  "warmup_linear" (warm-up over optim.warmup_proportion of total_steps, then linear to 0)."""
  peak = float(optim.learning_rate)
  warmup = int(optim.warmup_steps)
  if optim.decay == "warmup_linear":
    return warmup_linear_schedule(peak, total_steps, optim.get("warmup_proportion", 0.1))
  if optim.decay == "constant":
    decay = optax.constant_schedule(peak)
  elif optim.decay == "cosine":
    decay_steps = max(1, int(total_steps) - warmup)
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(optim.end_lr_factor))
  else:
    raise ValueError(f"config.optim.decay={optim.decay!r}: expected 'constant', 'cosine' or "
                     f"'warmup_linear'")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


class BertAdamState(NamedTuple):
  mu: Any  # first moment (BertAdam next_m)
  nu: Any  # second moment (BertAdam next_v)


def clip_by_tensor_norm(max_norm: float) -> optax.GradientTransformation:
  """Clips every gradient tensor on its own to L2 norm max_norm, as torch's
  clip_grad_norm_(p, max_norm) per parameter: g * max_norm / (||g|| + 1e-6) when that factor < 1."""

  def update_fn(updates, state, params=None):
    del params
    def clip(g):
      coef = max_norm / (jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32)))) + 1e-6)
      return jnp.where(coef < 1.0, g * coef.astype(g.dtype), g)
    return jax.tree.map(clip, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_adam_no_bias_correction(b1: float, b2: float, eps: float
                                     ) -> optax.GradientTransformation:
  """m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, update m / (sqrt(v) + eps): Adam without
  the bias correction (BertAdam)."""

  def init_fn(params):
    zeros = lambda p: jnp.zeros_like(p, dtype=jnp.float32)
    return BertAdamState(jax.tree.map(zeros, params), jax.tree.map(zeros, params))

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, updates)
    out = jax.tree.map(lambda m, v, g: (m / (jnp.sqrt(v) + eps)).astype(g.dtype), mu, nu, updates)
    return out, BertAdamState(mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def bert_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
              eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0
              ) -> optax.GradientTransformation:
  """BertAdam as an optax chain: per-tensor clipping, moments without bias correction, decoupled
  weight decay on >= 2-D parameters added before the learning rate, then -lr(count) scaling."""
  chain = []
  if max_grad_norm and max_grad_norm > 0:
    chain.append(clip_by_tensor_norm(float(max_grad_norm)))
  chain.append(scale_by_adam_no_bias_correction(b1, b2, eps))
  if weight_decay:
    chain.append(optax.add_decayed_weights(
        weight_decay, mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)))
  chain.append(optax.scale_by_learning_rate(learning_rate))
  return optax.chain(*chain)


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
  if optim.name == "bert_adam":
    return bert_adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay,
                     max_grad_norm=optim.get("per_tensor_clip_norm", 1.0))
  raise ValueError(f"config.optim.name={optim.name!r}: expected 'adam', 'adamw', 'sgd' or "
                   f"'bert_adam'")


def param_group_labels(multipliers: Mapping[str, float]) -> Callable[[Any], Any]:
  """Returns a function labelling each parameter with its top-level module name if that name
  has a learning-rate multiplier, else DEFAULT_GROUP."""

  def label(params):
    def leaf_label(path, _):
      top = getattr(path[0], "key", str(path[0]))
      return top if top in multipliers else DEFAULT_GROUP
    return jax.tree_util.tree_map_with_path(leaf_label, params)

  return label


def freeze(tx: optax.GradientTransformation, prefixes: Sequence[str]
           ) -> optax.GradientTransformation:
  """tx for every parameter except those whose path ('a/b/kernel') starts with one of the
  prefixes: their updates are zero (no gradient step, no weight decay, no moments kept)."""

  def label(params):
    def leaf_label(path, _):
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      return "frozen" if any(name == p or name.startswith(p + "/") for p in prefixes) \
          else "trainable"
    return jax.tree_util.tree_map_with_path(leaf_label, params)

  return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, label)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   param_names: list[str] | None = None, frozen: Sequence[str] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimiser, schedule of the base learning rate) for config.optim.

  Per-module learning rates: optim.lr_multipliers maps a top-level parameter collection name
  (e.g. the pretrained visual backbone) to a factor on the base schedule. Names that are not in
  the model (param_names) are an error rather than silently ignored. frozen: parameter path
  prefixes that never change (tasks' Task.frozen).
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
  if frozen:
    tx = freeze(tx, tuple(frozen))
  if optim.grad_clip_norm and optim.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(optim.grad_clip_norm)), tx)
  return tx, schedule
