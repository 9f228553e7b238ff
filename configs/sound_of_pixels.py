"""Sound-of-Pixels baseline (Zhao et al., ECCV 2018), trained as the original
(hangzhaomit/Sound-of-Pixels) trains it.

  python main.py --config=configs/sound_of_pixels.py:cpu --workdir=runs/sop_cpu
  python -m benchmarks.quality --size tiny                                        # comparison

Config argument: SIZE[,frames=scratch|pretrained][,visual=frames|oracle][,optim=original|adam]
  frames=scratch     the ResNet-18 trunk starts from its random initialisation (default), or from
                     an ImageNet ResNet-18 .npz given as --config.model.visual.pretrained_path
  frames=pretrained  the trunk of a frame pre-training run (configs/sound_of_pixels_frames.py, a
                     ResNet-18 classifying SynthMUSIC frames by instrument) through
                     config.init.parts.frames (resnet/* -> video_network/resnet/*), by default
                     ./runs/sound_of_pixels_frames_SIZE:
    python main.py --config=configs/sound_of_pixels_frames.py:cpu \
        --workdir=runs/sound_of_pixels_frames_cpu
    python main.py --config=configs/sound_of_pixels.py:cpu,frames=pretrained --workdir=runs/sop_cpu
  visual=oracle      the visual vector is a learned linear map of each video's instrument labels
                     (no frames): shows whether the audio side can use a conditioning vector.
  optim=original     the original's SGD recipe (below; the default at paper size)
  optim=adam         Adam 1e-3, cosine decay to 0, no warm-up, no weight decay, with the original's
                     groups (the trunk at 0.1x): the default at cpu and tiny size, a labelled
                     deviation like TriBERT's cpu FiLM. 720 updates of batch 4 are ~1/1000 of the
                     original's budget (batch 80, 100 epochs of MUSIC); there its SGD recipe, from
                     the 3000-update frame trunk, ends 0.41 dB above the mixture (full val) where
                     Adam separates (README "Sound-of-Pixels at cpu size").

optim=original, the original's optimiser (main.py create_optimizer, scripts/train_MUSIC.sh):
torch SGD, momentum 0.9, weight decay 1e-4; learning rate 1e-3 for the U-Net, the synthesizer
and the visual 3x3 conv (its "fc"), 1e-4 for the ResNet trunk (the 0.1x multiplier on
video_network/resnet); every rate x0.1 after epochs 40 and 80 of its 100 (lr_steps 40 80),
here at 40 % and 80 % of the updates (decay_fractions, which follow an override of
num_train_steps). No warm-up, no clipping.
Data, batch size, steps and evaluation are those of configs/pretrain.py at the same size (the
equal training budget of the comparison; the original: batch 80 over 4 GPUs). The loss is the
separation term alone (weighted per-pixel BCE on binary masks): the model has no classifier.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import pretrain
from configs.parts import model as model_parts
from configs.parts import train as train_config

FRAMES = ("scratch", "pretrained")
VISUAL_SOURCES = ("frames", "oracle")
OPTIMIZERS = ("original", "adam")
# FrameClassifier (configs/sound_of_pixels_frames.py) parameters -> Sound-of-Pixels'.
FRAMES_PREFIX_MAP = (("resnet", "video_network/resnet"),)


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
  # "sound_of_pixels": the original's initialisation (U-Net convs N(0, 1e-3), BatchNorm scales
  # N(1, 0.02), linear N(0, 1e-4): initial masks ~0.5); "flax": LeCun normal, scales 1.
  c.init = "sound_of_pixels"
  # "frames": the video analysis network; "oracle": a learned linear map of the labels.
  c.visual_source = "frames"
  # The oracle map's initial std: its classes' vectors differ from the start, as the frame
  # network's do; at 1e-4 (the original's linear init) both videos start with the same vector
  # and the masks do not leave the mixture level (README "Sound-of-Pixels at cpu size").
  c.oracle_init_std = 1.0

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
  # ImageNet ResNet-18 as a torchvision-layout .npz (tribert_jax/models/pretrained.py; the
  # original starts from it); "" = none.
  v.pretrained_path = ""

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


def use_sound_of_pixels_optimizer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The original's optimiser (module docstring): SGD, momentum 0.9, weight decay 1e-4, lr 1e-3,
  the ResNet trunk at 0.1x, x0.1 at 40 % and 80 % of the updates."""
  optim = config.optim
  optim.name = "sgd"
  optim.learning_rate = 1e-3  # lr_sound = lr_synthesizer = 1e-3 (the visual fc too)
  optim.momentum = 0.9  # beta1
  optim.weight_decay = 1e-4
  optim.decay = "step"
  optim.decay_factor = 0.1
  optim.decay_steps = ()
  optim.decay_fractions = (0.4, 0.8)  # lr_steps 40 80 of num_epoch 100
  optim.warmup_steps = 0
  optim.grad_clip_norm = 0.0
  optim.lr_multipliers = ml_collections.ConfigDict()
  if config.model.visual_source == "frames":
    optim.lr_multipliers["video_network/resnet"] = 0.1  # lr_frame 1e-4
  return config


def use_adam(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """optim=adam (module docstring): the original's groups, Adam 1e-3 with cosine decay."""
  use_sound_of_pixels_optimizer(config)
  optim = config.optim
  optim.name = "adam"
  optim.learning_rate = 1e-3
  optim.weight_decay = 0.0
  optim.decay = "cosine"
  optim.end_lr_factor = 0.0
  optim.decay_fractions = ()
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Sound-of-Pixels config; arg = SIZE[,frames=scratch|pretrained][,visual=frames|oracle]
  [,optim=original|adam] (module docstring)."""
  args = common.parse_arg(arg, frames="scratch", visual="frames", optim="")
  if args["frames"] not in FRAMES:
    raise ValueError(f"config argument frames={args['frames']!r}: expected one of {FRAMES}")
  if args["visual"] not in VISUAL_SOURCES:
    raise ValueError(f"config argument visual={args['visual']!r}: expected one of "
                     f"{VISUAL_SOURCES}")
  if args["optim"] not in ("",) + OPTIMIZERS:
    raise ValueError(f"config argument optim={args['optim']!r}: expected one of {OPTIMIZERS}")
  if args["frames"] == "pretrained" and args["visual"] == "oracle":
    raise ValueError("config argument frames=pretrained loads a frame trunk, which "
                     "visual=oracle does not have")
  size = args["size"]
  config = pretrain.get_config(size)
  config.phase = "sound_of_pixels"
  config.model = get_model_config(size)
  config.model.visual_source = args["visual"]
  pretrain.link_model_to_data(config)
  optimizer = args["optim"] or ("original" if size == "paper" else "adam")
  (use_adam if optimizer == "adam" else use_sound_of_pixels_optimizer)(config)
  config.frames = args["frames"]
  config.init.parts.frames = train_config.init_part(*FRAMES_PREFIX_MAP)
  if args["frames"] == "pretrained":
    config.init.parts.frames.checkpoint = f"./runs/sound_of_pixels_frames_{size}"
  return config
