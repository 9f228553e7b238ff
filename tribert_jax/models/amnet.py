"""AMnet (Zhu & Rahtu, "Visually guided sound source separation and localization using
self-supervised motion representations"): the two-stage separation network, in the project's
model contract (inputs dict -> (outputs, intermediates), `mask_logits` [B, N, 256, 256] like
TriBERT and Sound-of-Pixels). The AME networks are in tribert_jax/models/amnet_embedding.py.

  model = AMnet(config=config.model)                        # configs/amnet.py, model.stage
  (outputs, intermediates) = model.apply(variables, {"frames", "mix_warped"}, train=False)

Networks (supplement B; the choices it leaves open are config keys, README "AMnet"):
  * Motion Network (amnet_embedding.MotionNetwork, from the AME pre-training): its pooled
    f_M1 (C_M x T') per video feeds the Audio-Motion stage.
  * Appearance Network: dilated ResNet-18 (sound_of_pixels.DilatedResNet, stride 16), a 1x1 conv
    to C_A = num_classes channels, spatial average -> f_A (1 x C_A), on each video's centre frame.
  * Sound Spectrogram Network: MobileNetV2 encoder (inverted residual blocks) with an upsampling
    decoder and skips, log mixture 1 x 256 x 256 -> C_S = C_A maps f_mix.
  * Audio-appearance separation: f_S,n = sum_c alpha_c f_A,n,c f_mix,c + beta
    (sound_of_pixels.Synthesizer), sigmoid, binary mask at 0.5 (evaluation's threshold).
  * Audio-Motion stage (stage="motion"): the appearance stage runs frozen (running BatchNorm
    statistics, no gradient); its binary-masked spectrograms X_n = B_n * X_mix feed the Sound
    Spectrogram Refinement network: encoder to 512 x 16 x 16, Audio-Motion Transformer (8-head
    cross-attention of the 16 x 16 spectrogram tokens to the T' motion tokens, then an MLP),
    decoder with skips to residual spectrum features 1 x 256 x 256; residual fusion
    (motion_stage.fusion) with the appearance stage's spectrum features, sigmoid, binary mask.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tribert_jax.models import amnet_embedding
from tribert_jax.models import layers
from tribert_jax.models import sound_of_pixels

Dtype = Any
STAGES = ("appearance", "motion")
FUSIONS = ("relocate", "self")


# ----------------------------------------------------------------------------------------------
# Audio-Appearance stage (supplement B.2).
# ----------------------------------------------------------------------------------------------


class AppearanceNetwork(nn.Module):
  """One frame per video [B,N,S,S,3] -> f_A [B,N,C_A] (dilated ResNet-18, 1x1 conv, mean)."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.appearance
    kw = amnet_embedding.dtypes(self.config)
    b, n = images.shape[:2]
    images = images.reshape((b * n,) + images.shape[2:])  # [B*N, S, S, 3]
    x = sound_of_pixels.DilatedResNet(tuple(cfg.resnet_stage_sizes), cfg.resnet_width,
                                      name="resnet", **kw)(images, train)
    x = layers.conv(self.config.num_classes, (1, 1), name="class_conv", **kw)(x)  # [BN,h,w,C_A]
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).reshape(b, n, -1)
    return layers.activation(cfg.activation)(pooled)


class InvertedResidual(nn.Module):
  """MobileNetV2 block: 1x1 expand (ReLU6), 3x3 depthwise (stride), 1x1 project; identity
  shortcut when stride 1 and the width is unchanged."""
  features: int
  expansion: int
  strides: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    hidden = x.shape[-1] * self.expansion
    y = x
    if self.expansion != 1:
      y = layers.conv(hidden, (1, 1), use_bias=False, kernel_init=amnet_embedding.kaiming(),
                      name="expand", **kw)(y)
      y = nn.relu6(layers.batch_norm(train, name="expand_bn", **kw)(y))
    y = nn.Conv(hidden, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)),
                feature_group_count=hidden, use_bias=False, name="depthwise",
                kernel_init=layers.partitioned(
                    amnet_embedding.kaiming(), (None, None, layers.CONV_IN, layers.CONV_OUT)),
                **kw)(y)
    y = nn.relu6(layers.batch_norm(train, name="depthwise_bn", **kw)(y))
    y = layers.conv(self.features, (1, 1), use_bias=False,
                    kernel_init=amnet_embedding.kaiming(), name="project", **kw)(y)
    y = layers.batch_norm(train, name="project_bn", **kw)(y)
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


class SpectrogramNetwork(nn.Module):
  """Log mixture [B,F,T] -> f_mix [B,F,T,C_S]: MobileNetV2 encoder, decoder that doubles the
  resolution per level (bilinear, skip concat, 3x3 conv, BatchNorm, ReLU), 3x3 conv to C_S."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, log_mixture: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.spectrogram
    kw = amnet_embedding.dtypes(self.config)
    stride = 2 * int(np.prod([s for _, _, _, s in cfg.blocks]))
    if log_mixture.shape[1] % stride or log_mixture.shape[2] % stride:
      raise ValueError(f"spectrogram {log_mixture.shape[1:]} not divisible by the stride {stride} "
                       "of config.model.spectrogram.blocks")
    x = layers.batch_norm(train, name="input_bn", **kw)(log_mixture[..., None].astype(kw["dtype"]))
    x = layers.conv(cfg.stem_channels, (3, 3), strides=2, padding=((1, 1), (1, 1)),
                    use_bias=False, kernel_init=amnet_embedding.kaiming(), name="stem", **kw)(x)
    x = nn.relu6(layers.batch_norm(train, name="stem_bn", **kw)(x))
    skips = {x.shape[1]: x}  # resolution -> deepest features there
    for stage, (expansion, features, repeats, strides) in enumerate(cfg.blocks):
      for block in range(repeats):
        x = InvertedResidual(features, expansion, strides if block == 0 else 1,
                             name=f"block{stage}_{block}", **kw)(x, train)
      skips[x.shape[1]] = x
    size = x.shape[1]
    level = 0
    while size * 2 < log_mixture.shape[1]:
      size *= 2
      skip = skips[size]
      x = jax.image.resize(x, (x.shape[0], size, size * x.shape[2] // x.shape[1], x.shape[3]),
                           "bilinear")
      x = jnp.concatenate([x, skip], axis=-1)
      x = layers.conv(skip.shape[-1], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                      name=f"up{level}", **kw)(x)
      x = nn.relu(layers.batch_norm(train, name=f"up{level}_bn", **kw)(x))
      level += 1
    x = jax.image.resize(x, (x.shape[0],) + log_mixture.shape[1:] + (x.shape[3],), "bilinear")
    x = layers.conv(self.config.num_classes, (3, 3), padding=((1, 1), (1, 1)), name="output",
                    **kw)(x)
    return x  # [B, F, T, C_S]


# ----------------------------------------------------------------------------------------------
# Audio-Motion stage (supplement B.3).
# ----------------------------------------------------------------------------------------------


class AudioMotionTransformer(nn.Module):
  """AMT: spectrogram tokens [V,L,C] attend to motion tokens [V,T',C_M] (cross-attention with
  num_heads heads, then an MLP; post-LayerNorm residual blocks), num_layers times."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, tokens: jax.Array, motion: jax.Array) -> jax.Array:
    cfg = self.config.refinement
    kw = amnet_embedding.dtypes(self.config)
    v, length, width = tokens.shape
    heads = cfg.num_heads
    embed_init = layers.partitioned(nn.initializers.normal(0.02), (layers.VOCAB, layers.EMBED))
    tokens = tokens + self.param("spectrogram_position", embed_init, (length, width),
                                 kw["param_dtype"]).astype(tokens.dtype)
    motion = layers.dense(width, names=(layers.MLP, layers.EMBED), name="motion_projection",
                          **kw)(motion.astype(kw["dtype"]))
    motion = motion + self.param("motion_position", embed_init, (motion.shape[1], width),
                                 kw["param_dtype"]).astype(motion.dtype)
    key_mask = jnp.ones(motion.shape[:2], jnp.float32)
    for i in range(cfg.num_layers):
      split = lambda x: x.reshape(x.shape[:2] + (heads, width // heads))  # noqa: E731
      q = split(layers.dense(width, name=f"layer{i}_query", **kw)(tokens))
      k = split(layers.dense(width, name=f"layer{i}_key", **kw)(motion))
      val = split(layers.dense(width, name=f"layer{i}_value", **kw)(motion))
      attended = layers.dot_product_attention(q, k, val, key_mask).reshape(v, length, width)
      attended = layers.dense(width, names=(layers.MLP, layers.EMBED), name=f"layer{i}_output",
                              **kw)(attended)
      tokens = layers.layer_norm(name=f"layer{i}_attention_norm", **kw)(tokens + attended)
      hidden = nn.relu(layers.dense(cfg.mlp_dim, name=f"layer{i}_mlp_in", **kw)(tokens))
      hidden = layers.dense(width, names=(layers.MLP, layers.EMBED), name=f"layer{i}_mlp_out",
                            **kw)(hidden)
      tokens = layers.layer_norm(name=f"layer{i}_mlp_norm", **kw)(tokens + hidden)
    return tokens


class RefinementNetwork(nn.Module):
  """SSR: a stage-1 output spectrogram [V,F,T] and motion features [V,T',C_M] -> residual
  spectrum features [V,F,T] (encoder to C x F/16 x T/16, AMT, decoder with skips)."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, log_spectrogram: jax.Array, motion: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.refinement
    kw = amnet_embedding.dtypes(self.config)
    channels = tuple(cfg.channels)
    x = log_spectrogram[..., None].astype(kw["dtype"])
    x = layers.batch_norm(train, name="input_bn", **kw)(x)
    skips = []
    for i, features in enumerate(channels):  # SSR_E: 4x4 stride-2 convs
      x = layers.conv(features, (4, 4), strides=2, padding=((1, 1), (1, 1)), use_bias=False,
                      name=f"down{i}", **kw)(x)
      x = nn.leaky_relu(layers.batch_norm(train, name=f"down{i}_bn", **kw)(x), 0.2)
      skips.append(x)
    v, h, w, c = x.shape  # paper: 512 x 16 x 16
    tokens = AudioMotionTransformer(self.config, name="transformer")(x.reshape(v, h * w, c), motion)
    x = tokens.reshape(v, h, w, c)
    for i in reversed(range(len(channels))):  # SSR_D: upsample, conv, skip of the next level up
      if i < len(channels) - 1:
        x = jnp.concatenate([x, skips[i]], axis=-1)
      x = jax.image.resize(x, (v, 2 * x.shape[1], 2 * x.shape[2], x.shape[3]), "bilinear")
      if i == 0:
        # No bias: under "relocate" a constant residual cancels between the pairs.
        x = layers.conv(1, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="up0", **kw)(x)
      else:
        x = layers.conv(channels[i - 1], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                        name=f"up{i}", **kw)(x)
        x = nn.relu(layers.batch_norm(train, name=f"up{i}_bn", **kw)(x))
    return x[..., 0].astype(jnp.float32)


def residual_fusion(appearance_logits: jax.Array, residuals: jax.Array, fusion: str) -> jax.Array:
  """Final spectrum features [B,N,F,T] from the appearance stage's [B,N,F,T] and the SSR's
  residuals. "relocate": residuals [B,N,N,F,T], entry (n, m) = the components of source n's
  output that belong to source m (SSR of X_n with the motion of m, n != m; the diagonal is
  unused): f_m = f_m^app + sum_{n != m} r_{n->m} - sum_{k != m} r_{m->k}. "self": residuals
  [B,N,F,T] (SSR of X_n with its own motion): f_n = f_n^app + r_n."""
  if fusion == "self":
    return appearance_logits + residuals
  if fusion != "relocate":
    raise ValueError(f"config.model.motion_stage.fusion={fusion!r}: expected one of {FUSIONS}")
  n = residuals.shape[1]
  off_diagonal = (1.0 - jnp.eye(n, dtype=residuals.dtype))[None, :, :, None, None]
  residuals = residuals * off_diagonal
  incoming = jnp.sum(residuals, axis=1)  # [B, m, F, T]: sum over n of r_{n->m}
  outgoing = jnp.sum(residuals, axis=2)  # [B, m, F, T]: sum over k of r_{m->k}
  return appearance_logits + incoming - outgoing


class AMnet(nn.Module):
  """AMnet separation: stage "appearance" (B.2) or "motion" (B.2 frozen + B.3)."""
  config: ml_collections.ConfigDict  # config.model (configs/amnet.py)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    cfg = self.config
    if cfg.stage not in STAGES:
      raise ValueError(f"config.model.stage={cfg.stage!r}: expected one of {STAGES}")
    frames = inputs["frames"]  # [B, N, T, S, S, 3]
    mix_warped = inputs["mix_warped"]  # [B, F, T]
    appearance_train = train and cfg.stage == "appearance"  # frozen in the motion stage
    centre = frames[:, :, frames.shape[2] // 2]  # [B, N, S, S, 3]
    appearance = AppearanceNetwork(cfg, name="appearance_network")(centre, appearance_train)
    log_mixture = jnp.log(mix_warped + cfg.log_eps)
    f_mix = SpectrogramNetwork(cfg, name="spectrogram_network")(log_mixture, appearance_train)
    appearance_logits = sound_of_pixels.Synthesizer(
        param_dtype=layers.to_dtype(cfg.param_dtype), name="synthesizer")(appearance, f_mix)
    intermediates = {"appearance_feature": appearance}  # f_A [B, N, C_A]
    if cfg.stage == "appearance":
      return {"mask_logits": appearance_logits}, intermediates

    # ---- Audio-Motion stage: the appearance stage is frozen ----
    appearance_logits = jax.lax.stop_gradient(appearance_logits)
    b, n, t = frames.shape[:3]
    freeze_motion = cfg.motion_stage.freeze_motion_network
    _, motion, _ = amnet_embedding.MotionNetwork(cfg, name="motion_network")(
        frames.reshape((b * n,) + frames.shape[2:]), train and not freeze_motion)
    if freeze_motion:
      motion = jax.lax.stop_gradient(motion)
    motion = motion.reshape((b, n) + motion.shape[1:])  # [B, N, T', C_M]
    # Output spectrograms of the appearance stage: binary mask (threshold 0.5) x mixture.
    masked = jnp.where(appearance_logits > 0, mix_warped[:, None], 0.0)  # [B, N, F, T]
    log_masked = jnp.log(masked + cfg.log_eps)
    refine = RefinementNetwork(cfg, name="refinement_network")
    if cfg.motion_stage.fusion == "self":
      residuals = refine(log_masked.reshape((b * n,) + log_masked.shape[2:]),
                         motion.reshape((b * n,) + motion.shape[2:]), train)
      residuals = residuals.reshape(log_masked.shape)
    else:
      # Every ordered pair (n, m), n != m: the spectrogram of n with the motion of m.
      pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
      spectrograms = jnp.stack([log_masked[:, i] for i, _ in pairs], axis=1)
      motions = jnp.stack([motion[:, j] for _, j in pairs], axis=1)
      p = len(pairs)
      out = refine(spectrograms.reshape((b * p,) + spectrograms.shape[2:]),
                   motions.reshape((b * p,) + motions.shape[2:]), train)
      out = out.reshape((b, p) + out.shape[1:])
      residuals = jnp.zeros((b, n, n) + out.shape[2:], out.dtype)
      for index, (i, j) in enumerate(pairs):
        residuals = residuals.at[:, i, j].set(out[:, index])
    mask_logits = residual_fusion(appearance_logits, residuals, cfg.motion_stage.fusion)
    intermediates.update(appearance_mask_logits=appearance_logits, residuals=residuals,
                         motion_features=motion)
    return {"mask_logits": mask_logits}, intermediates


def frozen_prefixes(model_config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Parameter prefixes the optimiser must leave alone: the appearance stage in the motion stage
  (and the AME motion network unless it is fine-tuned)."""
  if model_config.get("name") != "amnet" or model_config.stage != "motion":
    return ()
  frozen = ("appearance_network", "spectrogram_network", "synthesizer")
  if model_config.motion_stage.freeze_motion_network:
    frozen += ("motion_network",)
  return frozen
