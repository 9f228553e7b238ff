"""ST-GCN pose classifier pre-training on the dataset's instrument labels.

  python main.py --config=configs/pose_pretrain.py:cpu --workdir=runs/pose_cpu
  python main.py --config=configs/pretrain.py:cpu --workdir=runs/pretrain_cpu \
      --config.init.parts.pose.checkpoint=runs/pose_cpu

The paper and the authors' release both feed TriBERT features of an ST-GCN trained beforehand;
this phase trains that ST-GCN (tribert_jax.models.stgcn.PoseClassifier: ST-GCN, mean over
time, joints and persons, linear classifier) with a multi-label BCE on each video's labels. Its
best-accuracy checkpoint initialises TriBERT's pose encoder (stgcn/* -> pose_encoder/stgcn/*,
config.init.parts.pose; configs/pretrain.py `recipe=staged` chains it). Same model/data keys
as pretrain.py so the ST-GCN shapes match.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain
from configs.parts import train as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Pose pre-training config; arg = size in {paper (default), cpu, tiny}."""
  config = pretrain.get_config(arg)
  pretrain.refuse_recipe(config, "configs/pose_pretrain.py")
  size = config.size
  config.phase = "pose_pretrain"
  # ST-GCN's recipe uses SGD with momentum; Adam at 1e-3 converges without tuning here.
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.decay = "cosine"
  config.optim.warmup_steps = 100
  # pretrain's per-module learning rates name TriBERT modules, which the pose classifier lacks.
  config.optim.lr_multipliers = ml_collections.ConfigDict()
  config.num_train_steps = 20_000
  config.eval_every_steps = 2_000
  config.eval.ideal_mask = False

  if size == "cpu":
    config.optim.warmup_steps = 10
    config.num_train_steps = 200
    config.log_every_steps = 20
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 100
  elif size == "tiny":
    train_config.shrink_for_tests(config)
  return config
