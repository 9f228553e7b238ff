"""AMnet's Audio-Motion Embedding (AME) networks (Zhu & Rahtu, supplement B.1): the Motion
Network (3D ResNet-18) and the Sound Network (1D ResNet-18) whose 1 x T' embeddings the AME
objective (tribert_jax/losses.py audio_motion_embedding_loss) correlates; the Motion Network is
also the motion encoder of AMnet's Audio-Motion stage (tribert_jax/models/amnet.py).

  model = AudioMotionEmbedding(config=config.model)        # configs/amnet_ame.py
  (outputs, intermediates) = model.apply(variables, {"frames": [V,T,S,S,3], "audio": [V,L']},
                                         train=False)

  * Motion Network E_M: 3D ResNet-18 over T frames, spatial stride 16 and temporal stride 4
    (paper T = 48 at 224 x 224 -> 512 x 12 x 14 x 14 = f_M1); a 3D conv to one channel (f_M2)
    and a spatial average (f_M3: the 1 x T' motion embedding); the spatial average of f_M1
    (512 x T') is the motion representation of the Audio-Motion stage.
  * Sound Network E_S: 1D ResNet-18 over the waveform, fractional (adaptive average) pooling to
    T' positions and a 1D conv to one channel: the 1 x T' sound embedding.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tribert_jax.models import layers

Dtype = Any

def kaiming() -> Any:
  """He-normal (fan out) initialiser of the ResNets' convolutions."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def dtypes(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{dtype, param_dtype} of config.model."""
  return dict(dtype=layers.to_dtype(config.dtype), param_dtype=layers.to_dtype(config.param_dtype))



# ----------------------------------------------------------------------------------------------
# ResNet-18 in 1D and 3D (basic blocks, any number of spatial axes).
# ----------------------------------------------------------------------------------------------


class BasicBlockND(nn.Module):
  """ResNet basic block over len(strides) axes: two 3^d convs (first strided), projection
  shortcut when the shape changes."""
  features: int
  strides: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    strides = tuple(self.strides)
    kernel, pad = (3,) * len(strides), ((1, 1),) * len(strides)
    y = layers.conv(self.features, kernel, strides=strides, padding=pad, use_bias=False,
                    kernel_init=kaiming(), name="conv1", **kw)(x)
    y = nn.relu(layers.batch_norm(train, name="bn1", **kw)(y))
    y = layers.conv(self.features, kernel, padding=pad, use_bias=False, kernel_init=kaiming(),
                    name="conv2", **kw)(y)
    y = layers.batch_norm(train, name="bn2", **kw)(y)
    if x.shape[-1] != self.features or any(s != 1 for s in strides):
      x = layers.conv(self.features, (1,) * len(strides), strides=strides, use_bias=False,
                      kernel_init=kaiming(), name="downsample_conv", **kw)(x)
      x = layers.batch_norm(train, name="downsample_bn", **kw)(x)
    return nn.relu(x + y)


class ResNetND(nn.Module):
  """ResNet-18 trunk over d axes: stem conv (+ optional max-pool), then stages of basic blocks
  whose first block has that stage's strides. [n, *axes, c] -> [n, *axes / stride, 8 * width]."""
  stem_kernel: Sequence[int]
  stem_strides: Sequence[int]
  pool_strides: Sequence[int] | None  # max-pool window = stride after the stem; None = no pool
  stage_strides: Sequence[Sequence[int]]
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    pad = tuple((k // 2, k // 2) for k in self.stem_kernel)
    x = layers.conv(self.width, tuple(self.stem_kernel), strides=tuple(self.stem_strides),
                    padding=pad, use_bias=False, kernel_init=kaiming(), name="conv1",
                    **kw)(x.astype(self.dtype))
    x = nn.relu(layers.batch_norm(train, name="bn1", **kw)(x))
    if self.pool_strides is not None:
      window = tuple(self.pool_strides)
      x = layers.max_pool(x, window, strides=window, padding="SAME")
    for stage, (num_blocks, strides) in enumerate(zip(self.stage_sizes, self.stage_strides)):
      for block in range(num_blocks):
        block_strides = tuple(strides) if block == 0 else (1,) * len(strides)
        x = BasicBlockND(self.width * 2**stage, block_strides, name=f"layer{stage + 1}_{block}",
                         **kw)(x, train)
    return x


def adaptive_average_matrix(num_in: int, num_out: int) -> np.ndarray:
  """[num_in, num_out] averaging weights of adaptive average pooling (torch's bins: output i
  averages inputs floor(i * n / m) ... ceil((i + 1) * n / m) - 1)."""
  weights = np.zeros((num_in, num_out), np.float32)
  for i in range(num_out):
    start, end = (i * num_in) // num_out, -((-(i + 1) * num_in) // num_out)
    weights[start:end, i] = 1.0 / (end - start)
  return weights


# ----------------------------------------------------------------------------------------------
# Audio-Motion Embedding networks (supplement B.1).
# ----------------------------------------------------------------------------------------------


class MotionNetwork(nn.Module):
  """Frames [V,T,S,S,3] -> (motion embedding f_M3 [V,T'], pooled features [V,T',C_M],
  embedding map f_M2 [V,T',S',S'])."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, frames: jax.Array, train: bool):
    cfg = self.config.motion
    kw = dtypes(self.config)
    features = ResNetND(tuple(cfg.stem_kernel), tuple(cfg.stem_strides), None,
                        tuple(tuple(s) for s in cfg.stage_strides), tuple(cfg.stage_sizes),
                        cfg.width, name="resnet", **kw)(frames, train)  # f_M1 [V,T',S',S',C_M]
    k = tuple(cfg.embedding_kernel)
    # No bias: a Pearson correlation ignores a constant offset, so it would never learn.
    embedding_map = layers.conv(1, k, padding=tuple((i // 2, i // 2) for i in k), use_bias=False,
                                name="embedding_conv", **kw)(features)[..., 0]  # f_M2
    embedding = jnp.mean(embedding_map, axis=(2, 3))  # f_M3 [V, T']
    pooled = jnp.mean(features, axis=(2, 3))  # [V, T', C_M]
    return (embedding.astype(jnp.float32), pooled.astype(jnp.float32),
            embedding_map.astype(jnp.float32))


class SoundNetwork(nn.Module):
  """Waveform [V,L'] -> sound embedding [V,T'] (1D ResNet-18, fractional pooling to T', conv)."""
  config: ml_collections.ConfigDict  # config.model
  num_positions: int  # T', the motion embedding's length

  @nn.compact
  def __call__(self, audio: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.sound
    kw = dtypes(self.config)
    x = ResNetND((cfg.stem_kernel,), (cfg.stem_stride,), (cfg.pool_stride,),
                 tuple((s,) for s in cfg.stage_strides), tuple(cfg.stage_sizes), cfg.width,
                 name="resnet", **kw)(audio[..., None], train)  # [V, P, C]
    # Fractional pooling: adaptive average over P positions into T' bins.
    weights = jnp.asarray(adaptive_average_matrix(x.shape[1], self.num_positions), x.dtype)
    x = jnp.einsum("vpc,pt->vtc", x, weights)
    x = layers.conv(1, (3,), padding=((1, 1),), use_bias=False, name="embedding_conv", **kw)(x)
    return x[..., 0].astype(jnp.float32)  # [V, T']


class AudioMotionEmbedding(nn.Module):
  """The AME framework: motion and sound embeddings of the same clips ([V, T'] each); the loss
  (tribert_jax.losses.audio_motion_embedding_loss) contrasts them."""
  config: ml_collections.ConfigDict  # config.model (configs/amnet_ame.py)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False):
    motion, pooled, embedding_map = MotionNetwork(self.config, name="motion_network")(
        inputs["frames"], train)
    sound = SoundNetwork(self.config, motion.shape[1], name="sound_network")(inputs["audio"], train)
    outputs = {"motion_embedding": motion, "sound_embedding": sound}
    return outputs, {"motion_features": pooled, "motion_embedding_map": embedding_map}


def example_ame_inputs(config: ml_collections.ConfigDict, batch_size: int = 1,
                       key: jax.Array | None = None) -> dict[str, jax.Array]:
  """AME inputs of config.model.input's sizes: frames [V,T,S,S,3], audio [V,L']."""
  c = config.input
  frames_shape = (batch_size, c.num_frames, c.image_size, c.image_size, 3)
  audio_shape = (batch_size, ame_audio_length(config))
  if key is None:
    return dict(frames=jnp.zeros(frames_shape), audio=jnp.zeros(audio_shape))
  k1, k2 = jax.random.split(key)
  return dict(frames=jax.random.normal(k1, frames_shape),
              audio=0.1 * jax.random.normal(k2, audio_shape))


def ame_audio_length(config: ml_collections.ConfigDict) -> int:
  """Samples of the sound network's input: the T frames' duration (T / fps seconds), at most the
  batch's audio crop (paper: 48 / 8 s = 66150 > 65535, so the whole crop)."""
  c = config.input
  return min(c.audio_length, int(round(c.num_frames / c.fps * c.sample_rate)))
