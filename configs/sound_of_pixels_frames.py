"""Frame pre-training for Sound-of-Pixels: its ResNet-18 trunk classifies SynthMUSIC frames.

  python main.py --config=configs/sound_of_pixels_frames.py:cpu \
      --workdir=runs/sound_of_pixels_frames_cpu
  python main.py --config=configs/sound_of_pixels.py:cpu,frames=pretrained --workdir=runs/sop_cpu

The original Sound-of-Pixels starts its frame network from an ImageNet ResNet-18; that cannot be
downloaded here (pass one as --config.model.visual.pretrained_path=resnet18.npz to either
phase), so this stage gives the trunk something meaningful to start from instead: a
FrameClassifier (tribert_jax/models/sound_of_pixels.py: the same dilated ResNet-18 trunk, spatial
mean, linear head) trained on every frame of every clip with the clip's instrument labels
(multi-label sigmoid BCE; tribert_jax/tasks/frame_classification.py). The best checkpoint by
validation top-1 accuracy (mean frame logits per video) is what `frames=pretrained` loads into
Sound-of-Pixels (config.init.parts.frames: resnet/* -> video_network/resnet/*, batch statistics
too). Data and trunk sizes are those of configs/sound_of_pixels.py at the same size, so the
shapes match. Adam 1e-3 with warm-up and cosine decay (as the pose pre-training).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import sound_of_pixels
from configs.parts import train as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Frame pre-training config; arg = size in {paper (default), cpu, tiny}."""
  size = common.parse_size(arg)
  config = sound_of_pixels.get_config(size)
  config.phase = "sound_of_pixels_frames"
  config.model.name = "frame_classifier"  # trunk keys of config.model.visual; num_classes
  del config.init.parts["frames"]  # this phase writes the frames part, it does not read it
  del config["frames"]

  train_config.use_frame_pretraining(config)

  if size == "cpu":
    # 3000 updates, ~3.5 min on 2 cores (~20 updates/s): validation top-1 0.54 / 0.65 / 0.76 /
    # 0.80 at 500 / 1000 / 1500 / 3000 (2026-12-06; 200 updates gave 0.24, 600 gave 0.53).
    config.optim.warmup_steps = 10
    config.num_train_steps = 3000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
  elif size == "tiny":
    train_config.shrink_for_tests(config)
  return config
