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


def _numpy_max_pool(x, window, strides, pads, g):
  """Max pooling of NHWC x and its gradient for upstream g, window by window in NumPy: the
  gradient goes to the first maximum in row-major window order (XLA's select-and-scatter,
  PyTorch's max_pool2d)."""
  (pt, pb), (pl, pr) = pads
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
  (kh, kw), (sh, sw) = window, strides
  oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
  y = np.zeros((x.shape[0], oh, ow, x.shape[3]), x.dtype)
  gp = np.zeros(xp.shape, x.dtype)
  for n in range(x.shape[0]):
    for c in range(x.shape[3]):
      for i in range(oh):
        for j in range(ow):
          win = xp[n, i * sh:i * sh + kh, j * sw:j * sw + kw, c]
          a, b = np.unravel_index(np.argmax(win), win.shape)
          y[n, i, j, c] = win[a, b]
          gp[n, i * sh + a, j * sw + b, c] += g[n, i, j, c]
  return y, gp[:, pt:pt + x.shape[1], pl:pl + x.shape[2]]


@pytest.mark.parametrize("shape,window,strides,pads", [
    ((2, 9, 11, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet stem pool, overlapping windows
    ((2, 8, 8, 3), (2, 2), (2, 2), ((0, 0), (0, 0))),  # U-Net / VGG pools
    ((2, 7, 9, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),  # a remainder row/column is dropped
    ((1, 6, 6, 2), (3, 3), (1, 1), ((1, 1), (1, 1))),  # stride 1: every input in 9 windows
])
def test_max_pool_values_and_first_maximum_gradient_match_numpy(shape, window, strides, pads):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 3, size=shape).astype(np.float32)  # many ties inside windows
  y, vjp = jax.vjp(lambda v: layers.max_pool(v, window, strides, pads), jnp.asarray(x))
  g = rng.standard_normal(y.shape).astype(np.float32)
  y_ref, dx_ref = _numpy_max_pool(x, window, strides, pads, g)
  np.testing.assert_array_equal(y, y_ref)
  np.testing.assert_allclose(vjp(jnp.asarray(g))[0], dx_ref, atol=1e-6)
  # And flax's nn.max_pool (XLA's reduce-window / select-and-scatter) agrees.
  y_flax, vjp_flax = jax.vjp(
      lambda v: nn.max_pool(v, window, strides=strides, padding=pads), jnp.asarray(x))
  np.testing.assert_array_equal(y, y_flax)
  np.testing.assert_allclose(vjp(jnp.asarray(g))[0], vjp_flax(jnp.asarray(g))[0], atol=1e-6)


def test_max_pool_same_padding_over_three_axes_and_bfloat16():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 5, 7, 4)), jnp.bfloat16)
  y = layers.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
  assert y.dtype == jnp.bfloat16 and y.shape == (2, 2, 3, 4, 4)
  np.testing.assert_array_equal(
      y, nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME"))
  dx = jax.grad(lambda v: jnp.sum(layers.max_pool(v, (2, 2, 2), padding="SAME")
                                  .astype(jnp.float32)))(x)
  # Each output sends its gradient to exactly one input.
  assert dx.dtype == jnp.bfloat16 and float(jnp.sum(dx.astype(jnp.float32))) == y.size


def test_max_pool_rejects_mismatched_window_and_padding():
  with pytest.raises(ValueError, match="same number of spatial axes"):
    layers.max_pool(jnp.zeros((1, 4, 4, 1)), (2, 2), strides=(2, 2), padding=((0, 0),))


@pytest.mark.parametrize("lead", [(2,), (2, 3)])
def test_matmul_deconv_equals_conv_transpose_in_values_gradients_and_parameters(lead):
  # The "matmul" de-convolution must be nn.ConvTranspose(k, strides=k, "SAME") exactly: the same
  # parameter tree from the same rng, the same outputs, the same gradients.
  x = jax.random.normal(jax.random.PRNGKey(1), lead + (5, 6, 7))
  make = lambda impl: layers.conv_transpose(  # noqa: E731
      3, (2, 2), strides=(2, 2), dtype=jnp.float32, param_dtype=jnp.float32, impl=impl)
  reference, ours = make("conv_transpose"), make("matmul")
  variables = reference.init(jax.random.PRNGKey(0), x)
  ours_variables = ours.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ours_variables)
  for a, b in zip(jax.tree.leaves(nn.meta.unbox(variables)),
                  jax.tree.leaves(nn.meta.unbox(ours_variables))):
    np.testing.assert_array_equal(a, b)
  variables = jax.tree.map(lambda v: v + 0.1, nn.meta.unbox(variables))  # a non-zero bias
  assert ours.apply(variables, x).shape == lead + (10, 12, 3)
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), atol=1e-5)
  cotangent = jax.random.normal(jax.random.PRNGKey(2), lead + (10, 12, 3))
  grad = lambda layer: jax.grad(  # noqa: E731
      lambda v, x: jnp.sum(layer.apply(v, x) * cotangent), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(reference))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_matmul_deconv_needs_a_kernel_equal_to_its_strides():
  with pytest.raises(ValueError, match="kernel equal to its strides"):
    layers.conv_transpose(3, (3, 3), strides=(2, 2), dtype=jnp.float32,
                          param_dtype=jnp.float32, impl="matmul")
  with pytest.raises(ValueError, match="expected one of"):
    layers.conv_transpose(3, (2, 2), strides=(2, 2), dtype=jnp.float32,
                          param_dtype=jnp.float32, impl="pixel_shuffle")


def _numpy_conv1x1(x, w, b, strides, g):
  """A 1x1 convolution (no padding) and its gradients, as loops over the sampled positions."""
  s0, s1 = strides
  sampled = x[:, ::s0, ::s1, :]
  y = np.einsum("nijc,co->nijo", sampled, w[0, 0]) + b
  dw = np.einsum("nijc,nijo->co", sampled, g)[None, None]
  dx = np.zeros_like(x)
  dx[:, ::s0, ::s1, :] = np.einsum("nijo,co->nijc", g, w[0, 0])
  return y, dw, g.sum(axis=(0, 1, 2)), dx


@pytest.mark.parametrize("shape, strides, padding", [
    ((2, 6, 5, 3), (1, 1), "SAME"), ((2, 7, 6, 3), (2, 2), "SAME"),
    ((1, 5, 9, 4), (2, 1), "VALID"), ((3, 4, 4, 2), (1, 1), ((0, 0), (0, 0)))])
def test_one_by_one_conv_weight_gradient_as_matmul_matches_numpy(shape, strides, padding):
  # layers.conv routes 1x1 convolutions through a custom VJP whose weight gradient is a matmul;
  # values and all three gradients must be the convolution's (NumPy loops, and XLA's own).
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  layer = layers.conv(4, (1, 1), strides=strides, padding=padding, dtype=jnp.float32,
                      param_dtype=jnp.float32)
  variables = nn.meta.unbox(layer.init(jax.random.PRNGKey(0), x))
  variables = {"params": {"kernel": variables["params"]["kernel"],
                          "bias": jnp.asarray(rng.standard_normal(4), jnp.float32)}}
  y, vjp = jax.vjp(layer.apply, variables, jnp.asarray(x))
  g = rng.standard_normal(y.shape).astype(np.float32)
  (dvars, dx) = vjp(jnp.asarray(g))
  w, b = (np.asarray(v) for v in (variables["params"]["kernel"], variables["params"]["bias"]))
  y_ref, dw_ref, db_ref, dx_ref = _numpy_conv1x1(x, w, b, strides, g)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dvars["params"]["kernel"], dw_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dvars["params"]["bias"], db_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  # The matmul path is the one taken (a custom VJP in the program), and XLA's agrees.
  assert "custom_vjp_call" in str(jax.make_jaxpr(jax.grad(
      lambda v: jnp.sum(layer.apply(v, jnp.asarray(x)))))(variables))
  reference = lambda v, x: jax.lax.conv_general_dilated(  # noqa: E731
      x, v["params"]["kernel"], strides, padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + v["params"]["bias"]
  _, ref_vjp = jax.vjp(reference, variables, jnp.asarray(x))
  for a, b in zip(jax.tree.leaves(ref_vjp(jnp.asarray(g))), jax.tree.leaves((dvars, dx))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_larger_and_dilated_convolutions_stay_xla_convolutions():
  # Only unpadded, undilated 1x1 convolutions take the matmul weight gradient.
  x = jnp.ones((1, 6, 6, 2))
  for kernel, kwargs in [((3, 3), {}), ((1, 1), {"rhs_dilation": (2, 2)}),
                         ((1, 1), {"padding": ((1, 1), (0, 0))})]:
    w = jnp.ones(kernel + (2, 3))
    padding = kwargs.pop("padding", "SAME")
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: jnp.sum(layers.conv_general_dilated(
        x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), **kwargs))))(w))
    assert "custom_vjp_call" not in jaxpr, (kernel, kwargs)
