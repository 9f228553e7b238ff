"""The tf.data side of the pipeline: plan -> one Mix-and-Separate example (JPEG decode, crop,
resize, flip, ImageNet normalisation, pose window and mirroring, mixing), then batching."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_pipeline.layout import schema, skeleton
from data_pipeline.layout.schema import IMAGENET_MEAN, IMAGENET_STD
from data_pipeline.loading import pose_features as pose_feature_store
from data_pipeline.loading import sources


def parallel_calls(value: int) -> int:
  """config.data.num_parallel_calls / prefetch: -1 means tf.data.AUTOTUNE."""
  return tf.data.AUTOTUNE if value < 0 else int(value)


def make_loader(config, info: schema.DatasetInfo,
                 records: list[schema.ClipRecord], store: sources.ClipSource):
  """The tf function plan -> example (one Mix-and-Separate example, unbatched)."""
  num_mix, num_frames, size = config.num_mix, config.num_frames, config.image_size
  window, persons, length = config.pose_window, config.max_persons, config.audio_length
  joints = skeleton.NUM_JOINTS
  frame_dirs = tf.constant([str(r.frames) for r in records])
  label_table = tf.constant(np.stack([schema.multi_hot(r.labels, info.classes)
                                      for r in records]))  # [rows, C]
  mean = tf.constant(IMAGENET_MEAN, tf.float32)
  std = tf.constant(IMAGENET_STD, tf.float32)
  flip_permutation = tf.constant(skeleton.FLIP_PERMUTATION, tf.int32)
  pose_frame_index = tf.constant(window // 2 - num_frames // 2 + np.arange(num_frames), tf.int32)
  # Frozen ST-GCN features precomputed per clip (config.pose_features_dir), or None.
  features = pose_feature_store.open_store(config, records)
  if features is not None and features.persons != persons:
    raise ValueError(f"pose feature cache {config.pose_features_dir} holds "
                     f"{features.persons} persons, config.data.max_persons = {persons}")

  def decode_jpeg(data: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """Decodes one frame, failing with the file name on a corrupt / truncated JPEG."""
    # substr positions stay inside the string, so a zero-byte file fails this Assert (naming the
    # file) rather than inside substr.
    tail = tf.maximum(tf.strings.length(data) - 2, 0)
    looks_whole = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"),
                                 tf.equal(tf.strings.substr(data, tail, 2), b"\xff\xd9"))
    check = tf.debugging.Assert(looks_whole, ["corrupt, truncated or empty JPEG:", path])
    with tf.control_dependencies([check]):
      # INTEGER_ACCURATE matches libjpeg / PIL; TF's default fast IDCT is off by several levels.
      return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

  def frame_paths(row, center) -> tf.Tensor:
    """[T] file names of the frames centred on frame `center` (pseudo paths for TFDS)."""
    indices = center - num_frames // 2 + tf.range(num_frames)
    names = tf.strings.as_string(indices + 1, width=6, fill="0")
    return frame_dirs[row] + "/" + names + ".jpg"

  def load_frames(jpegs, paths, box, flip) -> tf.Tensor:
    """[T, S, S, 3] normalised frames from the T JPEG byte strings."""
    images = tf.stack([decode_jpeg(jpegs[t], paths[t])
                       for t in range(num_frames)])  # [T, H, W, 3] uint8
    images = tf.image.crop_to_bounding_box(images, box[0], box[1], box[2], box[3])
    images = tf.image.resize(images, [size, size], method="bilinear", antialias=True)
    images = tf.cond(flip > 0, lambda: tf.reverse(images, axis=[2]), lambda: images)
    images = (images / 255.0 - mean) / std
    return tf.ensure_shape(images, [num_frames, size, size, 3])

  def load_pose(row, center, flip):
    """Pose [P, W, J, 3] and mask [P, W] around frame `center`, mirrored when flipped."""
    pose, mask = tf.numpy_function(store.pose_window, [row, center], [tf.float32, tf.float32],
                                   stateful=False)
    pose = tf.ensure_shape(pose, [persons, window, joints, 3])
    mask = tf.ensure_shape(mask, [persons, window])

    def mirror():
      mirrored = tf.gather(pose, flip_permutation, axis=2)  # [P, W, J, 3], left <-> right
      x = (1.0 - mirrored[..., 0]) * mask[:, :, None]  # keep zeros where undetected
      return tf.concat([x[..., None], mirrored[..., 1:]], axis=-1)

    pose = tf.cond(flip > 0, mirror, lambda: pose)
    return pose, mask

  def load_example(plan: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """One example from its plan (pure function of the plan: no randomness here)."""
    frames, poses, masks, waves, pose_features = [], [], [], [], []
    for n in range(num_mix):
      row = plan["clip_index"][n]
      center = plan["center_frame"][n]
      flip = plan["flip"][n]
      paths = frame_paths(row, center)
      audio, jpegs = store.read_media(row, plan["audio_start"][n], center, paths)
      frames.append(load_frames(jpegs, paths, plan["crop_box"][n], flip))
      pose, mask = load_pose(row, center, flip)
      poses.append(pose)
      masks.append(mask)
      if features is not None:
        feature = tf.numpy_function(features.features, [row, center, flip], tf.float32,
                                    stateful=False)
        pose_features.append(tf.ensure_shape(feature, [num_frames, persons, features.width]))
      waves.append(tf.ensure_shape(audio, [length]))
    # Mixing scale: gain (training volume jitter), clip like Sound-of-Pixels, divide by N.
    waveform = tf.clip_by_value(tf.stack(waves) * plan["gain"][:, None], -1.0, 1.0) / num_mix
    example = dict(
        frames=tf.stack(frames),  # [N, T, S, S, 3]
        pose=tf.stack(poses),  # [N, P, W, J, 3]
        pose_mask=tf.stack(masks),  # [N, P, W]
        pose_frame_index=tf.tile(pose_frame_index[None], [num_mix, 1]),  # [N, T]
        labels=tf.gather(label_table, plan["clip_index"]),  # [N, C]
        waveform=waveform,  # [N, L]
        mixture=tf.reduce_sum(waveform, axis=0),  # [L]
        valid=tf.cast(plan["valid"], tf.float32),
        clip_index=tf.cast(plan["clip_index"], tf.int32),
        mixture_index=tf.cast(plan["mixture_index"], tf.int32),
    )
    if features is not None:
      example["pose_features"] = tf.stack(pose_features)  # [N, T, P, J * C]
    return example

  return load_example


SEQUENCE_KEY = "_sequence"  # position of each example in the plan stream (popped by Pipeline)


def finish(dataset: tf.data.Dataset, load_example, config, host_batch: int,
           drop_remainder: bool, skip_errors: bool = False) -> tf.data.Dataset:
  """Parallel deterministic map, batch, prefetch. Each example carries SEQUENCE_KEY, its
  position in the plan stream, so that read errors can be traced back to the clip's files.

  skip_errors: drop examples whose read fails (a file that broke after validation); the
  Pipeline finds the gaps in SEQUENCE_KEY and counts / names them.
  """
  def load(sequence, plan):
    example = load_example(plan)
    example[SEQUENCE_KEY] = sequence
    return example

  dataset = dataset.enumerate().map(
      load, num_parallel_calls=parallel_calls(config.num_parallel_calls), deterministic=True)
  if skip_errors:
    dataset = dataset.ignore_errors(log_warning=True)
  dataset = dataset.batch(host_batch, drop_remainder=drop_remainder)
  return dataset.prefetch(parallel_calls(config.prefetch))
