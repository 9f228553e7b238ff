"""The staged recipe's first stage: TriBERT's visual trunk and U-Net trained for separation alone.

What the authors' release loads before TriBERT training (`weights_frame`: the ResNet-50 frame
network; `weights_sound`: the attention U-Net) were trained beforehand for separation
(Sound-of-Pixels style: a frame network conditions a sound network). The release does not ship
that stage's code, so this is the project's choice, stated in configs/separation_pretrain.py:

  frames [B,N,T,S,S,3] -> visual_encoder (TriBERT's VisualSegmentationNetwork: ResNet trunk,
    3x3 feature conv, decoupled spatial attention, K object tokens + per-frame class scores)
  -> mean over frames and objects -> dense -> the fused-feature width, with TriBERT's fused
     activation (the "conditioning" layer: stage-only, not carried into TriBERT)
  -> separation_net (TriBERT's AttentionUNet, same config.model.unet) -> mask logits [B,N,F,T].

The parameter names `visual_encoder/...` and `separation_net/...` are TriBERT's, so
config.init.parts.separation of configs/pretrain.py copies them one to one
(tribert_jax/initialization.py). Outputs: mask_logits and visual_class_scores (the trunk's
decoupled-attention class scores, trained with the same BCE as in TriBERT), so the loss is
TriBERT's separation + visual class-score terms.
"""

from __future__ import annotations

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from tribert_jax.models import layers
from tribert_jax.models.tribert import stream_names
from tribert_jax.models.unet import AttentionUNet
from tribert_jax.models.visual import VisualSegmentationNetwork


def fused_width(config: ml_collections.ConfigDict) -> int:
  """Width of TriBERT's fused feature under config.model (what its U-Net is built for)."""
  heads = config.heads
  if heads.fusion == "concat":
    return len(stream_names(config)) * heads.pooled_width
  return heads.pooled_width


class SeparationPretrainNet(nn.Module):
  """Visual trunk + U-Net of TriBERT conditioned on the trunk alone (module docstring)."""
  config: ml_collections.ConfigDict  # config.model (configs/parts/model.py keys)

  @nn.compact
  def __call__(self, inputs: Mapping[str, jax.Array], train: bool = False
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    cfg = self.config
    kw = dict(dtype=layers.to_dtype(cfg.dtype), param_dtype=layers.to_dtype(cfg.param_dtype))
    frames = inputs["frames"]
    b, n = frames.shape[:2]
    visual = VisualSegmentationNetwork(cfg, name="visual_encoder")(frames, train)
    pooled = jnp.mean(visual["tokens"], axis=(2, 3))  # [B, N, D]: frames and objects
    conditioning = layers.dense(fused_width(cfg), name="conditioning", **kw)(pooled)
    conditioning = layers.activation(cfg.heads.fused_activation)(conditioning)
    log_mixture = jnp.log(inputs["mix_warped"] + cfg.log_eps)
    outputs = {
        "mask_logits": AttentionUNet(cfg, name="separation_net")(log_mixture, conditioning,
                                                                 train),
        "visual_class_scores": visual["class_scores"],
    }
    intermediates = {"visual_attention_maps": visual["attention_maps"],
                     "fused": conditioning.reshape(b, n, -1).astype(jnp.float32)}
    return outputs, intermediates


class VisualClassifier(nn.Module):
  """Frame pre-training of TriBERT's visual trunk (configs/visual_pretrain.py): the whole
  VisualSegmentationNetwork ("visual_encoder", TriBERT's keys) on single frames, its decoupled
  spatial attention class scores as the frame's instrument logits: images [M,S,S,3] -> [M,C].

  It stands for the ImageNet initialisation of the release's frame network, which cannot be
  downloaded here: the separation pre-training then starts from a trunk whose features already
  tell instruments apart (config.init.parts.frames of configs/separation_pretrain.py)."""
  config: ml_collections.ConfigDict  # config.model (configs/parts/model.py keys)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    frames = images[:, None, None]  # [M, 1, 1, S, S, 3]: one video of one frame each
    visual = VisualSegmentationNetwork(self.config, name="visual_encoder")(frames, train)
    return visual["class_scores"].reshape(images.shape[0], -1).astype(jnp.float32)
