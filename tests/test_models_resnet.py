"""ResNet trunk: shapes, torchvision-like names, BatchNorm in train/eval and frozen mode."""

import jax
import numpy as np

from tribert_jax.models.resnet import ResNet


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def test_resnet_shapes_names_and_batch_norm_modes():
  model = ResNet(stage_sizes=(1, 2, 1, 1), width=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  frozen = ResNet(stage_sizes=(1, 2, 1, 1), width=4, frozen_batch_norm=True)

  def run(k, x):
    variables = model.init(k, x, train=False)
    y = model.apply(variables, x, train=False)
    _, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    frozen_out, frozen_mutated = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
    return variables, y, mutated, frozen_out, frozen_mutated

  variables, y, mutated, frozen_out, frozen_mutated = run_o0(run, jax.random.PRNGKey(1), x)
  params = variables["params"]
  assert {"conv1", "bn1", "layer1_0", "layer2_0", "layer2_1", "layer4_0"} <= set(params)
  assert "downsample_conv" in params["layer2_0"] and "downsample_conv" not in params["layer2_1"]
  assert y.shape == (2, 2, 2, 4 * 8 * 4)
  changed = [not np.allclose(a, b) for a, b in
             zip(jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(mutated["batch_stats"]))]
  assert all(changed)
  # Frozen BatchNorm: training mode uses (and keeps) the running statistics.
  np.testing.assert_allclose(frozen_out, y, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(variables["batch_stats"]),
                  jax.tree.leaves(frozen_mutated["batch_stats"])):
    np.testing.assert_array_equal(a, b)
