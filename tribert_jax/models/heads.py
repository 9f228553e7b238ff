"""Output heads: WSDDN weak-supervision heads (visual, pose), audio classifier, <SOS> poolers."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tribert_jax.models import layers

Dtype = Any


class PredictionHead(nn.Module):
  """BERT prediction-head transform: dense, activation, LayerNorm (release, before the decoders)."""
  activation: str = "gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.activation(self.activation)(layers.dense(x.shape[-1], name="dense", **kw)(x))
    return layers.layer_norm(name="norm", **kw)(x)


def wsddn_scores(class_logits: jax.Array, detection_logits: jax.Array,
                 region_mask: jax.Array) -> jax.Array:
  """WSDDN [5] (paper eqs. 3-4): softmax over classes (.) softmax over regions, summed over regions.

  class_logits, detection_logits [b, R, C]; region_mask [b, R] (1 = real region) -> [b, C] in [0, 1].
  """
  class_logits = class_logits.astype(jnp.float32)
  detection_logits = detection_logits.astype(jnp.float32)
  recognition = jax.nn.softmax(class_logits, axis=-1)  # beta_class: over the C classes
  region_bias = jnp.where(region_mask[..., None] > 0, 0.0, -1e9)
  detection = jax.nn.softmax(detection_logits + region_bias, axis=1)  # beta_det: over regions
  scores = jnp.sum(recognition * detection * region_mask[..., None], axis=1)
  # An example without any real region (nobody detected) scores 0 rather than a spread of junk.
  scores = jnp.where(jnp.any(region_mask > 0, axis=1, keepdims=True), scores, 0.0)
  return jnp.clip(scores, 0.0, 1.0)


class WSDDNHead(nn.Module):
  """Hidden states of the regions [b, R, D] -> weakly supervised class scores [b, C] in [0, 1]."""
  num_classes: int
  activation: str = "gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, region_mask: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = PredictionHead(self.activation, name="prediction_head", **kw)(hidden)
    names = (layers.EMBED, layers.CLASSES)
    class_logits = layers.dense(self.num_classes, names=names, name="classification", **kw)(x)
    detection_logits = layers.dense(self.num_classes, names=names, name="detection", **kw)(x)
    return wsddn_scores(class_logits, detection_logits, region_mask)


class AudioClassifier(nn.Module):
  """Mean of the audio stream's hidden states [b, L, D] -> class logits [b, C]."""
  num_classes: int
  activation: str = "gelu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.masked_mean(hidden, mask[..., None], axis=1)  # [b, D]
    x = PredictionHead(self.activation, name="prediction_head", **kw)(x)
    logits = layers.dense(self.num_classes, names=(layers.EMBED, layers.CLASSES),
                          name="classification", **kw)(x)
    return logits.astype(jnp.float32)


class Pooler(nn.Module):
  """<SOS> hidden state(s) [b, K, D] -> pooled feature [b, width] (ViLBERT pooler: dense + act)."""
  width: int
  activation: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, sos_hidden: jax.Array, sos_mask: jax.Array) -> jax.Array:
    x = layers.masked_mean(sos_hidden, sos_mask[..., None], axis=1)  # [b, D]
    x = layers.dense(self.width, name="dense", dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return layers.activation(self.activation)(x)
