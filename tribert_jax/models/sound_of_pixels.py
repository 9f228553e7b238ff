"""Sound-of-Pixels (Zhao et al., ECCV 2018): the mix-and-separate baseline of the paper's Table 1.

  model = SoundOfPixels(config=config.model)       # config.model from configs/sound_of_pixels.py
  variables = model.init({"params": k}, inputs, train=False)
  (outputs, intermediates), mutated = model.apply(variables, inputs, train=True,
        mutable=["batch_stats"])
  outputs, intermediates = model.apply(variables, inputs, train=False)

Same inputs and `mask_logits` output as TriBERT (only frames and mix_warped are read; the oracle
reads labels instead of frames), so the trainer's loss (tribert_jax.losses: only the separation
term applies) and evaluation run unchanged. Three parts:
  * video analysis network: dilated ResNet-18 per frame (the last stage dilated instead of
    strided: stride 16), 3x3 conv to K channels, max-pool over the T frames, then over space,
    sigmoid -> one K-vector per video;
  * audio analysis network: U-Net on the log warped mixture magnitude (7 stride-2 4x4
    down-convolutions, 7 upsample + 3x3 conv levels with skips) -> K channels, once per mixture;
  * audio synthesizer: mask logit of video n = sum_k visual_k * alpha_k * audio_k + beta.

config.model.visual_source = "oracle" replaces the video analysis network by a learned linear
map (no bias, then the same sigmoid) of each video's instrument labels (inputs["labels"]): a
check that the audio side can use a conditioning vector at all.

config.model.init = "sound_of_pixels" initialises as the original (hangzhaomit/Sound-of-Pixels,
models/__init__.py ModelBuilder.weights_init, applied to its U-Net and synthesizer): every
convolution kernel of the U-Net N(0, 0.001^2), BatchNorm scales N(1, 0.02^2) and biases 0,
linear layers N(0, 0.0001^2) (none here); the U-Net's output is then ~0 and every initial
mask ~0.5. The oracle map, which the original does not have, starts at N(0, oracle_init_std^2):
at the original's 1e-4 every video would start with the same vector (a saddle: the masks' loss
gradient reaching the audio side is proportional to the difference of the two videos' vectors),
while the visual vector it stands for differs between videos from the start (ImageNet features). Its frame network is an ImageNet ResNet-18 plus a 3x3 conv left at torch's
default; from scratch here the trunk keeps torchvision's ResNet initialisation (Kaiming normal,
fan-out; BatchNorm 1, 0) and the 3x3 conv torch's Conv2d default (uniform, +-1/sqrt(fan_in)).
Convolution biases start at 0 (torch draws them uniformly). "flax" = LeCun normal kernels and
BatchNorm scales 1 outside the trunk (this project's earlier initialisation).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers

Dtype = Any


INITS = ("sound_of_pixels", "flax")


def _kaiming() -> Any:
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _initializers(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Kernel/scale initialisers of config.model.init (module docstring) for the U-Net's
  convolutions ("conv"), its BatchNorm scales ("bn_scale") and the visual 3x3 conv
  ("channel_conv")."""
  # Workdirs written before the key existed (config.json) restore with the default.
  init = config.get("init", "sound_of_pixels")
  if init == "sound_of_pixels":
    return dict(conv=nn.initializers.normal(1e-3),
                bn_scale=lambda key, shape, dtype=jnp.float32: (
                    1.0 + 0.02 * jax.random.normal(key, shape, dtype)),
                channel_conv=nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"))
  if init == "flax":
    return dict(conv=nn.initializers.lecun_normal(), bn_scale=nn.initializers.ones_init(),
                channel_conv=nn.initializers.lecun_normal())
  raise ValueError(f"config.model.init={init!r}: expected one of {INITS}")


class BasicBlock(nn.Module):
  """ResNet-18 basic block: two 3x3 convs (first strided or dilated), projection shortcut."""
  features: int
  strides: int = 1
  first_dilation: int = 1  # dilation of conv1
  dilation: int = 1  # dilation of conv2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    d = self.first_dilation
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding=((d, d), (d, d)),
                kernel_dilation=d, use_bias=False, name="conv1",
                kernel_init=layers.partitioned(_kaiming(), (None, None, layers.CONV_IN,
                                                            layers.CONV_OUT)), **kw)(x)
    y = nn.relu(layers.batch_norm(train, name="bn1", **kw)(y))
    d = self.dilation
    y = nn.Conv(self.features, (3, 3), padding=((d, d), (d, d)), kernel_dilation=d,
                use_bias=False, name="conv2",
                kernel_init=layers.partitioned(_kaiming(), (None, None, layers.CONV_IN,
                                                            layers.CONV_OUT)), **kw)(y)
    y = layers.batch_norm(train, name="bn2", **kw)(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = layers.conv(self.features, (1, 1), strides=self.strides, use_bias=False,
                      kernel_init=_kaiming(), name="downsample_conv", **kw)(x)
      x = layers.batch_norm(train, name="downsample_bn", **kw)(x)
    return nn.relu(x + y)


class DilatedResNet(nn.Module):
  """ResNet-18 trunk, last stage dilated instead of strided: [n,S,S,3] -> [n,S/16,S/16,8*width]."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = layers.conv(self.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                    kernel_init=_kaiming(), name="conv1", **kw)(images.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train, name="bn1", **kw)(x))
    x = layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    last = len(self.stage_sizes) - 1
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if block == 0 and 0 < stage < last else 1
        # Last stage: stride 1 and dilation 2 instead of stride 2 (its first conv, which
        # would have been strided, keeps dilation 1), so the output stride is 16, not 32.
        dilated = stage == last and stage > 0
        first_dilation = 2 if dilated and block > 0 else 1
        dilation = 2 if dilated else 1
        x = BasicBlock(self.width * 2**stage, strides, first_dilation, dilation,
                       name=f"layer{stage + 1}_{block}", **kw)(x, train)
    return x


class VideoAnalysisNetwork(nn.Module):
  """Frames [B,N,T,S,S,3] -> visual feature [B,N,K] in (0,1) (max over frames, then space)."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, frames: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    cfg = self.config.visual
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    b, n, t = frames.shape[:3]
    images = frames.reshape((b * n * t,) + frames.shape[3:])  # [B*N*T, S, S, 3]
    x = DilatedResNet(tuple(cfg.resnet_stage_sizes), cfg.resnet_width, name="resnet", **kw)(
        images, train)
    x = layers.conv(self.config.num_channels, (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=_initializers(self.config)["channel_conv"],
                    name="channel_conv", **kw)(x)  # [B*N*T, h, w, K]
    h, w, k = x.shape[1:]
    x = x.reshape(b, n, t, h, w, k)
    maps = jnp.max(x, axis=2)  # temporal max pool: [B, N, h, w, K]
    pooled = jnp.max(maps, axis=(2, 3))  # spatial max pool: [B, N, K]
    return nn.sigmoid(pooled.astype(jnp.float32)), maps.astype(jnp.float32)


class OracleVisual(nn.Module):
  """Labels [B,N,C] -> visual feature [B,N,K] in (0,1): sigmoid(labels @ W), W learned, no bias,
  W ~ N(0, model.oracle_init_std^2) (model.visual_source="oracle")."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    # Workdirs written before the key existed (config.json) restore with the former N(0, 1e-4).
    std = self.config.get("oracle_init_std", 1e-4)
    x = layers.dense(self.config.num_channels, use_bias=False, names=(layers.CLASSES, layers.EMBED),
                     kernel_init=nn.initializers.normal(std), name="label_map",
                     **kw)(labels.astype(kw["dtype"]))
    return nn.sigmoid(x.astype(jnp.float32))


class AudioUNet(nn.Module):
  """Log mixture [B,F,T] -> K audio channels [B,F,T,K] (pix2pix-style U-Net, depth levels)."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, log_mixture: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.unet
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    b, f, t = log_mixture.shape
    if f % 2**cfg.depth or t % 2**cfg.depth:
      raise ValueError(f"spectrogram {f}x{t} not divisible by 2**config.model.unet.depth "
                       f"({cfg.depth})")
    init = _initializers(self.config)
    kw_conv = dict(kw, kernel_init=init["conv"])
    kw_bn = dict(kw, scale_init=init["bn_scale"])
    channels = [min(cfg.base_channels * 2**i, cfg.max_channels) for i in range(cfg.depth)]
    x = layers.batch_norm(train, name="input_bn", **kw_bn)(
        log_mixture[..., None].astype(kw["dtype"]))
    # ---- down: [LeakyReLU] 4x4 stride-2 conv [BatchNorm]: no activation before the first,
    # no BatchNorm after the first and the innermost level ----
    skips = []
    for i, features in enumerate(channels):
      if i > 0:
        x = nn.leaky_relu(x, 0.2)
      norm = 0 < i < cfg.depth - 1
      x = layers.conv(features, (4, 4), strides=2, padding=((1, 1), (1, 1)), use_bias=not norm,
                      name=f"down{i}", **kw_conv)(x)
      if norm:
        x = layers.batch_norm(train, name=f"down{i}_bn", **kw_bn)(x)
      skips.append(x)
    # ---- up: ReLU, 2x bilinear upsample, 3x3 conv, BatchNorm, concatenate the skip ----
    x = skips.pop()
    for i in reversed(range(cfg.depth)):
      x = nn.relu(x)
      x = jax.image.resize(x, (x.shape[0], 2 * x.shape[1], 2 * x.shape[2], x.shape[3]),
                           "bilinear")
      if i == 0:  # outermost: the K output channels (activation none, as in the release)
        x = layers.conv(self.config.num_channels, (3, 3), padding=((1, 1), (1, 1)),
                        name="up0", **kw_conv)(x)
      else:
        x = layers.conv(channels[i - 1], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                        name=f"up{i}", **kw_conv)(x)
        x = layers.batch_norm(train, name=f"up{i}_bn", **kw_bn)(x)
        x = jnp.concatenate([x, skips.pop()], axis=-1)
    return x  # [B, F, T, K]


class Synthesizer(nn.Module):
  """Linear audio synthesizer: visual [B,N,K] x audio [B,F,T,K] -> mask logits [B,N,F,T]."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, visual: jax.Array, audio: jax.Array) -> jax.Array:
    k = audio.shape[-1]
    alpha = self.param("alpha", layers.partitioned(nn.initializers.ones_init(), (layers.EMBED,)),
                       (k,), self.param_dtype)
    beta = self.param("beta", layers.partitioned(nn.initializers.zeros_init(), (None,)), (1,),
                      self.param_dtype)
    weights = (visual * alpha).astype(jnp.float32)  # [B, N, K]
    return jnp.einsum("bnk,bftk->bnft", weights, audio.astype(jnp.float32)) + beta[0]


class SoundOfPixels(nn.Module):
  """The full baseline: inputs dict -> (outputs, intermediates) like TriBERT (mask_logits only)."""
  config: ml_collections.ConfigDict  # config.model (configs/sound_of_pixels.py)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    cfg = self.config
    intermediates = {}
    # Workdirs written before the key existed (config.json) restore with the default.
    visual_source = cfg.get("visual_source", "frames")
    if visual_source == "frames":
      visual, maps = VideoAnalysisNetwork(cfg, name="video_network")(inputs["frames"], train)
      intermediates["visual_channel_maps"] = maps  # [B, N, h, w, K], max over frames
    elif visual_source == "oracle":
      if "labels" not in inputs:
        raise ValueError("config.model.visual_source='oracle' reads inputs['labels'] (the "
                         "batch's instrument labels [B, N, C])")
      visual = OracleVisual(cfg, name="oracle_visual")(inputs["labels"])
    else:
      raise ValueError(f"config.model.visual_source={visual_source!r}: expected 'frames' "
                       "or 'oracle'")
    intermediates["visual_feature"] = visual  # [B, N, K], after the sigmoid
    log_mixture = jnp.log(inputs["mix_warped"] + cfg.log_eps)  # [B, 256, 256]
    audio = AudioUNet(cfg, name="audio_network")(log_mixture, train)  # [B, F, T, K]
    mask_logits = Synthesizer(param_dtype=layers.to_dtype(cfg.param_dtype),
                              name="synthesizer")(visual, audio)
    return {"mask_logits": mask_logits}, intermediates


class FrameClassifier(nn.Module):
  """Frame pre-training model (configs/sound_of_pixels_frames.py): Sound-of-Pixels' dilated
  ResNet-18 trunk ("resnet", the same module and shapes as video_network/resnet), spatial mean,
  linear classifier: images [M,S,S,3] -> instrument logits [M,C]."""
  config: ml_collections.ConfigDict  # config.model (configs/sound_of_pixels_frames.py)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    cfg = self.config
    kw = dict(dtype=layers.to_dtype(cfg.dtype), param_dtype=layers.to_dtype(cfg.param_dtype))
    x = DilatedResNet(tuple(cfg.visual.resnet_stage_sizes), cfg.visual.resnet_width,
                      name="resnet", **kw)(images, train)  # [M, h, w, 8 * width]
    x = jnp.mean(x, axis=(1, 2))
    logits = layers.dense(cfg.num_classes, names=(layers.EMBED, layers.CLASSES),
                          name="classifier", **kw)(x)
    return logits.astype(jnp.float32)


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1,
                   key: jax.Array | None = None) -> dict[str, jax.Array]:
  """The inputs the model reads (frames, mix_warped, labels) at config.input's sizes; random
  labels are one class per video."""
  c = config.input
  frames_shape = (batch_size, c.num_mix, c.num_frames, c.image_size, c.image_size, 3)
  mix_shape = (batch_size, c.spectrogram_size, c.spectrogram_size)
  labels_shape = (batch_size, c.num_mix, config.num_classes)
  if key is None:
    return dict(frames=jnp.zeros(frames_shape), mix_warped=jnp.ones(mix_shape),
                labels=jnp.zeros(labels_shape))
  k1, k2, k3 = jax.random.split(key, 3)
  labels = jax.nn.one_hot(jax.random.randint(k3, labels_shape[:2], 0, config.num_classes),
                          config.num_classes)
  return dict(frames=jax.random.normal(k1, frames_shape),
              mix_warped=jax.random.uniform(k2, mix_shape) ** 2, labels=labels)
