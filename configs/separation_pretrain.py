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

  frames=scratch     the visual trunk starts from its random initialisation (default), or from
                     an ImageNet ResNet-50 .npz given as --config.model.visual.pretrained_path
                     (the release's frame network started from ImageNet weights);
  frames=pretrained  the trunk of a visual pre-training run (configs/visual_pretrain.py, stage 0
                     of the recipe: the same trunk classifying frames), by default
                     ./runs/visual_pretrain_SIZE, through config.init.parts.frames
                     (visual_encoder/* -> visual_encoder/*).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain
from configs.parts import train as train_config

FRAMES = ("scratch", "pretrained")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Separation pre-training config; arg = SIZE[,variant=VARIANT][,frames=scratch|pretrained]
  (variant as for configs/pretrain.py, frames in the module docstring)."""
  args = common.parse_arg(arg, variant="paper", recipe="scratch", frames="scratch")
  if args["frames"] not in FRAMES:
    raise ValueError(f"config argument frames={args['frames']!r}: expected one of {FRAMES}")
  config = pretrain.get_config(
      f"{args['size']},variant={args['variant']},recipe={args['recipe']}")
  pretrain.refuse_recipe(config, "configs/separation_pretrain.py")
  config.phase = "separation_pretrain"
  config.model.name = "separation_pretrain"
  # Only these two terms have outputs in this model; the rest of TriBERT's weights stay unused.
  config.model.loss_weights.separation = 1.0
  config.model.loss_weights.visual_class_scores = 1.0
  # The paper's architecture: the fused feature enters at the bottleneck only (no FiLM), also
  # at cpu size; this stage exists so that the U-Net learns to read that feature before TriBERT.
  config.model.unet.conditioning = "bottleneck"
  config.frames = args["frames"]
  config.init.parts.frames = train_config.init_part(("visual_encoder", "visual_encoder"))
  if args["frames"] == "pretrained":
    config.init.parts.frames.checkpoint = f"./runs/visual_pretrain_{args['size']}"
  # Per-module learning rates name TriBERT's top-level modules; this model has the U-Net under
  # the same name, the rest trains at the base rate.
  return config
