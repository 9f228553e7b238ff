"""TriBERT pre-training on MUSIC21 (21 classes): separation + visual/pose/audio classification.

  python main.py --config=configs/pretrain.py --workdir=runs/pretrain          # paper sizes
  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu  # 2-core CPU run
  python main.py --config=configs/pretrain.py:tiny --workdir=/tmp/t            # smoke test

Defaults are the paper's: Adam, learning rate 1e-5, batch 12, N = 2 videos, 3 frames, every part
trained from scratch end to end (`recipe=scratch`).

The staged recipe (`recipe=staged`) is how the authors' release trains instead (../shared/DESIGN.md
and README "Staged recipe"): pretrained parts, then TriBERT, then fine-tuning:

  1. main.py --config=configs/pose_pretrain.py:SIZE       --workdir=runs/pose_pretrain_SIZE
     (the ST-GCN on the dataset's labels; the paper and release freeze it afterwards)
  2. main.py --config=configs/separation_pretrain.py:SIZE --workdir=runs/separation_pretrain_SIZE
     (visual trunk + U-Net for separation: what the release's weights_frame / weights_sound are;
     `SIZE,frames=pretrained` starts its trunk from stage 0, main.py
     --config=configs/visual_pretrain.py:SIZE --workdir=runs/visual_pretrain_SIZE, the trunk
     classifying frames: the stand-in for the ImageNet start of the release's frame network)
  3. main.py --config=configs/pretrain.py:SIZE,recipe=staged --workdir=runs/pretrain_staged_SIZE
     (TriBERT's visual trunk and U-Net from 2 through config.init.parts; the pose encoder reads
     features of 1's frozen ST-GCN, computed once and cached; BertAdam)
  4. main.py --config=configs/finetune.py:SIZE,recipe=staged  (from 3's best checkpoint)

Steps 1 and 2 are independent; pass other workdirs with --config.pose_features.checkpoint=... and
--config.init.parts.separation.checkpoint=....
Dataset: SynthMUSIC generated at config.data.root on first use (config.dataset = "synthmusic");
for the real MUSIC21 preprocessed by `python -m data_pipeline.ingest` pass
  --config.dataset=music21 --config.data.root=/path/to/MUSIC21
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs.parts import data as data_config
from configs.parts import model as model_config
from configs.parts import train as train_config
from data_pipeline.layout.schema import MUSIC21_CLASSES

RECIPES = ("scratch", "staged")
# SynthMUSIC generator size used for each config size (data_pipeline.synthmusic.generate).
SYNTHMUSIC_SIZES = {"paper": "large", "cpu": "default", "tiny": "tiny"}


def link_model_to_data(config: ml_collections.ConfigDict) -> None:
  """Makes model input sizes references to the data keys, so one override changes both."""
  data, model = config.data, config.model
  model.num_classes = data.get_ref("num_classes")
  model.input.num_mix = data.get_ref("num_mix")
  model.input.num_frames = data.get_ref("num_frames")
  model.input.image_size = data.get_ref("image_size")
  model.input.pose_window = data.get_ref("pose_window")
  model.input.num_persons = data.get_ref("max_persons")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Pre-training config; arg = SIZE[,variant=VARIANT][,recipe=RECIPE]: size in {paper
  (default), cpu, tiny}, model variant in {paper (default), release} (configs/parts/model.py),
  recipe in {scratch (default), staged} (the module docstring)."""
  args = common.parse_arg(arg, variant="paper", recipe="scratch")
  if args["recipe"] not in RECIPES:
    raise ValueError(f"config argument recipe={args['recipe']!r}: expected one of {RECIPES}")
  size = args["size"]
  config = ml_collections.ConfigDict()
  config.phase = "pretrain"
  config.size = size
  config.model = model_config.get_model_config(size, args["variant"])
  config.data = data_config.get_data_config(size)
  train_config.add_train_config(config)

  # ---- Dataset ----
  # "synthmusic": generated at data.root if that folder does not exist (main.py does it);
  # "music21" / "music": a real dataset root written by `python -m data_pipeline.ingest`.
  config.dataset = "synthmusic"
  config.synthmusic_size = SYNTHMUSIC_SIZES[size]  # generator size (tiny, default, large)
  config.synthmusic_seed = 0
  config.data.root = f"./data/synthmusic_{SYNTHMUSIC_SIZES[size]}"
  config.data.num_classes = len(MUSIC21_CLASSES)
  config.data.eval_split = "val"  # validation during training; --mode=evaluate can pass test
  # Train on a subset of the dataset's classes: data.root is then a view of source_root holding
  # only clips whose labels are all in `classes` (written on first use; fine-tuning on MUSIC's
  # 11 instruments uses it). () = the dataset as it is.
  config.class_subset = ml_collections.ConfigDict()
  config.class_subset.classes = ()
  config.class_subset.source_root = ""
  config.class_subset.dataset_name = "music"  # labels.json "dataset" of the view
  link_model_to_data(config)

  # ---- Paper hyper-parameters ----
  config.data.batch_size = 12
  config.data.num_mix = 2
  config.data.num_frames = 3
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-5
  # Paper: 6k epochs; one epoch of the authors' split is 840 clips / 12 = 70 updates.
  config.num_train_steps = 420_000

  if size == "cpu":
    # A 2-core laptop run (14.7 minutes in all on 2026-12-07 with the convolution and memory
    # changes of #17, 13.5 without the memory flags, 16-21 before them, 47 on the VM's slow
    # 2026-12-02; val SDR 3.8-4.6 dB vs 0.2 for the mixture, README "Results"). The
    # architecture is the paper's with FiLM at every decoder level, a labelled cpu-only
    # deviation (see the cpu model preset): the paper's bottleneck fusion, even trained the
    # staged way, separates only barely at this size (+0.9 dB val at equal wall-clock, README
    # "The staged recipe at cpu size"). The model's and pipeline's cpu presets, then what it takes to separate in that
    # time. 1e-3 left every classification loss at its prior after 100 steps; 3e-4 with warmup
    # learns. The separation loss starts falling after ~400 steps.
    config.data.batch_size = 4
    config.optim.learning_rate = 3e-4
    config.optim.warmup_steps = 30
    config.optim.decay = "cosine"
    config.optim.end_lr_factor = 0.05
    config.optim.grad_clip_norm = 1.0
    # The U-Net (with FiLM conditioning, see the cpu model preset) learns to use the fused
    # feature at 3e-3; the transformer streams do not train at that rate.
    config.optim.lr_multipliers.separation_net = 10.0
    config.num_train_steps = 720
    config.log_every_steps = 20
    config.eval_every_steps = 720  # once, at the end: separating and scoring 120 mixtures, ~32 s
    # SDR on 32 fixed val mixtures, ~5 s each time on the 2-core VM (~13 s before the scoring
    # pool's BLAS fix): six points over the run.
    config.eval.quick_every_steps = 120
    config.checkpoint_every_steps = 100
  elif size == "tiny":
    config.data.batch_size = 2
    config.data.eval_batch_size = 2
    train_config.shrink_for_tests(config)
  config.recipe = args["recipe"]
  if args["recipe"] == "staged":
    use_staged_recipe(config)
  return config


def refuse_recipe(config: ml_collections.ConfigDict, name: str) -> None:
  """A stage of the recipe is trained one way: `recipe=` belongs to pretrain / finetune."""
  if config.recipe != "scratch":
    raise ValueError(f"{name}: config argument recipe={config.recipe!r} applies to "
                     "configs/pretrain.py and configs/finetune.py only")


def use_staged_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """TriBERT training as the release does it (module docstring): the visual trunk and U-Net from
  the separation pre-training, cached features of the pose pre-training's frozen ST-GCN,
  BertAdam, and the paper's bottleneck-only conditioning at every size (no FiLM, no separate
  U-Net learning rate)."""
  size = config.size
  config.init.parts.separation.checkpoint = f"./runs/separation_pretrain_{size}"
  # The ST-GCN of the pose pre-training, frozen: its features are computed once per clip and
  # cached (tribert_jax/pose_feature_cache.py), the step reads them as the release does.
  config.pose_features.checkpoint = f"./runs/pose_pretrain_{size}"
  config.model.pose.stgcn_input = "features"
  config.model.pose.freeze_stgcn = True
  config.model.unet.conditioning = "bottleneck"
  config.optim.lr_multipliers = ml_collections.ConfigDict()
  learning_rate = config.optim.learning_rate  # paper 1e-5; the cpu preset's 3e-4 for its short run
  train_config.use_bert_adam(config)
  config.optim.learning_rate = learning_rate
  return config
