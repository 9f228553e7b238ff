"""Frozen ST-GCN features computed once per (ST-GCN weights, dataset), as the paper and the release
feed them (config.model.pose.stgcn_input = "features").

  ensure_cache(config, workdir) -> directory   (train.py / evaluation call it before the pipeline)

The ST-GCN comes from config.pose_features.checkpoint (a pose_pretrain workdir: its "stgcn"
parameters and BatchNorm statistics). The cache lives in
config.pose_features.cache_root (default WORKDIR/pose_features) under a folder named by a hash
of those arrays, the ST-GCN keys of config.model and the format version, so features of other
weights are never read; within it each clip's entry records its pose file's size and mtime, and a
changed pose file is recomputed. The format and the read side: data_pipeline/loading/
pose_features.py.

Each clip's pose (the PoseTrack the pipeline reads, and its mirror image as the pipeline mirrors
it) is zero-padded by the pose window's half width on both sides and run through the ST-GCN once
per phase of its total temporal stride S, so that every clip position gets the output centred on
it (an output's grid is fixed by the position itself, whatever the window start). This equals
the in-step ST-GCN on a pose window wherever the window holds the output's whole receptive field
(`exact_in_window`: true at the paper's sizes, radius 76 frames in a 256-frame window; at the cpu
and tiny presets the in-step window cuts the field short at the RGB frames, and the cached
features are those of the whole clip).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipeline.layout import schema, skeleton, writer
from data_pipeline.loading import pose_features as store_format
from data_pipeline.loading import sources
from tribert_jax import checkpointing
from tribert_jax.models import stgcn as stgcn_model

SPLITS = schema.SPLITS


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether config's model reads precomputed pose features."""
  pose = config.model.get("pose")
  return bool(pose and pose.enabled and pose.get("stgcn_input", "pose") == "features")


def exact_in_window(model_config: ml_collections.ConfigDict, window: int, num_frames: int
                    ) -> bool:
  """True when the in-step ST-GCN on a `window`-frame pose window sees the whole receptive field
  at every RGB frame's feature position (then cached and in-step features agree)."""
  blocks, kernel = model_config.pose.stgcn_blocks, model_config.pose.temporal_kernel
  stride = int(np.prod([s for _, s in blocks]))
  radius = stgcn_model.receptive_radius(blocks, kernel)
  # Window coordinates of the RGB frames' feature positions (a window centred on W // 2).
  offsets = store_format.feature_positions(window // 2, window, num_frames, stride)
  return bool(offsets.min() - radius >= 0 and offsets.max() + radius <= window - 1)


def _stgcn_variables(config: ml_collections.ConfigDict) -> tuple[dict[str, Any], int]:
  source = config.pose_features
  if not source.checkpoint:
    raise ValueError("config.model.pose.stgcn_input='features' needs "
                     "config.pose_features.checkpoint (a pose_pretrain workdir)")
  state, _, step = checkpointing.load_state_tree(source.checkpoint, source.which)
  if "stgcn" not in state.get("params", {}):
    raise ValueError(f"config.pose_features.checkpoint={source.checkpoint!r} (step {step}) has "
                     "no 'stgcn' parameters: expected a pose_pretrain workdir")
  variables = {"params": state["params"]["stgcn"],
               "batch_stats": (state.get("batch_stats") or {}).get("stgcn", {})}
  return jax.tree.map(np.asarray, variables), step


def cache_key(variables: dict[str, Any], model_config: ml_collections.ConfigDict) -> str:
  """Hash of the ST-GCN arrays, its config keys and the format version."""
  digest = hashlib.sha256()
  pose = model_config.pose
  digest.update(json.dumps({
      "format": store_format.FORMAT_VERSION, "blocks": [list(b) for b in pose.stgcn_blocks],
      "kernel": pose.temporal_kernel, "edge_importance": pose.edge_importance,
      "dtype": model_config.dtype}, sort_keys=True).encode())
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  for path, value in sorted(flat, key=lambda item: jax.tree_util.keystr(item[0])):
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()[:20]


def mirror(keypoints: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The pipeline's horizontal flip of pose [P, F, J, 3] (x -> 1 - x where detected, left and
  right joints swapped; data_pipeline/loading/decode.py)."""
  mirrored = keypoints[:, :, skeleton.FLIP_PERMUTATION]
  x = (1.0 - mirrored[..., 0]) * mask[:, :, None]
  return np.concatenate([x[..., None], mirrored[..., 1:]], axis=-1)


def make_clip_features(model_config: ml_collections.ConfigDict, variables: dict[str, Any],
                       window: int, margin: int):
  """Returns features(keypoints [P, F, J, 3]) -> [F + 2 margin, P, J, C] (float32)."""
  net = stgcn_model.make_stgcn(model_config)
  stride = int(np.prod([s for _, s in model_config.pose.stgcn_blocks]))
  pad = max(window // 2, margin)
  apply = jax.jit(lambda x: net.apply(variables, x, False))

  def features(keypoints: np.ndarray) -> np.ndarray:
    persons, frames = keypoints.shape[:2]
    padded = np.zeros((persons, frames + 2 * pad) + keypoints.shape[2:], np.float32)
    padded[:, pad:pad + frames] = keypoints
    out = None
    for phase in range(stride):
      y = np.asarray(apply(jnp.asarray(padded[:, phase:])))  # [P, ceil((L - phase) / S), J, C]
      if out is None:
        out = np.zeros((padded.shape[1], persons) + y.shape[2:], np.float32)
      positions = phase + stride * np.arange(y.shape[1])
      out[positions] = y.transpose(1, 0, 2, 3)
    return out[pad - margin:pad + frames + margin]

  return features


def ensure_cache(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Builds (or completes) the cache for every split of config.data's dataset and sets
  config.data.pose_features_dir to it; returns that directory."""
  variables, step = _stgcn_variables(config)
  key = cache_key(variables, config.model)
  root = config.pose_features.cache_root or os.path.join(workdir, "pose_features")
  directory = os.path.join(root, key)
  data = config.data
  stride = int(np.prod([s for _, s in config.model.pose.stgcn_blocks]))
  margin = store_format.margin(data.num_frames, stride)
  manifest_path = os.path.join(directory, store_format.MANIFEST)
  manifest = {"format_version": store_format.FORMAT_VERSION, "key": key,
              "checkpoint": os.path.abspath(config.pose_features.checkpoint),
              "checkpoint_step": step, "total_stride": stride, "margin": margin,
              "persons": data.max_persons, "joints": skeleton.NUM_JOINTS,
              "channels": config.model.pose.stgcn_blocks[-1][0], "clips": {}}
  if os.path.exists(manifest_path):
    with open(manifest_path) as file:
      old = json.load(file)
    if old.get("margin", 0) >= margin and old.get("persons") == data.max_persons:
      manifest.update(margin=old["margin"], clips=old["clips"])
      margin = old["margin"]
  compute = None
  built = 0
  stats = sources.PipelineStats()
  for split in SPLITS:
    try:
      _, records, store = sources.open_source(data, split, stats)
    except FileNotFoundError:
      continue  # a dataset without that split
    for row in store.prepare(range(len(records))):
      record = records[row]
      entry_key = store_format.clip_key(record.category, record.id)
      stat = _pose_stat(record)
      if manifest["clips"].get(entry_key, {}).get("pose") == stat:
        continue
      if compute is None:
        compute = make_clip_features(config.model, variables, data.pose_window, margin)
      track = store.pose[row]
      keypoints = np.asarray(track.keypoints, np.float32)
      mask = np.asarray(track.mask, np.float32)
      array = np.stack([compute(keypoints), compute(mirror(keypoints, mask))])
      path = os.path.join(directory, f"{entry_key}.npy")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      temporary = path + ".tmp.npy"
      np.save(temporary, array.astype(np.float16))
      os.replace(temporary, path)
      manifest["clips"][entry_key] = {"pose": stat, "num_frames": int(keypoints.shape[1])}
      built += 1
  os.makedirs(directory, exist_ok=True)
  writer.write_json(pathlib.Path(manifest_path), manifest)
  logging.info("pose feature cache %s: %d clips (%d computed now) from %s step %d; in-step "
               "equivalent: %s", directory, len(manifest["clips"]), built,
               config.pose_features.checkpoint, step,
               exact_in_window(config.model, data.pose_window, data.num_frames))
  data.pose_features_dir = directory
  return directory


def _pose_stat(record: schema.ClipRecord) -> list[Any]:
  """(size, mtime_ns) of a clip's pose file, or the record's pose path for TFDS / no pose."""
  try:
    stat = os.stat(record.pose)
    return [stat.st_size, stat.st_mtime_ns]
  except OSError:
    return [str(record.pose)]
