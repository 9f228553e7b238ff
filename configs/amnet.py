"""AMnet (Zhu & Rahtu) separation, two stages trained one after the other (model.stage):

  python main.py --config=configs/amnet_ame.py:cpu --workdir=runs/amnet_ame_cpu        # 0. AME
  python main.py --config=configs/amnet.py:cpu,stage=appearance --workdir=runs/amnet_appearance_cpu
  python main.py --config=configs/amnet.py:cpu,stage=motion --workdir=runs/amnet_motion_cpu

Stage "appearance" (supplement B.2) trains the Appearance Network, the Sound Spectrogram Network
and their linear combination with the separation loss (weighted per-pixel BCE on binary masks,
as TriBERT and Sound-of-Pixels). Stage "motion" (B.3) loads that stage (config.init.parts.
appearance, frozen) and the AME pre-training's Motion Network (config.init.parts.motion, frozen
unless model.motion_stage.freeze_motion_network=False) and trains the Sound Spectrogram
Refinement network with its Audio-Motion Transformer. Pass other workdirs with
--config.init.parts.appearance.checkpoint=... and --config.init.parts.motion.checkpoint=....

Data, evaluation and checkpoints are those of configs/pretrain.py at the same size, except the
frame count (the Motion Network reads T frames per video: paper T = 48, the appearance network
the centre one) and the batch (paper 10). Training (supplement C): SGD, momentum 0.9, weight
decay 1e-4, batch 10, learning rate 1e-4 for the (ImageNet-pretrained) Appearance Network and
1e-3 for the rest (the paper preset); the cpu and tiny presets use Adam 3e-4, cosine.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain
from configs.parts import model as model_parts

# config.model.stage values (tribert_jax/models/amnet.py STAGES).
STAGES = ("appearance", "motion")
# Frames per video (T) at each size: paper 48 (6 s at 8 fps, the audio crop's length).
NUM_FRAMES = {"paper": 48, "cpu": 16, "tiny": 8}


def get_model_config(size: str = "paper", stage: str = "appearance") -> ml_collections.ConfigDict:
  """config.model of AMnet (and of its AME networks) at SIZE in {paper, cpu, tiny}."""
  if size not in common.SIZES:
    raise ValueError(f"configs/amnet.py: size must be one of {common.SIZES}, got {size!r}")
  if stage not in STAGES:
    raise ValueError(f"config argument stage={stage!r}: expected one of {STAGES}")
  c = ml_collections.ConfigDict()
  c.name = "amnet"  # which model class the trainer builds (configs/amnet_ame.py: "amnet_ame")
  c.size = size
  c.stage = stage  # "appearance" (B.2) or "motion" (B.3, appearance stage frozen)
  c.num_classes = 21  # C_A = C_S = the dataset's class count (linked to data.num_classes)
  c.dtype = "float32"  # compute dtype; "bfloat16" on accelerators
  c.param_dtype = "float32"
  c.sharding_rules = model_parts.DEFAULT_SHARDING_RULES
  c.log_eps = 1e-10  # the spectrogram networks read log(magnitude + log_eps)

  # Input sizes (the batch contract's; pose keys kept so the shared example inputs build).
  c.input = ml_collections.ConfigDict()
  c.input.num_mix = 2
  c.input.num_frames = NUM_FRAMES[size]  # T (linked to data.num_frames)
  c.input.image_size = 224
  c.input.pose_window = 256
  c.input.num_persons = 2
  c.input.num_joints = 68
  c.input.spectrogram_size = 256
  c.input.audio_length = 65535  # linked to data.audio_length
  c.input.sample_rate = 11025  # linked to data.sample_rate
  c.input.fps = 8.0  # linked to data.fps

  # Motion Network E_M: 3D ResNet-18; spatial stride 16 (stem 2 x stages 2, 2, 2), temporal
  # stride 4 (stages 2 and 3): 48 x 224 x 224 -> 512 x 12 x 14 x 14.
  m = c.motion = ml_collections.ConfigDict()
  m.stem_kernel = (3, 7, 7)  # (time, height, width); silent in the supplement (R3D-18's)
  m.stem_strides = (1, 2, 2)
  m.stage_strides = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 2, 2))
  m.stage_sizes = (2, 2, 2, 2)
  m.width = 64  # stage widths 64 ... 512 = C_M
  m.embedding_kernel = (3, 3, 3)  # the "additional 3D convolution" to one channel (size silent)

  # Sound Network E_S: 1D ResNet-18 on the waveform, fractional pooling to T', 1D conv.
  s = c.sound = ml_collections.ConfigDict()
  s.stem_kernel = 7  # silent: a 7-tap stem as in ResNet
  s.stem_stride = 4  # silent: stem stride 4, max-pool 4, stages 1, 2, 2, 2 (total 128)
  s.pool_stride = 4
  s.stage_strides = (1, 2, 2, 2)
  s.stage_sizes = (2, 2, 2, 2)
  s.width = 64

  # Appearance Network: dilated ResNet-18 (stride 16), 1x1 conv to C_A, spatial mean -> f_A.
  a = c.appearance = ml_collections.ConfigDict()
  a.resnet_stage_sizes = (2, 2, 2, 2)
  a.resnet_width = 64
  # Activation on f_A before the linear combination: silent; "sigmoid" as Sound-of-Pixels'
  # visual feature, or "none".
  a.activation = "sigmoid"

  # Sound Spectrogram Network: MobileNetV2 encoder (expansion t, channels c, repeats n, stride s
  # per row: MobileNetV2's table, total stride 32) + an upsampling decoder with skips to C_S.
  sp = c.spectrogram = ml_collections.ConfigDict()
  sp.stem_channels = 32
  sp.blocks = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))

  # Sound Spectrogram Refinement network: encoder of 4x4 stride-2 convs to 512 x 16 x 16, the
  # Audio-Motion Transformer (8 heads; layers and MLP width silent), decoder with skips.
  r = c.refinement = ml_collections.ConfigDict()
  r.channels = (64, 128, 256, 512)  # 256 / 2**4 = 16
  r.num_heads = 8
  r.num_layers = 1
  r.mlp_dim = 1024

  ms = c.motion_stage = ml_collections.ConfigDict()
  # Residual fusion (main paper's eq. 4, not in our reference): "relocate" = the SSR of source
  # n's output with source m's motion finds what belongs to m, moved from n to m; "self" = the
  # SSR of each source with its own motion, added to it.
  ms.fusion = "relocate"
  ms.freeze_motion_network = True  # silent: the AME Motion Network is kept fixed

  # AME objective (configs/amnet_ame.py; tribert_jax/losses.py audio_motion_embedding_loss).
  e = c.ame = ml_collections.ConfigDict()
  e.temperature = 0.1  # softmax temperature over Pearson correlations (silent)
  e.min_shift = 1  # circular shifts k in [min_shift, T' - min_shift] of a clip are negatives

  c.loss_weights = ml_collections.ConfigDict()
  c.loss_weights.separation = 1.0

  if size == "cpu":
    m.stage_strides = ((1, 1, 1), (2, 2, 2), (1, 2, 2), (1, 2, 2))  # T' = 16 / 2 = 8
    m.stage_sizes = s.stage_sizes = a.resnet_stage_sizes = (1, 1, 1, 1)
    m.width = s.width = a.resnet_width = 16
    sp.stem_channels = 16
    sp.blocks = ((1, 8, 1, 1), (4, 16, 1, 2), (4, 24, 1, 2), (4, 32, 1, 2), (4, 64, 1, 2))
    r.channels = (16, 32, 64, 128)
    r.mlp_dim = 256
  elif size == "tiny":
    m.stage_strides = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2))  # T' = T = 8
    m.stage_sizes = s.stage_sizes = a.resnet_stage_sizes = (1, 1, 1, 1)
    m.width = s.width = a.resnet_width = 4
    sp.stem_channels = 4
    sp.blocks = ((1, 4, 1, 1), (2, 8, 1, 2), (2, 8, 1, 2))
    r.channels = (4, 8, 8, 8)
    r.num_heads = 2
    r.mlp_dim = 16
  return c


def link_model_to_data(config: ml_collections.ConfigDict) -> None:
  """Model input sizes as references to the data keys (pretrain's, plus the audio keys)."""
  pretrain.link_model_to_data(config)
  for key in ("audio_length", "sample_rate", "fps"):
    config.model.input[key] = config.data.get_ref(key)


def base_config(size: str, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """pretrain's data / loop keys at SIZE with an AMnet model and T frames per video."""
  config = pretrain.get_config(size)
  config.model = model
  config.data.num_frames = NUM_FRAMES[size]
  # The AMnet phases load their own parts (below), not TriBERT's staged-recipe ones.
  config.init.parts = ml_collections.ConfigDict()
  config.optim.lr_multipliers = ml_collections.ConfigDict()
  link_model_to_data(config)
  if size == "paper":
    config.data.batch_size = 10  # supplement C
    config.data.eval_batch_size = 10
    # Supplement C: SGD, momentum 0.9, weight decay 1e-4, learning rate 1e-3 (1e-4 for the
    # ImageNet-pretrained trunk of the Appearance Network, below); no schedule is given.
    config.optim.name = "sgd"
    config.optim.momentum = 0.9
    config.optim.weight_decay = 1e-4
    config.optim.learning_rate = 1e-3
    config.optim.decay = "constant"
    config.optim.warmup_steps = 0
  else:
    config.optim.name = "adam"
    config.optim.learning_rate = 3e-4
    config.optim.decay = "cosine"
    config.optim.end_lr_factor = 0.05
    config.optim.warmup_steps = 0 if size == "tiny" else 20
    config.optim.grad_clip_norm = 1.0
    config.optim.lr_multipliers = ml_collections.ConfigDict()
  if size == "cpu":
    # Train step on 2 idle cores (benchmarks/README.md): appearance 1.6 s, motion 2.6 s; 400
    # updates ~12 / ~20 min with the input pipeline. The quality benchmark gives each stage its
    # own budget instead (README "AMnet at cpu size").
    config.num_train_steps = 400
    config.eval_every_steps = 400
    config.eval.quick_every_steps = 100
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """AMnet separation config; arg = SIZE[,stage=appearance|motion] (module docstring)."""
  args = common.parse_arg(arg, stage="appearance")
  size, stage = args["size"], args["stage"]
  config = base_config(size, get_model_config(size, stage))
  config.phase = "amnet"
  if size == "paper" and stage == "appearance":
    config.optim.lr_multipliers["appearance_network/resnet"] = 0.1  # 1e-4 for the trunk
  if stage == "motion":
    parts = config.init.parts
    parts.appearance = ml_collections.ConfigDict()
    parts.appearance.checkpoint = f"./runs/amnet_appearance_{size}"
    parts.appearance.which = "best"
    parts.appearance.prefix_map = tuple((name, name) for name in (
        "appearance_network", "spectrogram_network", "synthesizer"))
    parts.motion = ml_collections.ConfigDict()
    parts.motion.checkpoint = f"./runs/amnet_ame_{size}"
    parts.motion.which = "best"
    parts.motion.prefix_map = (("motion_network", "motion_network"),)
  return config
