"""Stage 0 of the staged recipe: TriBERT's visual trunk pre-trained to classify frames.

  python main.py --config=configs/visual_pretrain.py:cpu --workdir=runs/visual_pretrain_cpu
  python main.py --config=configs/separation_pretrain.py:cpu,frames=pretrained \
      --workdir=runs/separation_pretrain_cpu

The release's frame network (`weights_frame`, a ResNet-50) was trained for separation starting,
as in Sound-of-Pixels, from ImageNet weights; those cannot be downloaded here (an ImageNet
ResNet-50 .npz can be given as --config.model.visual.pretrained_path to
configs/separation_pretrain.py instead). This stage stands for them: TriBERT's whole visual
trunk (ResNet, 3x3 feature conv, decoupled spatial attention; tribert_jax/models/
separation_pretrain.py VisualClassifier, TriBERT's parameter names) classifies every frame of
every clip with the clip's instrument labels, its decoupled-attention class scores as logits
(multi-label sigmoid BCE; tribert_jax/tasks/frame_classification.py, as Sound-of-Pixels' frame
pre-training). The best checkpoint by validation top-1 accuracy (mean frame logits per video) is
what `frames=pretrained` of configs/separation_pretrain.py loads (config.init.parts.frames:
visual_encoder/* -> visual_encoder/*, batch statistics too). Why a stage at all: the separation
pre-training from a random trunk did not start within 1000 updates at cpu size (README,
"Staged recipe"); Sound-of-Pixels behaved the same way and separated once its frame trunk was
pre-trained. Model and data sizes are those of configs/pretrain.py at the same size and
variant, so the shapes match. Adam 1e-3 with warm-up and cosine decay (as the frame and pose
pre-trainings).
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs.parts import train as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Visual pre-training config; arg = SIZE[,variant=VARIANT] as for configs/pretrain.py."""
  config = pretrain.get_config(arg)
  pretrain.refuse_recipe(config, "configs/visual_pretrain.py")
  config.phase = "visual_pretrain"
  config.model.name = "visual_classifier"

  train_config.use_frame_pretraining(config)

  if config.size == "cpu":
    config.optim.warmup_steps = 10
    config.num_train_steps = 2000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
  elif config.size == "tiny":
    train_config.shrink_for_tests(config)
  return config
