"""Shared layer constructors: Dense/Conv/norm layers whose parameters carry logical axis names."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Logical axis names used by every parameter of the model (rules in configs/parts/model.py).
EMBED = "embed"  # the model width of a stream / a feature vector
MLP = "mlp"  # the wide side of a dense layer (intermediate, projections)
HEADS = "heads"  # attention heads
CLASSES = "classes"  # classifier outputs
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
NORM = "norm"  # scale/bias of normalisation layers
VOCAB = "vocab"  # rows of embedding tables (frames, slots)
JOINTS = "joints"  # graph nodes of the pose graph


def to_dtype(name: str | Dtype) -> Dtype:
  """Turns a config string ('float32', 'bfloat16') into a jnp dtype."""
  return jnp.dtype(name) if isinstance(name, str) else name


def partitioned(init: Any, names: Sequence[str | None]) -> Any:
  """An initializer whose parameter is boxed with logical axis names for sharding."""
  return nn.with_logical_partitioning(init, tuple(names))


def dense(features: int, *, dtype: Dtype, param_dtype: Dtype, names=(EMBED, MLP),
          use_bias: bool = True, kernel_init=nn.initializers.lecun_normal(),
          name: str | None = None) -> nn.Dense:
  """nn.Dense with a logically partitioned kernel [in, out] and bias [out]."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=partitioned(kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros_init(), (names[-1],)), name=name)


def conv(features: int, kernel: Sequence[int], *, dtype: Dtype, param_dtype: Dtype,
         strides: Sequence[int] | int = 1, padding: Any = "SAME", use_bias: bool = True,
         kernel_init=nn.initializers.lecun_normal(), name: str | None = None) -> nn.Conv:
  """nn.Conv (channels last) with kernel axes (spatial..., conv_in, conv_out)."""
  kernel = tuple(kernel)
  strides = (strides,) * len(kernel) if isinstance(strides, int) else tuple(strides)
  names = (None,) * len(kernel) + (CONV_IN, CONV_OUT)
  return nn.Conv(
      features, kernel, strides=strides, padding=padding, use_bias=use_bias, dtype=dtype,
      param_dtype=param_dtype, kernel_init=partitioned(kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros_init(), (CONV_OUT,)), name=name)


def conv_transpose(features: int, kernel: Sequence[int], *, dtype: Dtype, param_dtype: Dtype,
                   strides: Sequence[int], name: str | None = None) -> nn.ConvTranspose:
  """nn.ConvTranspose (the U-Net's de-convolution) with partitioned kernel axes."""
  names = (None,) * len(kernel) + (CONV_IN, CONV_OUT)
  return nn.ConvTranspose(
      features, tuple(kernel), strides=tuple(strides), padding="SAME", dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=partitioned(nn.initializers.lecun_normal(), names),
      bias_init=partitioned(nn.initializers.zeros_init(), (CONV_OUT,)), name=name)


def batch_norm(train: bool, *, dtype: Dtype, param_dtype: Dtype, momentum: float = 0.9,
               scale_init=nn.initializers.ones_init(), name: str | None = None) -> nn.BatchNorm:
  """BatchNorm: batch statistics in training, running averages (batch_stats) in eval."""
  return nn.BatchNorm(
      use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
      param_dtype=param_dtype, scale_init=partitioned(scale_init, (NORM,)),
      bias_init=partitioned(nn.initializers.zeros_init(), (NORM,)), name=name)


def layer_norm(*, dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm (BERT epsilon) with partitioned scale/bias."""
  return nn.LayerNorm(
      epsilon=1e-12, dtype=dtype, param_dtype=param_dtype,
      scale_init=partitioned(nn.initializers.ones_init(), (NORM,)),
      bias_init=partitioned(nn.initializers.zeros_init(), (NORM,)), name=name)


def embed(num: int, features: int, *, param_dtype: Dtype, dtype: Dtype,
          name: str | None = None) -> nn.Embed:
  """nn.Embed (learned frame/slot embeddings) with a partitioned table [vocab, embed]."""
  return nn.Embed(
      num, features, dtype=dtype, param_dtype=param_dtype,
      embedding_init=partitioned(nn.initializers.normal(0.02), (VOCAB, EMBED)), name=name)


def activation(name: str):
  """Activation by config name."""
  return {"relu": nn.relu, "gelu": lambda x: nn.gelu(x, approximate=False), "tanh": jnp.tanh,
          "sigmoid": nn.sigmoid, "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
          "none": lambda x: x}[name]


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
  """Mean of x over axis counting only entries where mask (broadcastable to x) is 1."""
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  return jnp.sum(x * mask, axis) / jnp.maximum(jnp.sum(mask, axis), 1.0)


def attention_bias(key_mask: jax.Array) -> jax.Array:
  """Key validity [b, Lk] (1 = real token) -> additive bias [b, 1, 1, Lk] (per example)."""
  return jnp.where(key_mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          key_mask: jax.Array, dropout: nn.Module | None = None) -> jax.Array:
  """Multi-head attention core: q [b,Lq,H,d], k/v [b,Lk,H,d], key_mask [b,Lk] -> [b,Lq,H,d]."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32)
  logits = logits / jnp.sqrt(query.shape[-1]).astype(jnp.float32) + attention_bias(key_mask)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)
