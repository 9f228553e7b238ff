"""Visual segmentation network (paper Fig. 2): ResNet-50, 3x3 conv to V_e, decoupled spatial
attention (expansive x discriminative detectors) and attention pooling of top-k object tokens."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers
from tribert_jax.models.resnet import ResNet

Dtype = Any


class DecoupledSpatialAttention(nn.Module):
  """Expansive and discriminative attention detectors (paper eqs. 1-2, [54]).

  V_e [n, h, w, D] -> (class attention maps A_m = S_E * S_D [n, h, w, C], class scores [n, C]).
  """
  num_classes: int
  dropout: float = 0.5
  activation: str = "exp"  # F of eq. (1)
  normalization: str = "space"  # "space" (paper eq. 2) | "classes" (release)
  pooling: str = "sum"  # "sum" (paper) | "mean" (release): spatial pooling of A_m
  extra_conv: bool = False  # release: ReLU, 1x1 conv C -> C before the (ReLU, softmax) normalisation
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n, h, w, _ = features.shape
    # Expansive detector: dropout, 1x1 conv to C, dropout, non-linearity, normalisation.
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    x = layers.conv(self.num_classes, (1, 1), name="expansive_conv", **kw)(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    if self.extra_conv:  # release: conv1x1_1 -> dp2 -> ReLU -> conv1x1_11 (then ReLU, softmax)
      x = layers.conv(self.num_classes, (1, 1), name="expansive_conv2", **kw)(nn.relu(x))
    x = x.astype(jnp.float32)
    if self.normalization == "space":
      flat = x.reshape(n, h * w, self.num_classes)  # [n, hw, C]
      if self.activation == "exp":  # eq. (2) with F = exp is a softmax over space (stable form)
        expansive = jax.nn.softmax(flat, axis=1)
      else:
        lam = layers.activation(self.activation)(flat)
        expansive = lam / (jnp.sum(lam, axis=1, keepdims=True) + 1e-6)
      expansive = expansive.reshape(n, h, w, self.num_classes)
    elif self.normalization == "classes":  # release: ReLU, then softmax over classes
      expansive = jax.nn.softmax(nn.relu(x), axis=-1)
    else:
      raise ValueError(f"config.model.visual.expansive_normalization: unknown {self.normalization!r}")
    # Discriminative detector: 1x1 conv to C.
    discriminative = layers.conv(self.num_classes, (1, 1), name="discriminative_conv",
                                 **kw)(features).astype(jnp.float32)
    attention_maps = expansive * discriminative  # A_m = S_E (.) S_D, [n, h, w, C]
    class_scores = spatial_pool(attention_maps, self.pooling)  # [n, C]
    return attention_maps, class_scores


def spatial_pool(x: jax.Array, pooling: str) -> jax.Array:
  """Sums ("sum") or averages ("mean") x [n, h, w, ...] over the two spatial axes."""
  if pooling == "sum":
    return jnp.sum(x, axis=(1, 2))
  if pooling == "mean":
    return jnp.mean(x, axis=(1, 2))
  raise ValueError(f"config.model.visual.pooling: unknown {pooling!r}")


def pool_object_tokens(attention_maps: jax.Array, class_scores: jax.Array, features: jax.Array,
                       num_objects: int, pooling: str) -> jax.Array:
  """Pools V_e with the class maps of the top-k scoring classes: -> object tokens [n, k, D]."""
  # The choice of classes is discrete: gradients flow through the maps, not the ranking.
  _, top_classes = jax.lax.top_k(jax.lax.stop_gradient(class_scores), num_objects)  # [n, k]
  maps = jnp.take_along_axis(attention_maps, top_classes[:, None, None, :], axis=-1)  # [n,h,w,k]
  tokens = jnp.einsum("nhwk,nhwd->nkd", maps.astype(features.dtype), features)
  if pooling == "mean":
    tokens = tokens / (features.shape[1] * features.shape[2])
  return tokens


class VisualSegmentationNetwork(nn.Module):
  """Frames [B, N, T, S, S, 3] -> object tokens [B, N, T, k, D], maps [B,N,T,h,w,C], scores [B,N,T,C]."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, frames: jax.Array, train: bool) -> dict[str, jax.Array]:
    cfg = self.config.visual
    dtype, param_dtype = layers.to_dtype(self.config.dtype), layers.to_dtype(self.config.param_dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    b, n, t, s1, s2, ch = frames.shape
    images = frames.reshape(b * n * t, s1, s2, ch)  # [B*N*T, S, S, 3]
    trunk = ResNet(stage_sizes=tuple(cfg.resnet_stage_sizes), width=cfg.resnet_width,
                   frozen_batch_norm=cfg.frozen_batch_norm, name="resnet", **kw)(images, train)
    # The paper's 3x3 conv after ResNet-50 gives V_e (1024 channels, 7x7 at 224 input). No
    # activation follows it, in the paper or the release (vision_net.py, ResnetFC.fc); earlier
    # versions of this project applied a ReLU here.
    spatial_features = layers.conv(cfg.feature_channels, (3, 3), name="feature_conv", **kw)(trunk)
    attention_maps, class_scores = DecoupledSpatialAttention(
        num_classes=self.config.num_classes, dropout=cfg.attention_dropout,
        activation=cfg.expansive_activation, normalization=cfg.expansive_normalization,
        pooling=cfg.pooling, extra_conv=cfg.get("expansive_extra_conv", False), name="spatial_attention",
        **kw)(spatial_features, train)
    tokens = pool_object_tokens(attention_maps, class_scores, spatial_features, cfg.num_objects,
                                cfg.pooling)
    h, w = attention_maps.shape[1:3]
    return dict(
        tokens=tokens.reshape(b, n, t, cfg.num_objects, -1),  # [B, N, T, k, D]
        attention_maps=attention_maps.reshape(b, n, t, h, w, -1),  # [B, N, T, h, w, C]
        class_scores=class_scores.reshape(b, n, t, -1),  # [B, N, T, C]
    )
