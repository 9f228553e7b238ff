"""AMnet's Audio-Motion Embedding (AME) pre-training (supplement B.1): the Motion Network and the
Sound Network trained from scratch on unlabelled clips; the separation stage
(configs/amnet.py:SIZE,stage=motion) loads the Motion Network from this phase's workdir.

  python main.py --config=configs/amnet_ame.py:cpu --workdir=runs/amnet_ame_cpu

Objective (the supplement does not state it; ours, tribert_jax/losses.py
audio_motion_embedding_loss): symmetric InfoNCE over Pearson correlations between the 1 x T'
motion embedding and sound embedding of the same clip (positive) versus the other clips of the
batch and circular time shifts of the same clip (negatives). Each video of a Mix-and-Separate
batch is one clip, with its own audio (never the mixture), the central T / fps seconds of its crop.
Data, loop and optimiser keys are configs/amnet.py's at the same size.
"""

from __future__ import annotations

import ml_collections

from configs import amnet
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """AME pre-training config; arg = SIZE in {paper (default), cpu, tiny}."""
  size = common.parse_size(arg)
  model = amnet.get_model_config(size)
  model.name = "amnet_ame"  # AudioMotionEmbedding: motion_network + sound_network
  config = amnet.base_config(size, model)
  config.phase = "amnet_ame"
  if size == "cpu":
    # ~10 s per update of 8 clips on 2 cores (XLA:CPU's 3D convolutions): 150 updates, ~25 min;
    # the loss leaves chance level (log 15 for 7 shifts + 7 other clips) within ~40 updates.
    config.num_train_steps = 150
    config.eval_every_steps = 150
    config.checkpoint_every_steps = 50
  return config
