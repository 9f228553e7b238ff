"""Shared layer helpers: masked mean, per-example attention masks, partitioned initialisers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tribert_jax.models import layers


def test_masked_mean_counts_only_real_entries():
  x = jnp.array([[1.0, 2.0, 30.0], [4.0, 5.0, 6.0]])
  mask = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
  np.testing.assert_allclose(layers.masked_mean(x, mask, axis=1), [1.5, 0.0])


def test_attention_ignores_masked_keys_per_example():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 3, 2, 4)), jnp.float32) for _ in range(3))
  mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  out = layers.dot_product_attention(q, k, v, mask)
  v2 = v.at[0, 2].set(100.0).at[1, 1:].set(-50.0)
  np.testing.assert_allclose(out, layers.dot_product_attention(q, k, v2, mask), atol=1e-5)
  # Example 1 has one real key: the output is exactly its value.
  np.testing.assert_allclose(out[1], jnp.broadcast_to(v[1, 0], (3, 2, 4)), atol=1e-6)


def test_dense_and_conv_parameters_carry_logical_names():
  d = layers.dense(3, dtype=jnp.float32, param_dtype=jnp.float32)
  params = d.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))["params"]
  assert params["kernel"].names == ("embed", "mlp") and params["bias"].names == ("mlp",)
  c = layers.conv(3, (3, 3), dtype=jnp.float32, param_dtype=jnp.float32)
  params = c.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 2)))["params"]
  assert params["kernel"].names == (None, None, "conv_in", "conv_out")
  assert nn.meta.unbox(params)["kernel"].shape == (3, 3, 2, 3)


def test_bfloat16_compute_keeps_float32_params():
  d = layers.dense(3, dtype=jnp.bfloat16, param_dtype=jnp.float32)
  v = d.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
  assert nn.meta.unbox(v)["params"]["kernel"].dtype == jnp.float32
  assert d.apply(v, jnp.ones((1, 2))).dtype == jnp.bfloat16


def test_unknown_activation_is_an_error():
  with pytest.raises(KeyError):
    layers.activation("swishy")
