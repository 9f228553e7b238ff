"""AMnet's Audio-Motion Embedding (AME) pre-training task (config.phase = "amnet_ame").

Every video of a Mix-and-Separate batch is one clip (frames [B, N, T, ...] -> [B*N, T, ...]);
its sound is the central T / fps seconds of its own waveform (the same time span as its T frames;
amnet_embedding.ame_audio_length), never the mixture. The loss is the symmetric InfoNCE over Pearson
correlations of tribert_jax.losses.audio_motion_embedding_loss: the motion embedding of a clip
should correlate with its own sound embedding more than with the other clips' sounds of the batch
and than with circularly time-shifted copies of its own sound (and vice versa).

Evaluation pools the embeddings of every distinct clip of the evaluation split's mixture list
(config.eval.max_batches batches) and reports retrieval accuracy (motion -> sound over the whole
pool, the highest Pearson correlation must be the clip's own sound; chance 1 / pool size), the
mean matched and mismatched correlations, and the AME loss over the pool; the best checkpoint is
the one with the highest retrieval accuracy.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from tribert_jax import losses
from tribert_jax import sharding
from tribert_jax.evaluation import reports
from tribert_jax.models import amnet_embedding
from tribert_jax.tasks.base import Task


def model_inputs(batch: Mapping[str, jax.Array], model_config: ml_collections.ConfigDict
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({frames [V,T,S,S,3], audio [V,L']}, {valid [V]}) with V = B*N clips."""
  frames, waveform = batch["frames"], batch["waveform"]
  b, n = frames.shape[:2]
  length = amnet_embedding.ame_audio_length(model_config)
  start = (waveform.shape[-1] - length) // 2  # centred: the frames are centred on the crop
  audio = waveform[..., start:start + length]
  inputs = dict(frames=frames.reshape((b * n,) + frames.shape[2:]),
                audio=audio.reshape(b * n, length))
  return inputs, dict(valid=jnp.repeat(batch["valid"], n))


def pool_metrics(motion: np.ndarray, sound: np.ndarray, temperature: float, min_shift: int
                 ) -> dict[str, float]:
  """Retrieval accuracy, matched / mismatched correlation and AME loss over a pool of clips."""
  valid = jnp.ones((motion.shape[0],))
  loss, metrics = losses.audio_motion_embedding_loss(jnp.asarray(motion), jnp.asarray(sound),
                                                      valid, temperature, min_shift)
  summary = {k: float(v) for k, v in metrics.items()}
  summary["ame"] = float(loss)
  summary["num_clips"] = int(motion.shape[0])
  return summary


def audio_motion_embedding_task(config: ml_collections.ConfigDict,
                                class_names: Sequence[str]) -> Task:
  """The Task of the AME pre-training phase."""
  del class_names  # no classifier
  model = amnet_embedding.AudioMotionEmbedding(config=config.model)
  ame = config.model.ame

  def init_variables(rng):
    inputs = amnet_embedding.example_ame_inputs(config.model)
    return model.init({"params": rng}, inputs, train=False)

  def batch_inputs(batch):
    return model_inputs(batch, config.model)

  def loss_fn(params, batch_stats, batch, rng):
    del rng  # no dropout
    inputs, targets = batch_inputs(batch)
    (outputs, _), mutated = model.apply({"params": params, "batch_stats": batch_stats}, inputs,
                                        train=True, mutable=["batch_stats"])
    loss, metrics = losses.audio_motion_embedding_loss(
        outputs["motion_embedding"], outputs["sound_embedding"], targets["valid"],
        ame.temperature, ame.min_shift)
    return loss, (metrics, mutated["batch_stats"])

  def predict(variables, batch):
    inputs, _ = batch_inputs(batch)
    outputs, _ = model.apply(variables, inputs, train=False)
    return outputs

  eval_pipeline = None

  def run_evaluation(state, mesh, workdir, step, writer):
    del writer  # scalars are written by the loop
    nonlocal eval_pipeline
    if eval_pipeline is None:
      # Imported here: TensorFlow (~0.5 GiB resident) only where a pipeline is built.
      from data_pipeline.loading import pipeline as loading_pipeline
      eval_pipeline = loading_pipeline.build_eval_pipeline(config.data)
    batch_sharding = sharding.data_sharding(mesh)
    predict_jit = jax.jit(predict, out_shardings=batch_sharding)
    rows, motions, sounds = [], [], []
    for index, batch in enumerate(eval_pipeline):
      if 0 <= config.eval.max_batches <= index:
        break
      outputs = predict_jit(state.variables(), sharding.host_to_global(batch, mesh))
      local = {k: sharding.host_local(v, mesh, batch_sharding.spec) for k, v in outputs.items()}
      valid = np.repeat(batch["valid"], batch["clip_index"].shape[1]) > 0.5
      rows.append(np.where(valid, batch["clip_index"].reshape(-1), -1))
      motions.append(local["motion_embedding"])
      sounds.append(local["sound_embedding"])
    rows, motion, sound = (np.concatenate(x) for x in (rows, motions, sounds))
    if jax.process_count() > 1:
      rows, motion, sound = (np.asarray(multihost_utils.process_allgather(x)).reshape(
          (-1,) + x.shape[1:]) for x in (rows, motion, sound))
    # Each distinct clip once (a clip appears in several mixtures of the list).
    _, first = np.unique(rows, return_index=True)
    first = first[rows[first] >= 0]
    summary = pool_metrics(motion[first], sound[first], ame.temperature, ame.min_shift)
    reports.write_json(summary, workdir, f"{config.data.eval_split}_step_{step}")
    logging.info("AME evaluation at step %d: retrieval accuracy %.3f over %d clips, "
                 "correlation matched %.3f / mismatched %.3f", step,
                 summary["retrieval_accuracy"], summary["num_clips"],
                 summary["matched_correlation"], summary["mismatched_correlation"])
    return summary

  return Task(model=model, init_variables=init_variables, model_inputs=batch_inputs,
              loss_fn=loss_fn, predict=predict, evaluate=run_evaluation,
              best_metric="retrieval_accuracy")
