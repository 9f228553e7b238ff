"""68-joint pose graph, ST-GCN, pose tokens and the pose classifier."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from configs.parts.model import get_model_config
from data_pipeline.layout import skeleton
from tribert_jax.models import stgcn


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def test_graph_edges_body_hands_and_wrists():
  edges = stgcn.graph_edges()
  assert len(edges) == 25 + 2 * 20 + 2
  assert len({tuple(sorted(e)) for e in edges}) == len(edges)  # no duplicates
  nodes = {v for e in edges for v in e}
  assert nodes == set(range(68))
  assert (skeleton.LEFT_WRIST, 26) in edges and (skeleton.RIGHT_WRIST, 47) in edges
  hand = [(i, j) for i, j in edges if i >= 26 and j >= 26]
  assert len(hand) == 40
  # Every finger chain starts at its hand's root (the hand wrist).
  for offset in (26, 47):
    assert sorted(j - offset for i, j in hand if i == offset) == [1, 5, 9, 13, 17]


def test_spatial_adjacency_is_normalised_symmetric_and_connected():
  a = stgcn.spatial_adjacency()
  assert a.shape == (3, 68, 68)
  support = a.sum(0) > 0
  np.testing.assert_array_equal(support, support.T)  # undirected graph (+ self loops)
  assert np.all(np.diag(a[0]) > 0)  # the root partition holds the node itself
  np.testing.assert_allclose(a.sum(axis=(0, 1)), 1.0, rtol=1e-6)  # each node averages neighbours
  # Connected: the 67 undirected edges of a tree reach every node from the neck.
  num_components, _ = connected_components(support, directed=False)
  assert num_components == 1
  assert int((support.sum() - 68) / 2) == 67
  # Partitions by distance to the centre: the neck's neighbours are all further out.
  assert a[1][:, stgcn.NECK].sum() == 0 and a[2][:, stgcn.NECK].sum() > 0
  # Left wrist: its hand root is further (centrifugal), its elbow closer (centripetal).
  assert a[2][26, skeleton.LEFT_WRIST] > 0 and a[1][7, skeleton.LEFT_WRIST] > 0


def test_stgcn_shapes_and_stride():
  cfg = get_model_config("tiny")
  model = stgcn.make_stgcn(cfg)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 68, 3))
  def run(k, x):
    variables = model.init(k, x, train=False)
    return (variables,) + model.apply(variables, x, train=True, mutable=["batch_stats"])

  variables, y, mutated = run_o0(run, jax.random.PRNGKey(1), x)
  assert y.shape == (3, 16 // model.total_stride, 68, cfg.pose.stgcn_blocks[-1][0])
  assert "batch_stats" in mutated
  assert variables["params"]["block0"]["edge_importance"].value.shape == (3, 68, 68)


def test_temporal_feature_index_and_boxes():
  idx = stgcn.temporal_feature_index(jnp.array([0, 1, 2, 5, 6, 63]), 4, 16)
  np.testing.assert_array_equal(idx, [0, 0, 1, 1, 2, 15])
  kp = np.zeros((2, 68, 3), np.float32)
  kp[0, :3] = [[0.2, 0.3, 1.0], [0.6, 0.1, 0.5], [0.9, 0.9, 0.0]]  # third not visible
  box = np.asarray(stgcn.keypoint_boxes(jnp.asarray(kp)))
  np.testing.assert_allclose(box[0], [0.2, 0.1, 0.6, 0.3, 0.4 * 0.2], rtol=1e-6)
  np.testing.assert_array_equal(box[1], 0.0)  # nobody visible -> zeros, not inf


def test_pose_encoder_tokens_and_validity():
  cfg = get_model_config("tiny")
  enc = stgcn.PoseEncoder(cfg, width=32)
  b, n, p, w = 2, 2, 2, 16
  pose = jax.random.uniform(jax.random.PRNGKey(0), (b, n, p, w, 68, 3))
  mask = np.ones((b, n, p, w), np.float32)
  mask[0, 1, 1, 8:] = 0.0  # person 1 of video (0, 1) leaves at frame 8
  index = jnp.broadcast_to(jnp.array([6, 7, 8]), (b, n, 3))
  def run(k, pose, mask):
    variables = enc.init(k, pose, mask, index, train=False)
    return enc.apply(variables, pose, mask, index, train=False)

  tokens, valid = run_o0(run, jax.random.PRNGKey(1), pose, jnp.asarray(mask))
  assert tokens.shape == (b, n, 3, p, 32) and valid.shape == (b, n, 3, p)
  np.testing.assert_array_equal(valid[0, 1, :, 1], [1, 1, 0])
  assert float(valid.sum()) == b * n * 3 * p - 1


def test_pose_classifier_logits_and_shared_stgcn_name():
  cfg = get_model_config("tiny")
  clf = stgcn.PoseClassifier(cfg)
  pose = jax.random.uniform(jax.random.PRNGKey(0), (2, 2, 16, 68, 3))
  mask = jnp.ones((2, 2, 16)).at[1, 1].set(0.0)
  other = pose.at[1, 1].set(jax.random.uniform(jax.random.PRNGKey(2), (16, 68, 3)))

  def run(k, pose, other, mask):
    variables = clf.init(k, pose, mask)
    logits, _ = clf.apply(variables, pose, mask, train=True, mutable=["batch_stats"])
    return variables, logits, clf.apply(variables, pose, mask), clf.apply(variables, other, mask)

  variables, logits, eval_a, eval_b = run_o0(run, jax.random.PRNGKey(1), pose, other, mask)
  assert set(variables["params"]) == {"stgcn", "classifier"}
  assert logits.shape == (2, cfg.num_classes)
  # An absent person's keypoints do not change the logits (eval: running statistics).
  np.testing.assert_allclose(eval_a, eval_b, atol=1e-6)


def test_wrong_joint_count_is_a_clear_error():
  cfg = get_model_config("tiny")
  with pytest.raises(ValueError, match="68"):
    stgcn.make_stgcn(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 25, 3)), train=False)
