"""Separation tasks (Mix-and-Separate): TriBERT, Sound-of-Pixels, AMnet and the staged recipe's
separation pre-training network, chosen by config.model.name.

`model_inputs` is the one "batch -> model inputs" function: the training loss, the evaluation's
`separate` and the embedding export (tribert_jax/embeddings/export.py) all call it. Spectral
features are computed on the device from the batch's waveforms (tribert_jax/spectral.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax import losses
from tribert_jax import sharding
from tribert_jax import spectral
from tribert_jax.evaluation import reports
from tribert_jax.evaluation import separation as separation_evaluation
from tribert_jax.models import amnet
from tribert_jax.models import separation_pretrain
from tribert_jax.models import sound_of_pixels
from tribert_jax.models import tribert
from tribert_jax.tasks.base import Task

# config.model.name -> separation model class (each takes config=config.model).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "tribert": tribert.TriBERT,
    "sound_of_pixels": sound_of_pixels.SoundOfPixels,
    "separation_pretrain": separation_pretrain.SeparationPretrainNet,
    "amnet": amnet.AMnet,
}


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """The separation model named by model_config.name (a key of MODELS)."""
  if model_config.name not in MODELS:
    raise ValueError(f"config.model.name={model_config.name!r}: expected one of {list(MODELS)}")
  return MODELS[model_config.name](config=model_config)


def model_inputs(batch: Mapping[str, jax.Array], data_config: Any
                 ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """(the model's input dict (see the model contract), spectral features and targets of
  spectral.spectral_features) from a batch; data_config = config.data."""
  features = spectral.spectral_features(batch["waveform"], batch["mixture"], data_config)
  inputs = dict(frames=batch["frames"], pose=batch["pose"], pose_mask=batch["pose_mask"],
                pose_frame_index=batch["pose_frame_index"], mix_warped=features["mix_warped"])
  if "pose_features" in batch:  # frozen ST-GCN features (data.pose_features_dir)
    inputs["pose_features"] = batch["pose_features"]
  if "labels" in batch:  # instrument labels [B, N, C]: Sound-of-Pixels' oracle visual vector
    inputs["labels"] = batch["labels"]  # (model.visual_source="oracle"); TriBERT ignores them
  return inputs, features


def class_attention(attention_maps: jax.Array, labels: jax.Array) -> jax.Array:
  """Attention maps [B,N,T,h,w,C] -> [B,N,T,h,w]: each video's map for its (first) labelled
  class, the class the visual stream should localise."""
  target = jnp.argmax(labels, axis=-1)  # [B, N]
  one_hot = jax.nn.one_hot(target, attention_maps.shape[-1], dtype=attention_maps.dtype)
  return jnp.einsum("bnthwc,bnc->bnthw", attention_maps, one_hot)


def make_separate_fn(model: nn.Module, config: ml_collections.ConfigDict
                     ) -> Callable[..., dict]:
  """Returns separate(variables, batch) -> predictions, ideal-mask waveforms and what the
  summaries show (jit it; everything stays on the device until the caller fetches it)."""

  def separate(variables, batch):
    inputs, features = model_inputs(batch, config.data)
    outputs, intermediates = model.apply(variables, inputs, train=False)
    mask_probabilities = jax.nn.sigmoid(outputs["mask_logits"])  # [B, N, H, T]
    length = batch["mixture"].shape[-1]
    reconstruct = functools.partial(
        spectral.masks_to_waveforms, mix_mag=features["mix_mag"],
        mix_phase=features["mix_phase"], length=length, data_config=config.data,
        threshold=config.eval.threshold)
    result = dict(
        predictions=reconstruct(mask_probabilities, mask_type=config.eval.mask_type),
        # The training target is binary already; reconstruct it as a binary mask.
        ideal=reconstruct(features["gt_masks"], mask_type="binary"),
        mask_probabilities=mask_probabilities,
        gt_masks=features["gt_masks"],
        mix_mag=features["mix_mag"],
    )
    if "visual_attention_maps" in intermediates:
      result["attention"] = class_attention(intermediates["visual_attention_maps"],
                                            batch["labels"])
    return result

  return separate


def separation_task(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> Task:
  """Separation phases: mask loss (+ TriBERT's classification losses), separation evaluation."""
  model = build_model(config.model)

  def init_variables(rng):
    params_rng, dropout_rng, masking_rng = jax.random.split(rng, 3)
    inputs = tribert.example_inputs(config.model, batch_size=1)
    return model.init({"params": params_rng, "dropout": dropout_rng, "masking": masking_rng},
                      inputs, train=False)

  def batch_inputs(batch):
    return model_inputs(batch, config.data)

  def loss_fn(params, batch_stats, batch, rng):
    inputs, features = batch_inputs(batch)
    dropout_rng, masking_rng = jax.random.split(rng)
    (outputs, _), mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, inputs, train=True,
        rngs={"dropout": dropout_rng, "masking": masking_rng}, mutable=["batch_stats"])
    targets = dict(gt_masks=features["gt_masks"], weight=features["weight"],
                   labels=batch["labels"], valid=batch["valid"])
    total, terms = losses.tribert_loss(outputs, targets, config.model.loss_weights)
    return total, (terms, mutated["batch_stats"])

  separate = make_separate_fn(model, config)
  eval_pipelines = {}  # split -> its fixed mixture list's pipeline, built on first use
  quick_config = config.copy_and_resolve_references()
  quick_config.eval.backend = config.eval.get("quick_backend", "fast_bss_eval")
  quick_config.eval.ideal_mask = False
  # The quick evaluation's split (config.eval.quick_split): val while training, test for the
  # quality benchmark's curves.
  quick_config.data.eval_split = config.eval.get("quick_split", "val")

  def separate_and_score(state, mesh, run_config, max_batches, num_examples, progress=True):
    """Separates and scores run_config.data.eval_split's mixtures: (summary, examples)."""
    split = run_config.data.eval_split
    if split not in eval_pipelines:
      # Imported here: TensorFlow (~0.5 GiB resident) only where a pipeline is built.
      from data_pipeline.loading import pipeline as loading_pipeline
      eval_pipelines[split] = loading_pipeline.build_eval_pipeline(config.data, split)
    batch_sharding = sharding.data_sharding(mesh)
    separate_jit = jax.jit(separate, out_shardings=batch_sharding)
    return separation_evaluation.evaluate(
        separate_jit, state.variables(), eval_pipelines[split],
        lambda batch: sharding.host_to_global(batch, mesh), mesh, batch_sharding.spec,
        run_config, class_names, max_batches=max_batches, num_examples_to_show=num_examples,
        progress=progress)

  def run_evaluation(state, mesh, workdir, step, writer):
    summary, examples = separate_and_score(state, mesh, config, config.eval.max_batches,
                                           config.eval.num_examples)
    json_path, _ = reports.write_report(summary, workdir, f"{config.data.eval_split}_step_{step}")
    reports.write_examples(writer, step, examples, config.data.sample_rate)
    logging.info("evaluation at step %d: SDR %.2f (mixture %.2f, ideal mask %.2f) dB on %d "
                 "mixtures, skipped %s; report %s", step, summary["sdr"], summary["mixture_sdr"],
                 summary["ideal_mask_sdr"], summary["num_scored"], summary["skipped"], json_path)
    return reports.scalar_metrics(summary)

  def run_quick_evaluation(state, mesh):
    summary, _ = separate_and_score(state, mesh, quick_config,
                                    int(config.eval.get("quick_batches", 4)), 0, progress=False)
    return {k: v for k, v in reports.scalar_metrics(summary).items()
            if not k.startswith(("class_sdr/", "ideal_mask_"))}

  return Task(model=model, init_variables=init_variables, model_inputs=batch_inputs,
              loss_fn=loss_fn, predict=separate, evaluate=run_evaluation, best_metric="sdr",
              frozen=frozen_parameters(config.model), quick_evaluate=run_quick_evaluation)


def frozen_parameters(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Prefixes of parameters that must not change: a frozen in-model ST-GCN (its gradient is
  stopped, and the optimiser must not decay it either), or AMnet's frozen appearance stage and
  motion network in its motion stage."""
  if model_config.name == "amnet":
    return amnet.frozen_prefixes(model_config)
  pose = model_config.get("pose")
  if (model_config.name == "tribert" and pose and pose.enabled and pose.freeze_stgcn
      and pose.get("stgcn_input", "pose") == "pose"):
    return ("pose_encoder/stgcn",)
  return ()
