"""ResNet trunk: shapes, torchvision-like names, BatchNorm in train/eval and frozen mode."""

import jax
import jax.numpy as jnp
import numpy as np

from tribert_jax.models.resnet import ResNet


def test_resnet_shapes_names_and_batch_norm_modes():
  model = ResNet(stage_sizes=(1, 2, 1, 1), width=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  params = variables["params"]
  assert {"conv1", "bn1", "layer1_0", "layer2_0", "layer2_1", "layer4_0"} <= set(params)
  assert "downsample_conv" in params["layer2_0"] and "downsample_conv" not in params["layer2_1"]
  y = model.apply(variables, x, train=False)
  assert y.shape == (2, 2, 2, 4 * 8 * 4)
  _, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  changed = [not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(mutated["batch_stats"]))]
  assert all(changed)
  # Frozen BatchNorm: training mode uses (and keeps) the running statistics.
  frozen = ResNet(stage_sizes=(1, 2, 1, 1), width=4, frozen_batch_norm=True)
  out, mutated = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(mutated["batch_stats"])):
    np.testing.assert_array_equal(a, b)
