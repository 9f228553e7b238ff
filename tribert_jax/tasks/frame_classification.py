"""Frame pre-training task: a visual trunk classifying frames by instrument.

Runs in the shared loop (tribert_jax.train.train_and_evaluate) for two phases, the model chosen
by config.model.name: "sound_of_pixels_frames" (configs/sound_of_pixels_frames.py;
"frame_classifier", Sound-of-Pixels' ResNet-18 trunk) and "visual_pretrain"
(configs/visual_pretrain.py; "visual_classifier", TriBERT's visual trunk with its decoupled
spatial attention class scores as logits). Every frame of every video of a
Mix-and-Separate batch is one example labelled with its clip's instruments (frames
[B, N, T, S, S, 3] -> [B*N*T, S, S, 3]); the loss is a multi-label sigmoid BCE (duets carry two
labels). Evaluation averages each video's frame logits and reports top-1 accuracy (the top class
is one of the video's labels) and mean BCE on the validation mixtures' videos. Its best checkpoint
initialises Sound-of-Pixels' trunk (config.init.parts.frames: resnet/* -> video_network/resnet/*)
or the separation pre-training's (visual_encoder/* -> visual_encoder/*).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax import losses
from tribert_jax.models import separation_pretrain
from tribert_jax.models import sound_of_pixels
from tribert_jax.tasks import classification as classification_task
from tribert_jax.tasks.base import Task


def model_inputs(batch: Mapping[str, jax.Array]
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({images [B*N*T,S,S,3]}, {labels [B*N*T,C], valid [B*N*T], frames_per_video T})."""
  frames, labels = batch["frames"], batch["labels"]
  b, n, t = frames.shape[:3]
  images = frames.reshape((b * n * t,) + frames.shape[3:])
  frame_labels = jnp.repeat(labels.reshape(b * n, -1), t, axis=0)  # each frame: its clip's
  valid = jnp.repeat(batch["valid"], n * t)
  return dict(images=images), dict(labels=frame_labels, valid=valid)


def frame_classification_task(config: ml_collections.ConfigDict,
                              class_names: Sequence[str]) -> Task:
  """The Task of the frame pre-training phase."""
  del class_names  # the evaluation reports accuracy only
  models = {"frame_classifier": sound_of_pixels.FrameClassifier,
            "visual_classifier": separation_pretrain.VisualClassifier}
  if config.model.name not in models:
    raise ValueError(f"config.model.name={config.model.name!r}: phase {config.phase!r} trains "
                     f"one of {sorted(models)}")
  model = models[config.model.name](config=config.model)
  size = config.model.input.image_size

  def init_variables(rng):
    return model.init({"params": rng}, jnp.zeros((1, size, size, 3)), train=False)

  def loss_fn(params, batch_stats, batch, rng):
    inputs, targets = model_inputs(batch)
    # TriBERT's trunk has dropout in its decoupled attention; the ResNet-18 classifier has none.
    logits, mutated = model.apply({"params": params, "batch_stats": batch_stats},
                                  inputs["images"], train=True, mutable=["batch_stats"],
                                  rngs={"dropout": rng})
    loss = losses.video_classification_loss(logits, targets["labels"], targets["valid"])
    return loss, ({"classification": loss}, mutated["batch_stats"])

  def predict(variables, batch):
    """Per-video logits [B*N, C]: the mean of its frames' logits."""
    inputs, _ = model_inputs(batch)
    b, n, t = batch["frames"].shape[:3]
    logits = model.apply(variables, inputs["images"], train=False)
    return logits.reshape(b * n, t, -1).mean(axis=1)

  run_evaluation = classification_task.accuracy_evaluation(config, predict, "frame")

  return Task(model=model, init_variables=init_variables, model_inputs=model_inputs,
              loss_fn=loss_fn, predict=predict, evaluate=run_evaluation, best_metric="accuracy")
