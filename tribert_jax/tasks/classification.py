"""The evaluation of the classification phases (pose pre-training, Sound-of-Pixels' frame
pre-training): top-1 accuracy of per-video logits over the evaluation split, one JSON report per
evaluation, and the log line."""

from __future__ import annotations

from typing import Any, Callable

from absl import logging
import jax
import ml_collections

from tribert_jax import sharding
from tribert_jax.evaluation import classification
from tribert_jax.evaluation import reports


def accuracy_evaluation(config: ml_collections.ConfigDict, predict: Callable[[Any, Any], Any],
                        what: str) -> Callable[..., dict[str, Any]]:
  """Task.evaluate for a classifier whose predict(variables, batch) gives per-video logits;
  WHAT names it in the log ("pose", "frame"). The eval pipeline is built on first use."""
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
    summary = classification.evaluate(predict_jit, state.variables(), eval_pipeline, mesh,
                                      batch_sharding.spec, max_batches=config.eval.max_batches)
    reports.write_json(summary, workdir, f"{config.data.eval_split}_step_{step}")
    logging.info("%s evaluation at step %d: top-1 accuracy %.3f over %d videos", what, step,
                 summary["accuracy"], summary["num_videos"])
    return summary

  return run_evaluation
