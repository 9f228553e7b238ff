"""The Task interface: what a training phase's model brings to the shared loop.

The loop (tribert_jax/train.py) knows nothing model-specific: it initialises variables with
`init_variables`, differentiates `loss_fn`, calls `evaluate` and keeps the checkpoint with the
highest `best_metric`. `model_inputs` (batch -> model inputs) and `predict` (eval-mode outputs)
are the task's own pieces, shared by its loss, its evaluation and the embedding export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass
class Task:
  """Model-specific pieces of a training phase."""
  model: nn.Module
  # rng -> variables (boxed with logical axis names), built from example inputs.
  init_variables: Callable[[jax.Array], dict[str, Any]]
  # batch -> (model inputs, derived tensors the loss and evaluation also need: spectral
  # features and targets); jit-able, runs on the device.
  model_inputs: Callable[[Batch], tuple[Any, dict[str, jax.Array]]]
  # (params, batch_stats, batch, rng) -> (total loss, (named loss terms, new batch_stats)).
  loss_fn: Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]
  # (variables, batch) -> eval-mode outputs (jit it).
  predict: Callable[[Any, Batch], Any]
  # (state, mesh, workdir, step, writer) -> scalar metrics: evaluates on config.data.eval_split,
  # writes its report into the workdir and its examples to TensorBoard.
  evaluate: Callable[..., dict[str, float]]
  best_metric: str  # summary key that picks the best checkpoint (higher is better)
  # (state, mesh) -> scalar metrics of the cheap periodic evaluation (config.eval.quick_*): a
  # fixed subset of the evaluation split, nothing written; None = the phase has none.
  quick_evaluate: Callable[..., dict[str, float]] | None = None
  # Parameter path prefixes ("pose_encoder/stgcn") the optimiser leaves untouched (frozen).
  frozen: tuple[str, ...] = ()
