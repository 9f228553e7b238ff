"""Pose pre-training task: the ST-GCN PoseClassifier on each video's instrument labels.

Runs in the shared loop (tribert_jax.train.train_and_evaluate with config.phase =
"pose_pretrain"). Every video of a Mix-and-Separate batch is one classification example
(pose [B, N, P, W, J, 3] -> [B*N, P, W, J, 3]); the loss is a multi-label sigmoid BCE (duets
carry two labels); evaluation reports top-1 accuracy (the top class is one of the video's labels)
and mean BCE on the validation mixtures' videos.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipeline import input_pipeline
from tribert_jax import evaluate
from tribert_jax import sharding
from tribert_jax.models import stgcn


def _per_video(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Flattens the N videos of each example: pose [B*N,P,W,J,3], mask [B*N,P,W], labels
  [B*N,C], valid [B*N]."""
  pose, pose_mask, labels = batch["pose"], batch["pose_mask"], batch["labels"]
  b, n = labels.shape[:2]
  valid = jnp.repeat(batch["valid"], n)  # [B*N]
  return (pose.reshape((b * n,) + pose.shape[2:]), pose_mask.reshape((b * n,) + pose_mask.shape[2:]),
          labels.reshape(b * n, -1), valid)


def classification_loss(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over valid videos of the per-class-averaged sigmoid BCE."""
  per_video = optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)
  return jnp.sum(per_video * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def top1_hits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """1 where the highest-scoring class is one of the video's labels."""
  top = np.argmax(logits, axis=-1)
  return np.take_along_axis(labels, top[:, None], axis=-1)[:, 0] > 0.5


def pose_task(config: ml_collections.ConfigDict, class_names: list[str]):
  """The Task (see tribert_jax.train.Task) of the pose pre-training phase."""
  from tribert_jax import train  # pylint: disable=g-import-not-at-top  (train imports us lazily)

  model = stgcn.PoseClassifier(config=config.model)
  inputs = config.model.input

  def init_variables(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    pose = jnp.zeros((1, inputs.num_persons, inputs.pose_window, inputs.num_joints, 3))
    pose_mask = jnp.ones((1, inputs.num_persons, inputs.pose_window))
    return model.init({"params": params_rng, "dropout": dropout_rng}, pose, pose_mask,
                      train=False)

  def loss_fn(params, batch_stats, batch, rng):
    pose, pose_mask, labels, valid = _per_video(batch)
    logits, mutated = model.apply({"params": params, "batch_stats": batch_stats}, pose,
                                  pose_mask, train=True, rngs={"dropout": rng},
                                  mutable=["batch_stats"])
    loss = classification_loss(logits, labels, valid)
    return loss, ({"classification": loss}, mutated.get("batch_stats", batch_stats))

  def predict(variables, batch):
    pose, pose_mask, _, _ = _per_video(batch)
    return model.apply(variables, pose, pose_mask, train=False)

  eval_pipeline = None

  def run_evaluation(state, mesh, workdir, step, writer):
    del writer  # scalars are written by the loop
    nonlocal eval_pipeline
    if eval_pipeline is None:
      eval_pipeline = input_pipeline.build_eval_pipeline(config.data)
    batch_sharding = sharding.data_sharding(mesh)
    predict_jit = jax.jit(predict, out_shardings=batch_sharding)
    totals = np.zeros(3)  # [top-1 hits, summed BCE, videos] of this host
    for index, batch in enumerate(eval_pipeline):
      if 0 <= config.eval.max_batches <= index:
        break
      logits = evaluate.host_local(
          predict_jit(state.variables(), sharding.host_to_global(batch, mesh)), mesh,
          batch_sharding.spec)  # this host's videos [B_host * N, C]
      labels = batch["labels"].reshape(logits.shape)
      valid = np.repeat(batch["valid"], batch["labels"].shape[1]) > 0.5
      bce = np.asarray(optax.sigmoid_binary_cross_entropy(logits, labels)).mean(-1)
      totals += [top1_hits(logits, labels)[valid].sum(), bce[valid].sum(), valid.sum()]
    if jax.process_count() > 1:
      totals = np.asarray(multihost_utils.process_allgather(totals)).sum(axis=0)
    count = int(totals[2])
    summary = {"accuracy": float(totals[0] / count) if count else float("nan"),
               "bce": float(totals[1] / count) if count else float("nan"), "num_videos": count}
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
      with open(os.path.join(workdir, "eval", f"{config.data.eval_split}_step_{step}.json"),
                "w") as file:
        json.dump(summary, file, indent=2)
    logging.info("pose evaluation at step %d: top-1 accuracy %.3f over %d videos", step,
                 summary["accuracy"], count)
    return summary

  return train.Task(model=model, init_variables=init_variables, loss_fn=loss_fn,
                    evaluate=run_evaluation, best_metric="accuracy")
