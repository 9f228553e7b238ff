"""Pose classification evaluation: top-1 accuracy and mean BCE over the videos of a split."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import jax
from jax.experimental import multihost_utils
import numpy as np
import optax

from tribert_jax import sharding


def top1_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """1 where the highest-scoring class is one of the video's labels."""
  top = np.argmax(logits, axis=-1)
  return np.take_along_axis(labels, top[:, None], axis=-1)[:, 0] > 0.5


def evaluate(predict_fn: Callable[[Any, Mapping[str, jax.Array]], jax.Array], variables: Any,
             batches: Iterable[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh,
             batch_spec: jax.sharding.PartitionSpec, *, max_batches: int = -1
             ) -> dict[str, float]:
  """{accuracy (top-1 class is one of the video's labels), bce, num_videos} over every valid
  video of `batches` (host-local Mix-and-Separate batches; predict_fn gives [B * N, C] logits),
  gathered over all processes."""
  totals = np.zeros(3)  # [top-1 hits, summed BCE, videos] of this host
  for index, batch in enumerate(batches):
    if 0 <= max_batches <= index:
      break
    logits = sharding.host_local(
        predict_fn(variables, sharding.host_to_global(batch, mesh)), mesh,
        batch_spec)  # this host's videos [B_host * N, C]
    labels = batch["labels"].reshape(logits.shape)
    valid = np.repeat(batch["valid"], batch["labels"].shape[1]) > 0.5
    bce = np.asarray(optax.sigmoid_binary_cross_entropy(logits, labels)).mean(-1)
    totals += [top1_hits(logits, labels)[valid].sum(), bce[valid].sum(), valid.sum()]
  if jax.process_count() > 1:
    totals = np.asarray(multihost_utils.process_allgather(totals)).sum(axis=0)
  count = int(totals[2])
  return {"accuracy": float(totals[0] / count) if count else float("nan"),
          "bce": float(totals[1] / count) if count else float("nan"), "num_videos": count}
