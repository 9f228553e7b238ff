"""The three BERT streams: token embeddings (frame/slot embeddings, [MASK], <SOS>), per-stream
transformer layers, and a tri-modal co-attention layer after each of them."""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers
from tribert_jax.models.co_attention import FeedForward, TriModalCoAttention

Dtype = Any


class TransformerLayer(nn.Module):
  """BERT layer (post-LN): multi-head self-attention with a per-example padding mask, then FFN."""
  num_heads: int
  intermediate_size: int
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation: str = "gelu"
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [b, L, D], mask [b, L] (1 = real token) -> [b, L, D]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"stream width {width} not divisible by {self.num_heads} heads")
    heads = lambda y: y.reshape(b, length, self.num_heads, width // self.num_heads)
    q = heads(layers.dense(width, name="query", **kw)(x))
    k = heads(layers.dense(width, name="key", **kw)(x))
    v = heads(layers.dense(width, name="value", **kw)(x))
    context = layers.dot_product_attention(
        q, k, v, mask, nn.Dropout(self.attention_dropout, deterministic=self.deterministic))
    y = layers.dense(width, names=(layers.MLP, layers.EMBED), name="attention_output",
                     **kw)(context.reshape(b, length, width))
    y = nn.Dropout(self.dropout, deterministic=self.deterministic)(y)
    x = layers.layer_norm(name="attention_norm", **kw)(x + y)
    return FeedForward(self.intermediate_size, self.dropout, self.activation, self.deterministic,
                       name="feed_forward", **kw)(x)


class StreamEmbedding(nn.Module):
  """Tokens [b, T, K, D] (+ validity) -> stream input [b, L, D] with <SOS>, masking, embeddings.

  Sequence: <SOS> slot(s) first (frame id 0), then frame-major tokens (frame t + 1, slot k).
  "learned" <SOS> = one learned token (paper); "global" = a global frame slot holding the
  per-slot mean over frames of the valid tokens (release), K tokens.
  Training only: each real token is replaced by a learned [MASK] embedding with probability
  mask_probability (rng stream "masking"); <SOS> is never masked.
  """
  config: ml_collections.ConfigDict  # config.model
  mask_probability: float = 0.0
  deterministic: bool = True

  @nn.compact
  def __call__(self, tokens: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    cfg = self.config.transformer
    dtype, param_dtype = layers.to_dtype(self.config.dtype), layers.to_dtype(self.config.param_dtype)
    b, t, k, d = tokens.shape
    if t + 1 > cfg.max_frames or k > cfg.max_slots:
      raise ValueError(f"{t} frames x {k} slots exceed config.model.transformer.max_frames="
                       f"{cfg.max_frames} (incl. <SOS>) / max_slots={cfg.max_slots}")
    valid = valid.astype(jnp.float32)
    if cfg.sos_token == "global":
      sos = layers.masked_mean(tokens, valid[..., None], axis=1)  # [b, K, D]
      sos_valid = jnp.max(valid, axis=1)  # a slot with any real token
      # Every example needs at least one attendable key: keep the first global token valid.
      sos_valid = sos_valid.at[:, 0].set(1.0)
      sos_slots = jnp.arange(k)
    elif cfg.sos_token == "learned":
      sos_param = self.param("sos", layers.partitioned(nn.initializers.normal(0.02),
                                                       (layers.EMBED,)), (d,), param_dtype)
      sos = jnp.broadcast_to(sos_param.astype(tokens.dtype), (b, 1, d))
      sos_valid = jnp.ones((b, 1), jnp.float32)
      sos_slots = jnp.zeros((1,), jnp.int32)
    else:
      raise ValueError(f"config.model.transformer.sos_token: unknown {cfg.sos_token!r}")
    tokens = tokens.reshape(b, t * k, d)  # [b, T*K, D] frame-major
    valid = valid.reshape(b, t * k)
    if self.mask_probability > 0:
      mask_embedding = self.param("mask_embedding", layers.partitioned(
          nn.initializers.normal(0.02), (layers.EMBED,)), (d,), param_dtype)
      if not self.deterministic:
        masked = jax.random.bernoulli(self.make_rng("masking"), self.mask_probability, (b, t * k))
        tokens = jnp.where(masked[..., None], mask_embedding.astype(tokens.dtype), tokens)
    x = jnp.concatenate([sos.astype(tokens.dtype), tokens], axis=1)  # [b, L, D]
    mask = jnp.concatenate([sos_valid, valid], axis=1)  # [b, L]
    frame_ids = jnp.concatenate([jnp.zeros_like(sos_slots), jnp.repeat(jnp.arange(1, t + 1), k)])
    slot_ids = jnp.concatenate([sos_slots, jnp.tile(jnp.arange(k), t)])
    x = x + layers.embed(cfg.max_frames, d, name="frame_embedding", dtype=dtype,
                         param_dtype=param_dtype)(frame_ids)[None]
    x = x + layers.embed(cfg.max_slots, d, name="slot_embedding", dtype=dtype,
                         param_dtype=param_dtype)(slot_ids)[None]
    x = layers.layer_norm(name="norm", dtype=dtype, param_dtype=param_dtype)(x)
    x = nn.Dropout(cfg.dropout, deterministic=self.deterministic)(x)
    return x, mask


class TriBERTEncoder(nn.Module):
  """num_layers x (one TransformerLayer per stream and one TriModalCoAttention over the streams).

  config.model.transformer.co_attention_order: "after" = each layer's self-attention, then its
  co-attention; "before" (release) = co-attention, then the layer's self-attention.
  """
  config: ml_collections.ConfigDict  # config.model
  deterministic: bool = True

  @nn.compact
  def __call__(self, streams: Mapping[str, jax.Array],
               masks: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """streams {name: [b, L_s, D_s]}, masks {name: [b, L_s]} -> hidden {name: [b, L_s, D_s]}."""
    cfg = self.config.transformer
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    layer_cls = nn.remat(TransformerLayer) if cfg.remat else TransformerLayer
    co_cls = nn.remat(TriModalCoAttention) if cfg.remat else TriModalCoAttention
    order = cfg.get("co_attention_order", "after")
    if order not in ("after", "before"):
      raise ValueError(f"config.model.transformer.co_attention_order: unknown {order!r}")
    hidden = dict(streams)
    for i in range(cfg.num_layers):
      co_attention = co_cls(cfg.co_attention_width, cfg.co_attention_heads,
                            cfg.intermediate_size, cfg.co_attention_concat, cfg.dropout,
                            cfg.attention_dropout, cfg.activation, self.deterministic,
                            name=f"co_attention{i}", **kw)
      use_co = cfg.use_co_attention and len(hidden) > 1
      if use_co and order == "before":
        hidden = co_attention(hidden, masks)
      for s in hidden:
        hidden[s] = layer_cls(cfg.num_heads, cfg.intermediate_size, cfg.dropout,
                              cfg.attention_dropout, cfg.activation, self.deterministic,
                              name=f"{s}_layer{i}", **kw)(hidden[s], masks[s])
      if use_co and order == "after":
        hidden = co_attention(hidden, masks)
    return hidden
