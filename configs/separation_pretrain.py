"""Stage 1 of the staged recipe: TriBERT's visual trunk and U-Net pre-trained for separation.

  python main.py --config=configs/separation_pretrain.py:cpu --workdir=runs/separation_pretrain_cpu

The authors' release does not train TriBERT from scratch: it loads `weights_frame` (the frame
network, ResNet-50) and `weights_sound` (the attention U-Net) trained beforehand for separation,
but ships neither those weights nor the code that made them. What this stage trains instead
(tribert_jax/models/separation_pretrain.py): TriBERT's own visual trunk (ResNet, 3x3 feature
conv, decoupled attention) conditions TriBERT's own U-Net through one dense layer to the fused
feature's width, Sound-of-Pixels style (the frame network is the only conditioning, as in the
Sound-of-Pixels models such checkpoints usually come from), trained with TriBERT's separation
loss plus the trunk's class-score BCE on the labels (which trains the decoupled-attention
detectors the way TriBERT will use them). Same model keys, data and sizes as configs/pretrain.py
(and `variant=release` likewise), so the parameters copy one to one into TriBERT through
config.init.parts.separation (configs/pretrain.py `recipe=staged`).
"""

from __future__ import annotations

import ml_collections

from configs import pretrain


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Separation pre-training config; arg = SIZE[,variant=VARIANT] as for configs/pretrain.py."""
  config = pretrain.get_config(arg)
  pretrain.refuse_recipe(config, "configs/separation_pretrain.py")
  config.phase = "separation_pretrain"
  config.model.name = "separation_pretrain"
  # Only these two terms have outputs in this model; the rest of TriBERT's weights stay unused.
  config.model.loss_weights.separation = 1.0
  config.model.loss_weights.visual_class_scores = 1.0
  # The paper's architecture: the fused feature enters at the bottleneck only (no FiLM), also
  # at cpu size; this stage exists so that the U-Net learns to read that feature before TriBERT.
  config.model.unet.conditioning = "bottleneck"
  # Per-module learning rates name TriBERT's top-level modules; this model has the U-Net under
  # the same name, the rest trains at the base rate.
  return config
