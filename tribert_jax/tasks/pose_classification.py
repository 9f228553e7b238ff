"""Pose pre-training task: the ST-GCN PoseClassifier on each video's instrument labels.

Runs in the shared loop (tribert_jax.train.train_and_evaluate with config.phase =
"pose_pretrain"). Every video of a Mix-and-Separate batch is one classification example
(pose [B, N, P, W, J, 3] -> [B*N, P, W, J, 3]); the loss is a multi-label sigmoid BCE (duets
carry two labels); evaluation reports top-1 accuracy (the top class is one of the video's labels)
and mean BCE on the validation mixtures' videos.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax import losses
from tribert_jax.models import stgcn
from tribert_jax.tasks import classification as classification_task
from tribert_jax.tasks.base import Task


def model_inputs(batch: Mapping[str, jax.Array]
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Flattens the N videos of each example: ({pose [B*N,P,W,J,3], pose_mask [B*N,P,W]},
  {labels [B*N,C], valid [B*N]})."""
  pose, pose_mask, labels = batch["pose"], batch["pose_mask"], batch["labels"]
  b, n = labels.shape[:2]
  valid = jnp.repeat(batch["valid"], n)  # [B*N]
  inputs = dict(pose=pose.reshape((b * n,) + pose.shape[2:]),
                pose_mask=pose_mask.reshape((b * n,) + pose_mask.shape[2:]))
  return inputs, dict(labels=labels.reshape(b * n, -1), valid=valid)


def pose_classification_task(config: ml_collections.ConfigDict,
                             class_names: Sequence[str]) -> Task:
  """The Task of the pose pre-training phase."""
  del class_names  # the evaluation reports accuracy only
  model = stgcn.PoseClassifier(config=config.model)
  inputs_config = config.model.input

  def init_variables(rng):
    params_rng, dropout_rng = jax.random.split(rng)
    pose = jnp.zeros((1, inputs_config.num_persons, inputs_config.pose_window,
                      inputs_config.num_joints, 3))
    pose_mask = jnp.ones((1, inputs_config.num_persons, inputs_config.pose_window))
    return model.init({"params": params_rng, "dropout": dropout_rng}, pose, pose_mask,
                      train=False)

  def loss_fn(params, batch_stats, batch, rng):
    inputs, targets = model_inputs(batch)
    logits, mutated = model.apply({"params": params, "batch_stats": batch_stats},
                                  inputs["pose"], inputs["pose_mask"], train=True,
                                  rngs={"dropout": rng}, mutable=["batch_stats"])
    loss = losses.video_classification_loss(logits, targets["labels"], targets["valid"])
    return loss, ({"classification": loss}, mutated.get("batch_stats", batch_stats))

  def predict(variables, batch):
    inputs, _ = model_inputs(batch)
    return model.apply(variables, inputs["pose"], inputs["pose_mask"], train=False)

  run_evaluation = classification_task.accuracy_evaluation(config, predict, "pose")

  return Task(model=model, init_variables=init_variables, model_inputs=model_inputs,
              loss_fn=loss_fn, predict=predict, evaluate=run_evaluation, best_metric="accuracy")
