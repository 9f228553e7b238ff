"""ResNet-50 backbone (torchvision v1.5 layout: stride on the 3x3 conv), width/depth configurable.

Submodule names mirror torchvision's state-dict keys (conv1, bn1, layer1_0/conv1, ...,
layer1_0/downsample_conv, layer1_0/downsample_bn) so tribert_jax.models.pretrained can map an
ImageNet checkpoint onto the parameters by name.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tribert_jax.models import layers

Dtype = Any


class Bottleneck(nn.Module):
  """ResNet bottleneck block: 1x1 -> 3x3 (strided) -> 1x1 (x4), projection shortcut if needed."""
  width: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    kaiming = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    y = layers.conv(self.width, (1, 1), use_bias=False, kernel_init=kaiming, name="conv1", **kw)(x)
    y = nn.relu(layers.batch_norm(train, name="bn1", **kw)(y))
    y = layers.conv(self.width, (3, 3), strides=self.strides, padding=((1, 1), (1, 1)),
                    use_bias=False, kernel_init=kaiming, name="conv2", **kw)(y)
    y = nn.relu(layers.batch_norm(train, name="bn2", **kw)(y))
    y = layers.conv(self.width * 4, (1, 1), use_bias=False, kernel_init=kaiming, name="conv3",
                    **kw)(y)
    y = layers.batch_norm(train, name="bn3", **kw)(y)
    if x.shape[-1] != self.width * 4 or self.strides != 1:
      x = layers.conv(self.width * 4, (1, 1), strides=self.strides, use_bias=False,
                      kernel_init=kaiming, name="downsample_conv", **kw)(x)
      x = layers.batch_norm(train, name="downsample_bn", **kw)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet trunk without the classifier: images [n, S, S, 3] -> features [n, S/32, S/32, 32*width]."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  frozen_batch_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    bn_train = train and not self.frozen_batch_norm
    kaiming = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    x = layers.conv(self.width, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False,
                    kernel_init=kaiming, name="conv1", **kw)(images.astype(self.dtype))
    x = nn.relu(layers.batch_norm(bn_train, name="bn1", **kw)(x))
    x = layers.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = Bottleneck(self.width * 2**stage, strides, name=f"layer{stage + 1}_{block}",
                       **kw)(x, bn_train)
    return x
