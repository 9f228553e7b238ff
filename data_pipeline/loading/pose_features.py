"""Precomputed frozen ST-GCN pose features: the on-disk format and the loader's read side.

The paper and the authors' release train the ST-GCN on the keypoints beforehand, freeze it, and
feed TriBERT its precomputed per-frame features (release: one 2 x 256 x 68 .npy per frame).
tribert_jax/pose_feature_cache.py writes them once per (ST-GCN weights, dataset) into

  DIR/manifest.json                  FORMAT_VERSION, key, geometry, clips {"<cat>/<id>": stat}
  DIR/<category>/<id>.npy            [2, F + 2 M, P, J, C] (flip, clip position, person, joint,
                                     channel): the features centred on clip frame f are at
                                     [flip, f + M]; flip 1 = the mirrored pose (as the training
                                     pipeline mirrors it); positions -M..F+M-1 cover every frame
                                     a pose window's RGB frames can ask for.

A feature at clip position a is what the frozen ST-GCN outputs for the strided position centred
on a (its receptive field reaches RADIUS frames either side; outside the clip the pose is zero,
as it is in a pose window). The training batch then reads, for RGB frame t of a window starting
at frame s, the feature at a = s + index_t * S where index_t is the strided output nearest to the
frame's window position (tribert_jax.models.stgcn.temporal_feature_index, S = total stride):
the same position the in-step ST-GCN would sample, without running it.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def clip_key(category: str, clip_id: str) -> str:
  """Manifest key and relative file stem of a clip."""
  return f"{category}/{clip_id}"


def feature_positions(center: int, window: int, num_frames: int, total_stride: int
                      ) -> np.ndarray:
  """Clip positions [T] of the features the RGB frames centred on `center` use (see module
  docstring; mirrors temporal_feature_index for a window centred on `center`)."""
  frame_index = window // 2 - num_frames // 2 + np.arange(num_frames)
  num_features = -(-window // total_stride)
  index = np.clip((frame_index + total_stride // 2) // total_stride, 0, num_features - 1)
  return int(center) - window // 2 + index * total_stride


def margin(num_frames: int, total_stride: int) -> int:
  """M: how far outside the clip a feature position can fall (centres are inside the clip)."""
  return num_frames + total_stride


class FeatureStore:
  """Reads a cache directory for the clips of one split (rows of `records`)."""

  def __init__(self, directory: str, records: Sequence[Any], window: int, num_frames: int):
    self.directory = pathlib.Path(directory)
    path = self.directory / MANIFEST
    try:
      with open(path) as file:
        self.manifest = json.load(file)
    except FileNotFoundError as error:
      raise FileNotFoundError(f"pose feature cache {path} is missing (it is written by "
                              "tribert_jax.pose_feature_cache before training)") from error
    if self.manifest.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"{path}: format version {self.manifest.get('format_version')}, this "
                       f"code reads {FORMAT_VERSION}: rebuild the cache")
    self.total_stride = int(self.manifest["total_stride"])
    self.margin = int(self.manifest["margin"])
    self.window, self.num_frames = int(window), int(num_frames)
    if margin(self.num_frames, self.total_stride) > self.margin:
      raise ValueError(f"{path}: margin {self.margin} frames is too small for "
                       f"config.data.num_frames={num_frames}: rebuild the cache")
    self.records = list(records)
    self._arrays: dict[int, np.ndarray] = {}

  def _array(self, row: int) -> np.ndarray:
    array = self._arrays.get(row)
    if array is None:
      record = self.records[row]
      key = clip_key(record.category, record.id)
      if key not in self.manifest["clips"]:
        raise FileNotFoundError(f"pose feature cache {self.directory} has no features for clip "
                                f"{key}: rebuild the cache")
      path = self.directory / f"{key}.npy"
      array = np.load(path, mmap_mode="r")
      expected = int(self.manifest["clips"][key]["num_frames"]) + 2 * self.margin
      if array.ndim != 5 or array.shape[0] != 2 or array.shape[1] != expected:
        raise ValueError(f"{path}: shape {array.shape}, expected [2, {expected}, P, J, C]")
      self._arrays[row] = array
    return array

  def features(self, row, center, flip) -> np.ndarray:
    """[T, P, J * C] float32 features of the RGB frames centred on `center` (mirrored pose
    features when flip)."""
    array = self._array(int(row))
    positions = feature_positions(int(center), self.window, self.num_frames,
                                  self.total_stride) + self.margin
    if positions.min() < 0 or positions.max() >= array.shape[1]:
      raise ValueError(f"pose feature positions {positions - self.margin} fall outside the "
                       f"cached range of clip row {row} ({self.directory})")
    out = np.asarray(array[int(flip > 0), positions], np.float32)  # [T, P, J, C]
    return out.reshape(out.shape[0], out.shape[1], -1)

  @property
  def width(self) -> int:
    """J * C of one person's features at one frame."""
    return int(self.manifest["joints"]) * int(self.manifest["channels"])

  @property
  def persons(self) -> int:
    return int(self.manifest["persons"])


def open_store(config, records: Sequence[Any]) -> FeatureStore | None:
  """The FeatureStore of config.pose_features_dir (config = config.data), or None when unset."""
  directory = config.get("pose_features_dir", "")
  if not directory:
    return None
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"config.data.pose_features_dir={directory!r} does not exist")
  return FeatureStore(directory, records, config.pose_window, config.num_frames)
