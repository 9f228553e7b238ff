"""Tri-modal co-attention (paper Sec. 3.2): each stream's queries attend to the keys and values of
the other modalities, then the usual output projection, residual, LayerNorm and feed-forward."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from tribert_jax.models import layers

Dtype = Any

# The release's stream order (vision, pose, audio): with concat="features" the other streams'
# per-head key/value slices are concatenated in this order (vision_net.py, BertBiAttention).
STREAM_ORDER = ("visual", "pose", "audio")


class FeedForward(nn.Module):
  """BERT feed-forward sub-layer: dense, activation, dense, dropout, residual, LayerNorm."""
  intermediate_size: int
  dropout: float = 0.1
  activation: str = "gelu"
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = layers.dense(self.intermediate_size, name="intermediate", **kw)(x)
    y = layers.activation(self.activation)(y)
    y = layers.dense(x.shape[-1], names=(layers.MLP, layers.EMBED), name="output", **kw)(y)
    y = nn.Dropout(self.dropout, deterministic=self.deterministic)(y)
    return layers.layer_norm(name="norm", **kw)(x + y)


class TriModalCoAttention(nn.Module):
  """One co-attention layer over all streams: hidden {stream: [b, L_s, D_s]} -> same shapes.

  concat = "tokens" (paper): the target's queries attend to the concatenation, along the token
  axis, of the other streams' keys/values (each projected to `width`; lengths may differ).
  concat = "features" (release, vision_net.py BertBiAttention): each other stream's keys/values
  are projected to width / (number of other streams), split into the heads first (head_dim /
  sources each) and concatenated per head along features, so every head scores every other
  stream (equal lengths required); a key position is valid only where it is valid in every
  concatenated stream (the release mixes masks across the batch here; all-ones masks hide it).
  """
  width: int = 512  # co-attention width (Q and concatenated K/V)
  num_heads: int = 8
  intermediate_size: int = 1024
  concat: str = "tokens"
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation: str = "gelu"
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden: Mapping[str, jax.Array],
               masks: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Sorted stream names fix the concatenation order (jit also re-orders dict keys).
    names = sorted(hidden)
    if len(names) < 2:
      raise ValueError("co-attention needs at least two streams")
    if self.concat not in ("tokens", "features"):
      raise ValueError(f"config.model.transformer.co_attention_concat: unknown {self.concat!r}")
    num_sources = len(names) - 1
    source_width = self.width if self.concat == "tokens" else self.width // num_sources
    if self.concat == "features" and source_width * num_sources != self.width:
      raise ValueError(f"co_attention_width {self.width} not divisible by {num_sources} sources")
    head_dim = self.width // self.num_heads
    if self.concat == "features" and head_dim % num_sources:
      raise ValueError(f"co-attention head size {head_dim} not divisible by {num_sources} sources")
    # Each stream computes its Q (for itself) and its K, V (read by the other streams).
    queries, keys, values = {}, {}, {}
    for s in names:
      queries[s] = layers.dense(self.width, name=f"{s}_query", **kw)(hidden[s])
      keys[s] = layers.dense(source_width, name=f"{s}_key", **kw)(hidden[s])
      values[s] = layers.dense(source_width, name=f"{s}_value", **kw)(hidden[s])
    out = {}
    for s in names:
      others = [o for o in names if o != s]
      if self.concat == "features":  # the release's order (a permutation of the query columns)
        others.sort(key=lambda o: STREAM_ORDER.index(o) if o in STREAM_ORDER else len(names))
      if self.concat == "tokens":
        key = jnp.concatenate([keys[o] for o in others], axis=1)  # [b, sum L_o, width]
        value = jnp.concatenate([values[o] for o in others], axis=1)
        key_mask = jnp.concatenate([masks[o] for o in others], axis=1)
      else:
        lengths = {hidden[o].shape[1] for o in others}
        if len(lengths) != 1:
          raise ValueError(f"co_attention_concat='features' needs equal sequence lengths, got "
                           f"{ {o: hidden[o].shape[1] for o in others} }")
        per_head = lambda y: y.reshape(*y.shape[:2], self.num_heads, head_dim // num_sources)
        key = jnp.concatenate([per_head(keys[o]) for o in others], axis=-1)  # [b, L, H, hd]
        value = jnp.concatenate([per_head(values[o]) for o in others], axis=-1)
        key_mask = jnp.prod(jnp.stack([masks[o] for o in others]), axis=0)
      b, lq = queries[s].shape[:2]
      context = layers.dot_product_attention(
          queries[s].reshape(b, lq, self.num_heads, head_dim),
          key.reshape(b, key.shape[1], self.num_heads, head_dim),
          value.reshape(b, value.shape[1], self.num_heads, head_dim), key_mask,
          nn.Dropout(self.attention_dropout, deterministic=self.deterministic))
      context = context.reshape(b, lq, self.width)
      y = layers.dense(hidden[s].shape[-1], names=(layers.MLP, layers.EMBED),
                       name=f"{s}_output", **kw)(context)
      y = nn.Dropout(self.dropout, deterministic=self.deterministic)(y)
      y = layers.layer_norm(name=f"{s}_output_norm", **kw)(hidden[s] + y)
      out[s] = FeedForward(self.intermediate_size, self.dropout, self.activation,
                           self.deterministic, name=f"{s}_feed_forward", **kw)(y)
    return {s: out[s] for s in hidden}
