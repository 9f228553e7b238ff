"""Which task trains which phase (scenic's `ALL_TRAINERS` shape): config.phase -> Task builder.

A new model registers here (a separation baseline usually needs no new task: it is chosen by
config.model.name inside tasks/separation.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import ml_collections

from tribert_jax.tasks import audio_motion_embedding
from tribert_jax.tasks import frame_classification
from tribert_jax.tasks import pose_classification
from tribert_jax.tasks import separation
from tribert_jax.tasks.base import Task

TaskBuilder = Callable[[ml_collections.ConfigDict, Sequence[str]], Task]

ALL_TASKS: dict[str, TaskBuilder] = {
    "pose_pretrain": pose_classification.pose_classification_task,
    "pretrain": separation.separation_task,
    "finetune": separation.separation_task,
    "sound_of_pixels": separation.separation_task,
    "sound_of_pixels_frames": frame_classification.frame_classification_task,
    "separation_pretrain": separation.separation_task,
    "visual_pretrain": frame_classification.frame_classification_task,
    # AMnet (Zhu & Rahtu): Audio-Motion Embedding pre-training, then separation (model.stage).
    "amnet_ame": audio_motion_embedding.audio_motion_embedding_task,
    "amnet": separation.separation_task,
}


def get_task(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> Task:
  """The task of config.phase for a dataset with these class names."""
  if config.phase not in ALL_TASKS:
    raise ValueError(f"config.phase={config.phase!r}: expected one of {sorted(ALL_TASKS)}")
  return ALL_TASKS[config.phase](config, list(class_names))
