"""Audio encoder: a VGG-style CNN on the log warped mixture spectrogram -> one global feature.

It runs once per mixture (every video of a mixture hears the same mixture); the authors' release
ran it once per video on the same input, which is N times the work for the same result.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers

Dtype = Any


class AudioEncoder(nn.Module):
  """log spectrogram [B, F, T] -> audio feature [B, width].

  "vggish" (paper): VGGish conv stages with 2x2 max-pools, global average pool, VGGish FC stack,
  Linear to width. "vgg7" (release): 7 x (3x3 conv, ReLU, 2x2 max-pool), flatten, Linear to width.
  """
  config: ml_collections.ConfigDict  # config.model
  width: int = 512  # audio stream width

  @nn.compact
  def __call__(self, log_spectrogram: jax.Array, train: bool) -> jax.Array:
    cfg = self.config.audio
    kw = dict(dtype=layers.to_dtype(self.config.dtype),
              param_dtype=layers.to_dtype(self.config.param_dtype))
    x = log_spectrogram[..., None].astype(kw["dtype"])  # [B, F, T, 1]
    if cfg.encoder == "vggish":
      for stage, channels in enumerate(cfg.vggish_channels):
        for i, features in enumerate(channels):
          x = nn.relu(layers.conv(features, (3, 3), name=f"conv{stage}_{i}", **kw)(x))
        x = layers.max_pool(x, (2, 2), strides=(2, 2))
      # 256x256 input leaves a 16x16 map (VGGish's 96x64 patch left 6x4 to flatten).
      x = jnp.mean(x, axis=(1, 2))  # [B, C]
      for i, features in enumerate(cfg.vggish_fc):
        x = nn.relu(layers.dense(features, name=f"fc{i}", **kw)(x))
    elif cfg.encoder == "vgg7":
      for stage, features in enumerate(cfg.vgg7_channels):
        x = nn.relu(layers.conv(features, (3, 3), name=f"conv{stage}", **kw)(x))
        x = layers.max_pool(x, (2, 2), strides=(2, 2))
      x = x.reshape(x.shape[0], -1)  # [B, 2 * 2 * C] at 256x256 input
    else:
      raise ValueError(f"config.model.audio.encoder: unknown {cfg.encoder!r}")
    return layers.dense(self.width, name="projection", **kw)(x)
