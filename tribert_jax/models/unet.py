"""Attention U-Net [37] separation network with early fusion of TriBERT's fused feature.

The encoder sees only the mixture, so it runs once per mixture; the bottleneck fusion and the
decoder run once per video, conditioned on that video's fused feature, and give one mask-logit
map per video. (Running the whole U-Net per video, as a per-video batch would, repeats the
encoder N times for identical outputs.)

config.model.unet.conditioning chooses where the fused feature enters the decoder:
  "bottleneck"  (paper and release) only through the bottleneck fusion;
  "every_level" (ours, opt-in) the bottleneck fusion plus FiLM [Perez et al. 2018] after every
                decoder level, x * (1 + gamma(f)) + beta(f), with gamma and beta zero-initialised
                (so the network starts as the paper's). On a short CPU budget the paper's
                bottleneck-only path barely learns to use the feature (benchmarks/README.md,
                "Conditioning the U-Net"); the cpu preset of configs/parts/model.py uses this.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers

Dtype = Any


class ConvBlock(nn.Module):
  """num_convs x (3x3 conv, BatchNorm, ReLU)."""
  features: int
  num_convs: int = 2
  train: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    for i in range(self.num_convs):
      x = layers.conv(self.features, (3, 3), use_bias=False, name=f"conv{i}", **kw)(x)
      x = nn.relu(layers.batch_norm(self.train, name=f"bn{i}", **kw)(x))
    return x


class AttentionGate(nn.Module):
  """Additive attention gate [37]: skip x scaled by sigmoid(psi(ReLU(W_x x + W_g g))).

  input_norm=True (release, audio_net.py Attention_block): W_x and W_g are each a 1x1 conv with
  bias followed by BatchNorm; False (ours, after [37]): no BatchNorm, W_x without bias.
  """
  inter_features: int
  train: bool = False
  input_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, skip: jax.Array, gating: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    theta = layers.conv(self.inter_features, (1, 1), use_bias=self.input_norm, name="skip_conv",
                        **kw)(skip)
    phi = layers.conv(self.inter_features, (1, 1), name="gating_conv", **kw)(gating)
    if self.input_norm:
      theta = layers.batch_norm(self.train, name="skip_bn", **kw)(theta)
      phi = layers.batch_norm(self.train, name="gating_bn", **kw)(phi)
    psi = layers.conv(1, (1, 1), use_bias=False, name="psi_conv", **kw)(nn.relu(theta + phi))
    psi = nn.sigmoid(layers.batch_norm(self.train, name="psi_bn", **kw)(psi))
    return skip * psi


class DecoderLevel(nn.Module):
  """De-convolution (2x up), attention-gated skip, concatenation, conv block.

  deconv_norm=True: BatchNorm + ReLU after the de-convolution (ours: [37]'s up-conv block);
  False: the bare ConvTranspose of the release (audio_net.py, Unet.upconv*).
  """
  features: int
  num_convs: int = 2
  attention_gate: bool = True
  train: bool = False
  deconv_norm: bool = True
  gate_norm: bool = False
  deconv_impl: str = "matmul"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.conv_transpose(self.features, (2, 2), strides=(2, 2), name="deconv",
                              impl=self.deconv_impl, **kw)(x)
    if self.deconv_norm:
      x = nn.relu(layers.batch_norm(self.train, name="deconv_bn", **kw)(x))
    if self.attention_gate:
      skip = AttentionGate(max(self.features // 2, 1), self.train, self.gate_norm,
                           name="attention_gate", **kw)(skip, x)
    x = jnp.concatenate([x, skip], axis=-1)
    return ConvBlock(self.features, self.num_convs, self.train, name="conv_block", **kw)(x)


class BottleneckFusion(nn.Module):
  """Early fusion of the fused feature f [b, F] into the bottleneck B [b, h, w, C] (h = frequency,
  w = time; channels last).

  "self_attention" (paper, after Music-Gesture [15]): one multi-head self-attention layer over
  the h*w bottleneck positions plus f (projected to C) as an extra token, residual + LayerNorm.
  "release" (audio_net.py, Unet.forward): with f used raw (F must equal C, no projection),
    a[b, i, j, c] = f[b, c] * sum_t B[b, i, t, c]   (torch.matmul(B, f repeated), same for all j)
    out = softmax_c(a) * f + B                      (softmax over the channel axis, no 1/sqrt(C))
    out = MLP(out) + out,  MLP = Dense(C), ReLU, Dense(C), kernels N(0, 1e-4), biases 0.
  The release's matmul needs a square bottleneck (h == w); this form is the same for h == w
  and also defined otherwise.
  """
  kind: str = "self_attention"
  num_heads: int = 8
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, bottleneck: jax.Array, fused: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = bottleneck.shape
    if self.kind == "self_attention":
      positions = bottleneck.reshape(b, h * w, c)  # [b, hw, C]
      feature = layers.dense(c, name="feature_projection", **kw)(fused)[:, None, :]  # [b, 1, C]
      tokens = jnp.concatenate([positions, feature.astype(positions.dtype)], axis=1)
      heads = lambda y: y.reshape(b, h * w + 1, self.num_heads, c // self.num_heads)
      q = heads(layers.dense(c, name="query", **kw)(tokens))
      k = heads(layers.dense(c, name="key", **kw)(tokens))
      v = heads(layers.dense(c, name="value", **kw)(tokens))
      context = layers.dot_product_attention(q, k, v, jnp.ones((b, h * w + 1)))
      y = layers.dense(c, name="output", **kw)(context.reshape(b, h * w + 1, c))
      out = layers.layer_norm(name="norm", **kw)(tokens + y)[:, : h * w]
      return out.reshape(b, h, w, c)
    if self.kind == "release":
      if fused.shape[-1] != c:
        raise ValueError(f"config.model.unet.fusion='release' multiplies the fused feature "
                         f"({fused.shape[-1]} wide) into the {c}-channel bottleneck: set "
                         f"unet.bottleneck_channels to the fused width")
      f = fused.astype(bottleneck.dtype)[:, None, None, :]  # [b, 1, 1, C]
      scores = f * jnp.sum(bottleneck, axis=2, keepdims=True)  # [b, h, 1, C]
      weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(bottleneck.dtype)
      out = weights * f + bottleneck  # broadcast over the time axis
      init = nn.initializers.normal(1e-4)
      mlp = layers.dense(c, kernel_init=init, name="mlp_in", **kw)(out)
      out = out + layers.dense(c, kernel_init=init, name="mlp_out", **kw)(nn.relu(mlp))
      return out
    raise ValueError(f"config.model.unet.fusion: unknown {self.kind!r}")


class FiLM(nn.Module):
  """Feature-wise affine conditioning x [b, h, w, C] * (1 + gamma(f)) + beta(f), f [b, F]."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, feature: jax.Array) -> jax.Array:
    c = x.shape[-1]
    gamma_beta = layers.dense(2 * c, kernel_init=nn.initializers.zeros, name="dense",
                              dtype=self.dtype, param_dtype=self.param_dtype)(feature)
    gamma, beta = jnp.split(gamma_beta.astype(x.dtype)[:, None, None, :], 2, axis=-1)
    return x * (1.0 + gamma) + beta


CONDITIONING = ("bottleneck", "every_level")


class AttentionUNet(nn.Module):
  """log mixture [B, F, T] + fused features [B, N, D] -> mask logits [B, N, F, T]."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, log_mixture: jax.Array, fused: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.unet
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    b, f, t = log_mixture.shape
    n = fused.shape[1]
    conditioning = cfg.conditioning
    if conditioning not in CONDITIONING:
      raise ValueError(f"config.model.unet.conditioning={conditioning!r}: expected one of "
                       f"{CONDITIONING}")
    if f % 2**cfg.depth or t % 2**cfg.depth:
      raise ValueError(f"spectrogram {f}x{t} not divisible by 2**config.model.unet.depth")
    channels = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth)]
    block_cls = nn.remat(ConvBlock) if cfg.remat else ConvBlock
    level_cls = nn.remat(DecoderLevel) if cfg.remat else DecoderLevel
    # ---- encoder: once per mixture ----
    x = log_mixture[..., None].astype(kw["dtype"])  # [B, F, T, 1]
    if cfg.input_batch_norm:
      x = layers.batch_norm(train, name="input_bn", **kw)(x)
    skips = []
    for i, features in enumerate(channels):
      x = block_cls(features, cfg.convs_per_level, train, name=f"down{i}", **kw)(x)
      skips.append(x)
      x = layers.max_pool(x, (2, 2), strides=(2, 2))
    x = block_cls(cfg.bottleneck_channels, cfg.convs_per_level, train, name="bottleneck", **kw)(x)
    # ---- per video: fusion and decoder on [B*N, ...] ----
    per_video = lambda y: jnp.repeat(y, n, axis=0)  # [B, ...] -> [B*N, ...] (b-major like fused)
    feature = fused.reshape(b * n, -1)
    x = BottleneckFusion(cfg.fusion, cfg.fusion_heads, name="fusion", **kw)(per_video(x), feature)
    for i in reversed(range(cfg.depth)):
      x = level_cls(channels[i], cfg.convs_per_level, cfg.attention_gates, train,
                    cfg.get("deconv_norm", True), cfg.get("gate_norm", False),
                    deconv_impl=cfg.get("deconv_impl", "matmul"), name=f"up{i}",
                    **kw)(x, per_video(skips[i]))
      if conditioning == "every_level":
        x = FiLM(name=f"film{i}", **kw)(x, feature)
    logits = layers.conv(1, (1, 1), name="mask_conv", **kw)(x)  # [B*N, F, T, 1]
    return logits.reshape(b, n, f, t).astype(jnp.float32)
