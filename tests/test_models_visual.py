"""Decoupled spatial attention, object-token pooling and the visual segmentation network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from tribert_jax.models import visual


def softmax(x, axis):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


@pytest.mark.parametrize("normalization,pooling", [("space", "sum"), ("classes", "mean")])
def test_decoupled_attention_matches_its_definition(normalization, pooling):
  features = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 8))
  net = visual.DecoupledSpatialAttention(num_classes=5, normalization=normalization,
                                         pooling=pooling)
  variables = net.init(jax.random.PRNGKey(1), features, train=False)
  maps, scores = net.apply(variables, features, train=False)
  p = jax.tree.map(np.asarray, variables["params"])
  f = np.asarray(features)
  e = np.einsum("nhwd,dc->nhwc", f, p["expansive_conv"]["kernel"].value[0, 0]) + p[
      "expansive_conv"]["bias"].value
  d = np.einsum("nhwd,dc->nhwc", f, p["discriminative_conv"]["kernel"].value[0, 0]) + p[
      "discriminative_conv"]["bias"].value
  if normalization == "space":  # eq. (2) with F = exp: sums to 1 over the h x w map
    s_e = softmax(e.reshape(2, 12, 5), 1).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(s_e.sum((1, 2)), 1.0, rtol=1e-5)
  else:
    s_e = softmax(np.maximum(e, 0), -1)
  np.testing.assert_allclose(maps, s_e * d, rtol=1e-4, atol=1e-5)
  reduce = np.sum if pooling == "sum" else np.mean
  np.testing.assert_allclose(scores, reduce(s_e * d, axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_object_tokens_pool_the_top_classes_maps():
  rng = np.random.default_rng(0)
  maps = rng.random((2, 3, 3, 4)).astype(np.float32)
  feats = rng.standard_normal((2, 3, 3, 6)).astype(np.float32)
  scores = np.array([[0.1, 0.9, 0.5, 0.2], [0.7, 0.0, 0.1, 0.8]], np.float32)
  tokens = visual.pool_object_tokens(jnp.asarray(maps), jnp.asarray(scores), jnp.asarray(feats),
                                     2, "mean")
  for n, classes in enumerate([(1, 2), (3, 0)]):
    for k, c in enumerate(classes):
      expected = (maps[n, :, :, c, None] * feats[n]).mean((0, 1))
      np.testing.assert_allclose(tokens[n, k], expected, rtol=1e-5)


def test_visual_network_shapes_and_batch_stats():
  cfg = get_model_config("tiny")
  net = visual.VisualSegmentationNetwork(cfg)
  frames = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 3, 64, 64, 3))
  def run(k, frames):
    variables = net.init(k, frames, train=False)
    return (variables,) + net.apply(variables, frames, train=True, rngs={"dropout": k},
                                    mutable=["batch_stats"])

  variables, out, mutated = run_o0(run, jax.random.PRNGKey(1), frames)
  assert out["tokens"].shape == (2, 2, 3, 2, cfg.visual.feature_channels)
  assert out["attention_maps"].shape == (2, 2, 3, 2, 2, cfg.num_classes)
  assert out["class_scores"].shape == (2, 2, 3, cfg.num_classes)
  old = jax.tree.leaves(variables["batch_stats"])
  assert any(not np.allclose(a, b) for a, b in zip(old, jax.tree.leaves(mutated["batch_stats"])))
