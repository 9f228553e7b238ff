"""Optimiser and learning-rate schedule built from config.optim (optax).

optim.name = "bert_adam" is BertAdam as the TriBERT release trains with it
(pytorch_pretrained_bert.optimization.BertAdam, the same code as the release's
tribert/optimization.py): per-tensor gradient clipping, Adam moments without bias correction,
decoupled weight decay added to the update before the learning-rate scaling, eps outside the
square root; with decay="warmup_linear" its schedule. One difference: the release decays every
parameter whose name has no "bias"/"LayerNorm" (BatchNorm scales included); here every parameter
with at least 2 dimensions (kernels, embedding tables) is decayed, no 1-D one (biases, LayerNorm
and BatchNorm scales).

optim.name = "sgd" is torch.optim.SGD as Sound-of-Pixels trains with it (dampening 0, no
nesterov): g <- g + weight_decay * p (coupled, every parameter, as torch decays every parameter
of a group), buf <- momentum * buf + g (buf = g at the first update), p <- p - lr * buf.
optim.decay = "step" is the matching schedule: the learning rate times decay_factor at each
update count of decay_steps (absolute) and of decay_fractions (fractions of the run's updates,
so they follow an override of num_train_steps).

optim.lr_multipliers: parameter path prefix ("video_network/resnet", or a top-level module name)
-> factor on the schedule; the longest matching prefix wins, and a key that matches no parameter
is an error (a mistyped key must not silently train everything at the base rate).
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


def step_boundaries(optim: ml_collections.ConfigDict, total_steps: int) -> list[int]:
  """The update counts where decay="step" multiplies the rate by decay_factor: decay_steps as
  given, decay_fractions as round(fraction * total_steps), sorted (a count may repeat)."""
  absolute = [int(s) for s in optim.get("decay_steps", ())]
  relative = [int(round(float(f) * int(total_steps))) for f in optim.get("decay_fractions", ())]
  return sorted(absolute + relative)


def step_schedule(peak: float, boundaries: Sequence[int], factor: float,
                  warmup_steps: int = 0) -> optax.Schedule:
  """Piecewise constant: peak * factor**(number of boundaries <= count), count the absolute
  update count (0 for the first update); a linear warm-up from 0 over warmup_steps first."""
  bounds = jnp.asarray(list(boundaries) or [-1], jnp.int32)
  used = len(boundaries) > 0

  def schedule(count):
    count = jnp.asarray(count, jnp.int32)
    drops = jnp.sum(count >= bounds) if used else 0
    rate = peak * jnp.power(jnp.float32(factor), drops)
    if warmup_steps > 0:
      rate = jnp.where(count < warmup_steps, peak * count / warmup_steps, rate)
    return rate

  return schedule


def make_schedule(optim: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to optim.learning_rate, then constant, cosine or step decay; or
  BertAdam's "warmup_linear" (warm-up over optim.warmup_proportion of total_steps, then linear
  to 0)."""
  peak = float(optim.learning_rate)
  warmup = int(optim.warmup_steps)
  if optim.decay == "warmup_linear":
    return warmup_linear_schedule(peak, total_steps, optim.get("warmup_proportion", 0.1))
  if optim.decay == "step":
    boundaries = step_boundaries(optim, total_steps)
    if not boundaries:
      raise ValueError("config.optim.decay='step' needs config.optim.decay_steps or "
                       "config.optim.decay_fractions")
    return step_schedule(peak, boundaries, float(optim.decay_factor), warmup)
  if optim.decay == "constant":
    decay = optax.constant_schedule(peak)
  elif optim.decay == "cosine":
    decay_steps = max(1, int(total_steps) - warmup)
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(optim.end_lr_factor))
  else:
    raise ValueError(f"config.optim.decay={optim.decay!r}: expected 'constant', 'cosine', "
                     f"'step' or 'warmup_linear'")
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


def torch_sgd(learning_rate: optax.ScalarOrSchedule, momentum: float = 0.0,
              weight_decay: float = 0.0) -> optax.GradientTransformation:
  """torch.optim.SGD (dampening 0, no nesterov) as an optax chain: coupled weight decay on every
  parameter added to the gradient, then the momentum buffer, then -lr(count) scaling."""
  chain = []
  if weight_decay:
    chain.append(optax.add_decayed_weights(weight_decay))
  if momentum:
    chain.append(optax.trace(decay=momentum, nesterov=False))
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
    return torch_sgd(learning_rate, momentum=optim.get("momentum", optim.b1),
                     weight_decay=optim.weight_decay)
  if optim.name == "bert_adam":
    return bert_adam(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay,
                     max_grad_norm=optim.get("per_tensor_clip_norm", 1.0))
  raise ValueError(f"config.optim.name={optim.name!r}: expected 'adam', 'adamw', 'sgd' or "
                   f"'bert_adam'")


def parameter_path(path: Sequence[Any]) -> str:
  """'a/b/kernel' of a tree_map_with_path key path (dict keys only: logical-partitioning boxes
  add attribute keys, which are not part of the parameter's name)."""
  return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def matching_prefix(name: str, prefixes: Sequence[str]) -> str | None:
  """The longest of prefixes that is name itself or a whole-component prefix of it ('a/b'
  matches 'a/b/kernel', not 'a/bc/kernel'); None if none."""
  matches = [p for p in prefixes if name == p or name.startswith(p + "/")]
  return max(matches, key=len) if matches else None


def param_group_labels(multipliers: Mapping[str, float]) -> Callable[[Any], Any]:
  """Returns a function labelling each parameter with the longest multiplier key that is a path
  prefix of it, else DEFAULT_GROUP; it raises a ValueError naming every key that matches no
  parameter."""
  keys = sorted(multipliers)

  def label(params):
    used = set()
    def leaf_label(path, _):
      match = matching_prefix(parameter_path(path), keys)
      if match is None:
        return DEFAULT_GROUP
      used.add(match)
      return match
    labels = jax.tree_util.tree_map_with_path(leaf_label, params)
    unused = [k for k in keys if k not in used]
    if unused:
      raise ValueError(f"config.optim.lr_multipliers keys {unused} match no parameter path "
                       f"prefix of the model (keys are 'module' or 'module/submodule', e.g. "
                       f"'video_network/resnet'; top-level modules: "
                       f"{sorted(str(k) for k in params)})")
    return labels

  return label


def freeze(tx: optax.GradientTransformation, prefixes: Sequence[str]
           ) -> optax.GradientTransformation:
  """tx for every parameter except those whose path ('a/b/kernel') starts with one of the
  prefixes: their updates are zero (no gradient step, no weight decay, no moments kept)."""

  def label(params):
    def leaf_label(path, _):
      name = parameter_path(path)
      return "frozen" if matching_prefix(name, prefixes) is not None else "trainable"
    return jax.tree_util.tree_map_with_path(leaf_label, params)

  return optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, label)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   param_names: list[str] | None = None, frozen: Sequence[str] = ()
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimiser, schedule of the base learning rate) for config.optim.

  Per-module learning rates: optim.lr_multipliers maps a parameter path prefix (a top-level
  module name, or 'module/submodule' such as 'video_network/resnet') to a factor on the base
  schedule; the longest matching prefix wins. A key whose first component is not a top-level
  name of the model (param_names) is an error here; a key that matches no parameter at all is
  an error when the optimiser state is initialised (tx.init). frozen: parameter path prefixes
  that never change (tasks' Task.frozen).
  """
  schedule = make_schedule(optim, total_steps)
  multipliers = dict(optim.lr_multipliers)
  if param_names is not None:
    unknown = sorted(k for k in multipliers if k.split("/")[0] not in set(param_names))
    if unknown:
      raise ValueError(f"config.optim.lr_multipliers keys {unknown} match no parameter path "
                       f"prefix of the model (top-level names: {sorted(param_names)})")
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
