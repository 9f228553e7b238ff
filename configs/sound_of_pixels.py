"""Sound-of-Pixels baseline (Zhao et al., ECCV 2018) trained like TriBERT's pre-training phase.

  python main.py --config=configs/sound_of_pixels.py:cpu --workdir=runs/sop_cpu
  python -m benchmarks.quality --size tiny                                        # comparison

Data, optimiser, schedule, steps and evaluation are those of configs/pretrain.py at the same
size (the equal training budget of the comparison); only config.model differs. The loss is the
separation term alone (weighted per-pixel BCE on binary masks): the model has no classifier.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain
from configs.parts import model as model_parts


def get_model_config(size: str = "paper") -> ml_collections.ConfigDict:
  """config.model of Sound-of-Pixels at SIZE in {paper, cpu, tiny}."""
  if size not in common.SIZES:
    raise ValueError(f"configs/sound_of_pixels.py: size must be one of {common.SIZES}, "
                     f"got {size!r}")
  c = ml_collections.ConfigDict()
  c.name = "sound_of_pixels"  # which model class the trainer builds
  c.size = size
  c.num_classes = 21  # linked to data.num_classes; no classifier reads it
  c.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
  c.param_dtype = "float32"
  c.sharding_rules = model_parts.DEFAULT_SHARDING_RULES
  c.log_eps = 1e-10  # the U-Net reads log(mix_warped + log_eps), like TriBERT
  c.num_channels = 32  # K: visual vector / audio channels (the authors' release: 32)

  # Input sizes (the batch contract's; pose keys kept so TriBERT's example_inputs works too).
  c.input = ml_collections.ConfigDict()
  c.input.num_mix = 2
  c.input.num_frames = 3
  c.input.image_size = 224
  c.input.pose_window = 256
  c.input.num_persons = 2
  c.input.num_joints = 68
  c.input.spectrogram_size = 256

  v = c.visual = ml_collections.ConfigDict()
  v.resnet_stage_sizes = (2, 2, 2, 2)  # ResNet-18 basic blocks per stage
  v.resnet_width = 64  # stage widths 64, 128, 256, 512

  u = c.unet = ml_collections.ConfigDict()
  u.depth = 7  # 7 stride-2 down-convolutions, 7 up levels (256 -> 2 -> 256)
  u.base_channels = 64  # doubles per level up to max_channels (64 ... 512)
  u.max_channels = 512

  c.loss_weights = ml_collections.ConfigDict()
  c.loss_weights.separation = 1.0  # the only term (weighted BCE on binary masks)

  if size == "cpu":
    c.num_channels = 16
    v.resnet_stage_sizes = (1, 1, 1, 1)
    v.resnet_width = 16
    u.base_channels = 16
    u.max_channels = 128
  elif size == "tiny":
    c.num_channels = 4
    v.resnet_stage_sizes = (1, 1, 1, 1)
    v.resnet_width = 4
    u.depth = 3
    u.base_channels = 4
    u.max_channels = 8
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Sound-of-Pixels config; arg = size in {paper (default), cpu, tiny}."""
  size = common.parse_size(arg)
  config = pretrain.get_config(size)
  config.phase = "sound_of_pixels"
  config.model = get_model_config(size)
  pretrain.link_model_to_data(config)
  # Per-module learning rates name TriBERT's modules; give Sound-of-Pixels' separation modules
  # (the audio U-Net and the synthesizer) the factor TriBERT's separation network gets, so the
  # two models' separation networks train at the same rate.
  factor = config.optim.lr_multipliers.get("separation_net")
  config.optim.lr_multipliers = ml_collections.ConfigDict()
  if factor is not None:
    config.optim.lr_multipliers.audio_network = factor
    config.optim.lr_multipliers.synthesizer = factor
  return config
