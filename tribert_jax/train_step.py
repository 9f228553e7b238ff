"""The trainer's jitted step: loss and gradients (optionally accumulated over micro-batches),
the optimiser update and the step's metrics.

Kept apart from tribert_jax/train.py (the loop) so that compiling or benchmarking the step
imports neither the tf.data pipeline nor TensorBoard's writer (TensorFlow alone holds ~0.5 GiB
of resident memory once imported).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax

from tribert_jax import sharding
from tribert_jax.tasks.base import Task
from tribert_jax.train_state import TrainState


def _split_microbatches(x: jax.Array, num: int, mesh: jax.sharding.Mesh) -> jax.Array:
  """[B, ...] -> [num, B / num, ...], micro-batch m = rows m, num + m, ...: each device keeps
  its own rows (the batch axis stays sharded on the second dimension)."""
  b = x.shape[0]
  x = x.reshape((b // num, num) + x.shape[1:]).swapaxes(0, 1)
  spec = jax.sharding.PartitionSpec(None, sharding.batch_axes(mesh))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _top_level_grad_norms(grads: Mapping[str, Any]) -> dict[str, jax.Array]:
  """Global norm of the gradient of every top-level module (names which one went non-finite)."""
  return {f"grad_norm/{name}": optax.global_norm(g) for name, g in grads.items()}


def make_train_step(task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Returns train_step(state, batch) -> (state, metrics), to be jitted with donated state."""
  num_micro = int(config.grad_accum_steps)
  grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(state.rng, state.step)
    if num_micro == 1:
      (loss, (terms, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch, rng)
    else:
      micro = jax.tree.map(lambda x: _split_microbatches(x, num_micro, mesh), batch)

      def accumulate(carry, inputs):
        grads_sum, batch_stats = carry
        index, micro_batch = inputs
        (loss, (terms, batch_stats)), grads = grad_fn(
            state.params, batch_stats, micro_batch, jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), (loss, terms)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, batch_stats), (losses_, terms) = jax.lax.scan(
          accumulate, (zeros, state.batch_stats), (jnp.arange(num_micro), micro))
      grads = jax.tree.map(lambda g: g / num_micro, grads)
      loss = jnp.mean(losses_)
      terms = jax.tree.map(jnp.mean, terms)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()},
               "grad_norm": optax.global_norm(grads), **_top_level_grad_norms(grads),
               "learning_rate": schedule(state.step)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step
