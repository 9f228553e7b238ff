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


WSDDN_REGIONS = ("tokens", "objects")


class WSDDNHead(nn.Module):
  """Hidden states of the regions -> weakly supervised class scores [b, C] in [0, 1].

  regions = "tokens" (paper): hidden [b, R, D], region_mask [b, R]; prediction head, then one
  dense to classes for each softmax; every token is a region.
  regions = "objects" (release, vision_net.py forward_multiframe): hidden [b, F, K, D] (F frame
  slots incl. the global one, K object/person slots), region_mask [b, F, K]; prediction head and
  decoder to classes per token, mean over the F frame slots (counting real tokens only; the
  release averages all), then Dense(C, C) classification (softmax over classes) and Dense(C, C)
  detection (softmax over the K slots).
  """
  num_classes: int
  activation: str = "gelu"
  regions: str = "tokens"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, region_mask: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = PredictionHead(self.activation, name="prediction_head", **kw)(hidden)
    names = (layers.EMBED, layers.CLASSES)
    if self.regions == "objects":
      logits = layers.dense(self.num_classes, names=names, name="decoder", **kw)(x)
      x = layers.masked_mean(logits, region_mask[..., None], axis=1)  # [b, K, C]
      region_mask = jnp.max(region_mask, axis=1)  # a slot with any real token
      names = (None, layers.CLASSES)  # C -> C (one axis named, so a rule can shard it)
    elif self.regions != "tokens":
      raise ValueError(f"config.model.heads.wsddn_regions: unknown {self.regions!r}")
    class_logits = layers.dense(self.num_classes, names=names, name="classification", **kw)(x)
    detection_logits = layers.dense(self.num_classes, names=names, name="detection", **kw)(x)
    return wsddn_scores(class_logits, detection_logits, region_mask)


class AudioClassifier(nn.Module):
  """Audio stream hidden states [b, L, D] -> class logits [b, C] ("mean_hidden", paper: the
  classifier on the mean hidden state) or class probabilities [b, C] ("release", vision_net.py
  forward_multiframe: prediction head and decoder per token, logits averaged over the tokens,
  softmax over the classes)."""
  num_classes: int
  activation: str = "gelu"
  kind: str = "mean_hidden"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.kind not in ("mean_hidden", "release"):
      raise ValueError(f"config.model.heads.audio_classifier: unknown {self.kind!r}")
    x = hidden
    if self.kind == "mean_hidden":
      x = layers.masked_mean(hidden, mask[..., None], axis=1)  # [b, D]
    x = PredictionHead(self.activation, name="prediction_head", **kw)(x)
    logits = layers.dense(self.num_classes, names=(layers.EMBED, layers.CLASSES),
                          name="classification", **kw)(x).astype(jnp.float32)
    if self.kind == "mean_hidden":
      return logits
    return jax.nn.softmax(layers.masked_mean(logits, mask[..., None], axis=1), axis=-1)


class Pooler(nn.Module):
  """<SOS> hidden state(s) [b, K, D] -> pooled feature (ViLBERT pooler: dense + act).

  per_slot=False: masked mean over the K slots, then dense + act -> [b, width];
  per_slot=True (release): dense + act on every slot -> [b, K, width] (the caller fuses the
  streams per slot and averages afterwards).
  """
  width: int
  activation: str = "relu"
  per_slot: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, sos_hidden: jax.Array, sos_mask: jax.Array) -> jax.Array:
    x = sos_hidden
    if not self.per_slot:
      x = layers.masked_mean(sos_hidden, sos_mask[..., None], axis=1)  # [b, D]
    x = layers.dense(self.width, name="dense", dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return layers.activation(self.activation)(x)


def fuse_pooled(pooled: list[jax.Array], fusion: str, per_slot: bool,
                dropout: nn.Module | None = None) -> jax.Array:
  """Fused feature of the streams' pooled outputs (supp. Table 2): "concat" or "multiply" along
  the feature axis. per_slot (release): inputs [b, K, width] are fused per slot, dropped out,
  then averaged over all K slots (vision_net.py BertPreTrainingHeads, forward_multiframe)."""
  if fusion == "concat":
    fused = jnp.concatenate(pooled, axis=-1)
  elif fusion == "multiply":  # every pooler has width pooled_width: element-wise product
    fused = pooled[0]
    for p in pooled[1:]:
      fused = fused * p
  else:
    raise ValueError(f"config.model.heads.fusion: unknown {fusion!r}")
  if per_slot:
    if dropout is not None:
      fused = dropout(fused)
    fused = jnp.mean(fused, axis=1)
  return fused
