"""Sampling plans: every random choice of an example (clips, crop start, frame box, flip, gain)
drawn in numpy from (seed, process, epoch, position) into a plan dict; the tf.data map
(decode.py) is a pure function of the plan."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from data_pipeline.layout import schema
from data_pipeline.loading import sources

PLAN_KEYS = ("clip_index", "audio_start", "center_frame", "crop_box", "flip", "gain",
             "mixture_index", "valid")


def host_slice(count: int, process_index: int, process_count: int) -> np.ndarray:
  """Round-robin positions of this host among `count` items."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return np.arange(process_index, count, process_count)


def central_box(height: int, width: int) -> tuple[int, int, int, int]:
  """(offset_y, offset_x, h, w) of the central square."""
  side = min(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def random_box(rng: np.random.Generator, height: int, width: int, area_range, aspect_range):
  """(offset_y, offset_x, h, w) of an Inception-style random resized crop."""
  area = height * width
  log_aspect = np.log(aspect_range)
  for _ in range(10):
    target = area * rng.uniform(*area_range)
    aspect = np.exp(rng.uniform(*log_aspect))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return central_box(height, width)


def plan_signature(num_mix: int) -> dict[str, tf.TensorSpec]:
  """TensorSpecs of one example plan."""
  return dict(
      clip_index=tf.TensorSpec([num_mix], tf.int32),
      audio_start=tf.TensorSpec([num_mix], tf.int64),
      center_frame=tf.TensorSpec([num_mix], tf.int32),
      crop_box=tf.TensorSpec([num_mix, 4], tf.int32),  # offset_y, offset_x, height, width
      flip=tf.TensorSpec([num_mix], tf.int32),
      gain=tf.TensorSpec([num_mix], tf.float32),
      mixture_index=tf.TensorSpec([], tf.int32),
      valid=tf.TensorSpec([], tf.float32),
  )


def plan_entry(store: sources.ClipSource, rows, starts, boxes, flips, gains, mixture_index: int,
                valid: float) -> dict[str, np.ndarray]:
  """Numpy plan of one example."""
  return dict(
      clip_index=np.asarray(rows, np.int32),
      audio_start=np.asarray(starts, np.int64),
      center_frame=np.asarray([store.center_frame(r, s) for r, s in zip(rows, starts)], np.int32),
      crop_box=np.asarray(boxes, np.int32).reshape(len(rows), 4),
      flip=np.asarray(flips, np.int32),
      gain=np.asarray(gains, np.float32),
      mixture_index=np.int32(mixture_index),
      valid=np.float32(valid),
  )


def train_plans(config, info: schema.DatasetInfo, records: list[schema.ClipRecord],
                store: sources.ClipSource, host_rows: list[int], *, seed: int, start_batch: int,
                host_batch: int, process_index: int, process_count: int
                ) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
  """The training plan stream of this host's validated clips (see the pipeline docstring)."""
  num_mix = config.num_mix
  if len(host_rows) < num_mix:
    raise ValueError(f"{sources.where(config)}: host {process_index}/{process_count} has "
                     f"{len(host_rows)} usable training clips, fewer than num_mix = {num_mix}")
  class_index = {name: i for i, name in enumerate(info.classes)}
  label_matrix = np.zeros((len(host_rows), len(info.classes)), bool)  # [clips, C]
  for i, row in enumerate(host_rows):
    label_matrix[i, [class_index[x] for x in records[row].labels]] = True
  jitter = float(config.volume_jitter)

  def clip_choices(rng: np.random.Generator, row: int):
    """Random crop start, frame box, flip and gain of one video."""
    start = int(rng.integers(0, store.usable_samples(row) - config.audio_length + 1))
    clip = store.clip_info[row]
    box = random_box(rng, clip.frame_height, clip.frame_width, tuple(config.random_crop_area),
                     tuple(config.random_crop_aspect))
    flip = int(config.horizontal_flip and rng.random() < 0.5)
    gain = rng.uniform(1.0 - jitter, 1.0 + jitter)
    return start, box, flip, gain

  def plan() -> Iterator[dict[str, np.ndarray]]:
    """Infinite per-example plans: epoch-shuffled anchors with label-disjoint partners."""
    epoch, first_position = divmod(start_batch * host_batch, len(host_rows))
    while True:
      order = np.random.default_rng([seed, process_index, epoch]).permutation(len(host_rows))
      for position in range(first_position, len(order)):
        anchor = order[position]
        rng = np.random.default_rng([seed, process_index, epoch, position])
        chosen = [int(anchor)]
        used = label_matrix[anchor].copy()
        for _ in range(num_mix - 1):
          candidates = np.flatnonzero(~(label_matrix & used).any(axis=1))
          if candidates.size == 0:
            raise ValueError(f"{sources.where(config)}: no training clip has labels disjoint "
                             f"from {[records[host_rows[i]].labels for i in chosen]} on host "
                             f"{process_index}; cannot build a {num_mix}-mixture")
          pick = int(rng.choice(candidates))
          chosen.append(pick)
          used |= label_matrix[pick]
        rows = [host_rows[i] for i in chosen]
        starts, boxes, flips, gains = zip(*(clip_choices(rng, r) for r in rows))
        yield plan_entry(store, rows, starts, boxes, flips, gains, -1, 1.0)
      epoch, first_position = epoch + 1, 0

  return plan


def eval_entry(config, store: sources.ClipSource, rows, mixture_index: int,
               valid: float) -> dict[str, np.ndarray]:
  """Plan of validated rows: centred audio crop, central frame square, no flip, gain 1."""
  starts = [(store.usable_samples(r) - config.audio_length) // 2 for r in rows]
  boxes = [central_box(store.clip_info[r].frame_height, store.clip_info[r].frame_width)
           for r in rows]
  return plan_entry(store, rows, starts, boxes, [0] * len(rows), [1.0] * len(rows),
                    mixture_index, valid)
