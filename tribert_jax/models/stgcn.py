"""Pose encoder: the 68-joint graph, ST-GCN [52], pose tokens for TriBERT, and PoseClassifier.

Parameter mapping between the pose pre-training phase and TriBERT: PoseClassifier keeps its ST-GCN
under the submodule name "stgcn" (params["stgcn"], batch_stats["stgcn"]); TriBERT keeps the same
module at params["pose_encoder"]["stgcn"] (and batch_stats["pose_encoder"]["stgcn"]), so the
subtree copies over unchanged (tribert_jax.models.pretrained.load_pose_classifier does it).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipeline.layout import skeleton
from tribert_jax.models import layers

Dtype = Any

# The 68-joint skeleton (Halpe body 26 + 2 x 21 hand points) and its bones live with the data
# layout; the graph below is built from them.
NECK = skeleton.NECK  # the centre of the spatial partitioning (ST-GCN uses the neck too)
NUM_JOINTS = skeleton.NUM_JOINTS
graph_edges = skeleton.graph_edges


@functools.lru_cache(maxsize=None)
def spatial_adjacency(center: int = NECK) -> np.ndarray:
  """ST-GCN "spatial" partitioning [3, 68, 68]: root, centripetal, centrifugal (column-normalised).

  A[k, v, w] weighs node v's features in the output of node w (x_out[w] = sum_v x[v] A[k, v, w]).
  """
  v = NUM_JOINTS
  adjacency = np.eye(v)
  for i, j in graph_edges():
    adjacency[i, j] = adjacency[j, i] = 1.0
  # Hop distance of every node to the centre (breadth-first search on the tree).
  hops = np.full(v, np.inf)
  hops[center] = 0
  frontier = [center]
  while frontier:
    nxt = []
    for node in frontier:
      for other in np.nonzero(adjacency[node])[0]:
        if hops[other] == np.inf:
          hops[other] = hops[node] + 1
          nxt.append(other)
    frontier = nxt
  if np.isinf(hops).any():
    raise ValueError("pose graph is not connected")
  normalized = adjacency / adjacency.sum(axis=0, keepdims=True)  # A D^-1 (ST-GCN normalize_digraph)
  partitions = np.zeros((3, v, v))
  for src, dst in zip(*np.nonzero(adjacency)):
    # The partition of neighbour `src` of node `dst` depends on which is nearer the centre.
    if hops[src] == hops[dst]:
      k = 0  # root (the node itself)
    elif hops[src] < hops[dst]:
      k = 1  # centripetal: the neighbour is closer to the centre
    else:
      k = 2  # centrifugal: the neighbour is further from the centre
    partitions[k, src, dst] = normalized[src, dst]
  return partitions.astype(np.float32)


class STGCNBlock(nn.Module):
  """Spatial graph conv (3 partitions, edge importance) + temporal conv, BN, residual."""
  features: int
  stride: int = 1
  temporal_kernel: int = 9
  dropout: float = 0.0
  residual: bool = True
  edge_importance: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x [n, time, joints, channels] -> [n, time / stride, joints, features]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    adjacency = jnp.asarray(spatial_adjacency(), self.dtype)  # [K, V, V]
    k, v = adjacency.shape[:2]
    if self.edge_importance:
      importance = self.param("edge_importance",
                              layers.partitioned(nn.initializers.ones_init(),
                                                 (None, layers.JOINTS, None)),
                              (k, v, v), self.param_dtype)
      adjacency = adjacency * importance.astype(self.dtype)
    if not self.residual:
      residual = 0.0
    elif x.shape[-1] == self.features and self.stride == 1:
      residual = x
    else:
      residual = layers.conv(self.features, (1, 1), strides=(self.stride, 1), use_bias=False,
                             name="residual_conv", **kw)(x)
      residual = layers.batch_norm(train, name="residual_bn", **kw)(residual)
    # Spatial graph convolution: one 1x1 conv per partition, then aggregate over neighbours.
    y = layers.conv(self.features * k, (1, 1), name="gcn_conv", **kw)(x)
    y = y.reshape(*y.shape[:-1], k, self.features)  # [n, T, V, K, C]
    y = jnp.einsum("ntvkc,kvw->ntwc", y, adjacency)
    y = nn.relu(layers.batch_norm(train, name="gcn_bn", **kw)(y))
    # Temporal convolution along time for every joint (kernel [temporal_kernel, 1]).
    pad = (self.temporal_kernel - 1) // 2
    y = layers.conv(self.features, (self.temporal_kernel, 1), strides=(self.stride, 1),
                    padding=((pad, pad), (0, 0)), use_bias=False, name="temporal_conv", **kw)(y)
    y = layers.batch_norm(train, name="temporal_bn", **kw)(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return nn.relu(y + residual)


class STGCN(nn.Module):
  """ST-GCN trunk: pose [n, W, 68, 3] -> per-joint features [n, W / stride, 68, C_out]."""
  blocks: Sequence[tuple[int, int]]  # (out_channels, temporal_stride) per block
  temporal_kernel: int = 9
  dropout: float = 0.0
  edge_importance: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @property
  def total_stride(self) -> int:
    """Temporal down-sampling factor of the trunk."""
    return int(np.prod([s for _, s in self.blocks]))

  @nn.compact
  def __call__(self, pose: jax.Array, train: bool) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    n, w, j, c = pose.shape
    if j != NUM_JOINTS:
      raise ValueError(f"pose input has {j} joints; the graph has {NUM_JOINTS}")
    # ST-GCN's data_bn: one BatchNorm channel per (joint, coordinate).
    x = layers.batch_norm(train, name="data_bn", **kw)(pose.reshape(n, w, j * c).astype(self.dtype))
    x = x.reshape(n, w, j, c)
    for i, (features, stride) in enumerate(self.blocks):
      x = STGCNBlock(features, stride, self.temporal_kernel, self.dropout, residual=i > 0,
                     edge_importance=self.edge_importance, name=f"block{i}", **kw)(x, train)
    return x


def make_stgcn(config: ml_collections.ConfigDict, name: str = "stgcn") -> STGCN:
  """The ST-GCN of config.model (same module for PoseClassifier and TriBERT's pose encoder)."""
  return STGCN(blocks=tuple(tuple(b) for b in config.pose.stgcn_blocks),
               temporal_kernel=config.pose.temporal_kernel, dropout=config.pose.stgcn_dropout,
               edge_importance=config.pose.edge_importance,
               dtype=layers.to_dtype(config.dtype), param_dtype=layers.to_dtype(config.param_dtype),
               name=name)


def keypoint_boxes(keypoints: jax.Array) -> jax.Array:
  """Box of the visible keypoints [..., J, 3] -> [..., 5] = (x1, y1, x2, y2, area); 0 if none."""
  visible = keypoints[..., 2] > 0
  any_visible = jnp.any(visible, axis=-1, keepdims=True)
  x, y = keypoints[..., 0], keypoints[..., 1]
  x1 = jnp.min(jnp.where(visible, x, jnp.inf), axis=-1, keepdims=True)
  y1 = jnp.min(jnp.where(visible, y, jnp.inf), axis=-1, keepdims=True)
  x2 = jnp.max(jnp.where(visible, x, -jnp.inf), axis=-1, keepdims=True)
  y2 = jnp.max(jnp.where(visible, y, -jnp.inf), axis=-1, keepdims=True)
  box = jnp.concatenate([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], axis=-1)
  return jnp.where(any_visible, box, 0.0)


def receptive_radius(blocks, temporal_kernel: int) -> int:
  """Frames either side of a strided output position that an ST-GCN output depends on."""
  radius, stride = 0, 1
  for _, block_stride in blocks:
    radius += (temporal_kernel - 1) // 2 * stride  # the block's temporal conv, on this grid
    stride *= block_stride
  return radius


def temporal_feature_index(pose_frame_index: jax.Array, total_stride: int,
                           num_features: int) -> jax.Array:
  """Index of the strided ST-GCN output nearest to each RGB frame's pose-window position."""
  # Output step i of a stride-s 'same'-padded conv is centred on input i*s; strides compose.
  return jnp.clip((pose_frame_index + total_stride // 2) // total_stride, 0, num_features - 1)


class PoseEncoder(nn.Module):
  """Pose [B,N,P,W,J,3] -> one token per person per RGB frame [B,N,T,P,D] and validity [B,N,T,P]."""
  config: ml_collections.ConfigDict  # config.model
  width: int = 1024  # pose stream width

  @nn.compact
  def __call__(self, pose: jax.Array, pose_mask: jax.Array, pose_frame_index: jax.Array,
               train: bool, pose_features: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    """pose_features [B,N,T,P,J*C]: the frozen ST-GCN's features at the RGB frames, precomputed
    (config.model.pose.stgcn_input="features"); the module then has no ST-GCN of its own."""
    cfg = self.config.pose
    dtype, param_dtype = layers.to_dtype(self.config.dtype), layers.to_dtype(self.config.param_dtype)
    b, n, p, w, j, c = pose.shape
    t = pose_frame_index.shape[-1]
    if cfg.get("stgcn_input", "pose") == "features":
      if pose_features is None:
        raise ValueError("config.model.pose.stgcn_input='features' needs the batch's "
                         "pose_features (config.data.pose_features_dir)")
      features = pose_features.astype(dtype)
    else:
      stgcn = make_stgcn(self.config)
      # Frozen = the paper's precomputed features: running statistics, no gradient.
      features = stgcn(pose.reshape(b * n * p, w, j, c), train and not cfg.freeze_stgcn)
      if cfg.freeze_stgcn:
        features = jax.lax.stop_gradient(features)
      w_out, ch = features.shape[1], features.shape[-1]
      features = features.reshape(b, n, p, w_out, j, ch)
      index = temporal_feature_index(pose_frame_index, stgcn.total_stride, w_out)  # [B, N, T]
      features = jnp.take_along_axis(features, index[:, :, None, :, None, None], axis=3)
      features = features.transpose(0, 1, 3, 2, 4, 5).reshape(b, n, t, p, j * ch)  # [B,N,T,P,J*C]
    tokens = layers.dense(self.width, name="feature_projection", dtype=dtype,
                          param_dtype=param_dtype)(features)
    # Keypoints and presence of each person at the RGB frames' positions in the window.
    pose_index = jnp.clip(pose_frame_index, 0, w - 1)
    keypoints = jnp.take_along_axis(pose, pose_index[:, :, None, :, None, None], axis=3)
    keypoints = keypoints.transpose(0, 1, 3, 2, 4, 5)  # [B, N, T, P, J, 3]
    valid = jnp.take_along_axis(pose_mask, pose_index[:, :, None, :], axis=3)
    valid = valid.transpose(0, 1, 3, 2)  # [B, N, T, P]
    if cfg.box_embedding:
      tokens = tokens + layers.dense(self.width, name="box_embedding", dtype=dtype,
                                     param_dtype=param_dtype)(keypoint_boxes(keypoints))
    return tokens, valid


class PoseClassifier(nn.Module):
  """ST-GCN alone for the pose pre-training phase: pose [B,P,W,J,3], mask [B,P,W] -> logits [B,C]."""
  config: ml_collections.ConfigDict  # config.model

  @nn.compact
  def __call__(self, pose: jax.Array, pose_mask: jax.Array, train: bool = False) -> jax.Array:
    b, p, w, j, c = pose.shape
    features = make_stgcn(self.config)(pose.reshape(b * p, w, j, c), train)
    features = features.reshape(b, p, -1, j, features.shape[-1]).astype(jnp.float32)
    per_person = jnp.mean(features, axis=(2, 3))  # [B, P, C]: pooled over time and joints
    present = (jnp.max(pose_mask, axis=-1) > 0).astype(jnp.float32)  # [B, P]
    pooled = layers.masked_mean(per_person, present[..., None], axis=1)  # [B, C]
    return layers.dense(self.config.num_classes, name="classifier", names=(layers.EMBED, layers.CLASSES),
                        dtype=jnp.float32, param_dtype=layers.to_dtype(self.config.param_dtype))(pooled)
