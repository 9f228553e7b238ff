"""TriBERT fine-tuning on MUSIC (11 instruments), initialised from a pre-training run.

  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu
  python main.py --config=configs/finetune.py:cpu --workdir=runs/finetune_cpu
  # another pretrain workdir: --config.init.checkpoint=/tmp/run

Built on configs/pretrain.py (same model, data and loop keys). Paper: new classification
layers, learning rate 1e-7, everything else unchanged. Every parameter is copied from the
pre-training checkpoint (its best-validation-SDR save) except the layers whose outputs are the
classes (21 -> 11): the visual decoupled-attention detectors and the WSDDN / audio
classification layers, which start from a fresh initialisation.
On SynthMUSIC the MUSIC classes are a subset view of the pre-training dataset (clips whose
labels are all MUSIC instruments), written next to it on first use.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs.parts import train as train_config
from data_pipeline.layout.schema import MUSIC_CLASSES

# Target parameter paths whose shapes depend on the number of classes (regexes).
CLASS_LAYER_PATTERNS = (r"/expansive_conv/", r"/discriminative_conv/",
                        r"_head/classification/", r"_head/detection/")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Fine-tuning config; arg = SIZE[,variant=VARIANT][,recipe=RECIPE] as configs/pretrain.py."""
  config = pretrain.get_config(arg)
  size = config.size
  config.phase = "finetune"

  # ---- Data: MUSIC's 11 instruments ----
  config.data.num_classes = len(MUSIC_CLASSES)
  config.class_subset.classes = MUSIC_CLASSES
  config.class_subset.source_root = config.data.root  # the pre-training dataset
  config.class_subset.dataset_name = "music"
  config.data.root = config.data.root + "_music11"
  # A real MUSIC root: --config.class_subset.classes='()' --config.dataset=music
  #   --config.data.root=/path/to/MUSIC

  # ---- Initialisation from the pre-training run ----
  # The pretrain workdir (README commands); the staged recipe's TriBERT run for recipe=staged,
  # whose parts are already in that checkpoint.
  staged = config.recipe == "staged"
  config.init.checkpoint = f"./runs/pretrain_{'staged_' if staged else ''}{size}"
  for part in config.init.parts.values():
    part.checkpoint = ""
  config.init.which = "best"
  config.init.prefix_map = (("", ""),)
  config.init.reinit_patterns = CLASS_LAYER_PATTERNS

  # ---- Paper hyper-parameters ----
  config.optim.learning_rate = 1e-7
  # Paper: 1500 epochs; MUSIC's ~536 training videos / 12 = 45 updates per epoch.
  config.num_train_steps = 67_000

  if size == "cpu":
    config.optim.learning_rate = 1e-4
    config.optim.warmup_steps = 0
    config.optim.decay = "constant"
    config.num_train_steps = 60
    config.eval_every_steps = 60
    config.eval.quick_every_steps = 20
    config.checkpoint_every_steps = 30
  elif size == "tiny":
    train_config.shrink_for_tests(config)
  return config
