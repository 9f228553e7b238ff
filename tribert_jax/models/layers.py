"""Shared layer constructors: Dense/Conv/norm layers whose parameters carry logical axis names."""

from __future__ import annotations

import functools
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Logical axis names used by every parameter of the model (rules in configs/parts/model.py).
EMBED = "embed"  # the model width of a stream / a feature vector
MLP = "mlp"  # the wide side of a dense layer (intermediate, projections)
HEADS = "heads"  # attention heads
CLASSES = "classes"  # classifier outputs
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
NORM = "norm"  # scale/bias of normalisation layers
VOCAB = "vocab"  # rows of embedding tables (frames, slots)
JOINTS = "joints"  # graph nodes of the pose graph


def to_dtype(name: str | Dtype) -> Dtype:
  """Turns a config string ('float32', 'bfloat16') into a jnp dtype."""
  return jnp.dtype(name) if isinstance(name, str) else name


def partitioned(init: Any, names: Sequence[str | None]) -> Any:
  """An initializer whose parameter is boxed with logical axis names for sharding."""
  return nn.with_logical_partitioning(init, tuple(names))


def dense(features: int, *, dtype: Dtype, param_dtype: Dtype, names=(EMBED, MLP),
          use_bias: bool = True, kernel_init=nn.initializers.lecun_normal(),
          name: str | None = None) -> nn.Dense:
  """nn.Dense with a logically partitioned kernel [in, out] and bias [out]."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=partitioned(kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros_init(), (names[-1],)), name=name)


def conv(features: int, kernel: Sequence[int], *, dtype: Dtype, param_dtype: Dtype,
         strides: Sequence[int] | int = 1, padding: Any = "SAME", use_bias: bool = True,
         kernel_init=nn.initializers.lecun_normal(), name: str | None = None) -> nn.Conv:
  """nn.Conv (channels last) with kernel axes (spatial..., conv_in, conv_out)."""
  kernel = tuple(kernel)
  strides = (strides,) * len(kernel) if isinstance(strides, int) else tuple(strides)
  names = (None,) * len(kernel) + (CONV_IN, CONV_OUT)
  return nn.Conv(
      features, kernel, strides=strides, padding=padding, use_bias=use_bias, dtype=dtype,
      param_dtype=param_dtype, kernel_init=partitioned(kernel_init, names),
      bias_init=partitioned(nn.initializers.zeros_init(), (CONV_OUT,)), name=name,
      conv_general_dilated=conv_general_dilated)


# XLA:CPU computes a convolution's weight gradient as another convolution, with the batch as its
# contraction axis and layout transposes around it; for a 1x1 kernel it is a plain matmul. On the
# 2-core VM, weight gradient alone, the matmul was 2.0-2.7x faster for the ResNet's 56 x 56 1x1
# shapes with XLA's Eigen convolutions (tribert_jax/xla_cpu_flags.py; 5.6-8.8x with YNNPACK's),
# and the paper-size train step with the release's work at batch 2 took 11.1-11.2 s with it,
# 12.4-12.7 s without (benchmarks/README "Convolution weight gradients"). For 3x3 kernels the
# matmul form (one per kernel offset, over shifted copies of the input) lost to Eigen's (0.3-0.8x)
# and, inside the step, cost memory: not used.
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, precision: Any = None, **kwargs
                         ) -> jax.Array:
  """jax.lax.conv_general_dilated (every layers.conv), with the weight gradient of unpadded 1x1
  NHWC/HWIO convolutions (any stride) computed as a matmul: the same forward, input gradient and
  values (to float rounding). Every other convolution is lax.conv_general_dilated itself."""
  one_by_one = (
      lhs.ndim == 4 and not kwargs and feature_group_count == 1 and rhs.shape[:2] == (1, 1)
      and all(d == 1 for d in (lhs_dilation or ())) and all(d == 1 for d in (rhs_dilation or ()))
      and (padding in ("SAME", "VALID") if isinstance(padding, str)
           else all(tuple(pair) == (0, 0) for pair in padding))
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if not one_by_one:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
  return _conv1x1(lhs, rhs, tuple(int(s) for s in window_strides), precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv1x1(x, w, strides, precision):
  return jax.lax.conv_general_dilated(x, w, strides, "VALID", dimension_numbers=_NHWC,
                                      precision=precision)


def _conv1x1_fwd(x, w, strides, precision):
  return _conv1x1(x, w, strides, precision), (x, w)


def _conv1x1_bwd(strides, precision, residuals, g):
  """dx: XLA's (the transposed convolution); dw[0, 0] = sum over (n, i, j) of
  x[n, i*s0, j*s1, :] (outer) g[n, i, j, :]: one matmul over the sampled positions."""
  x, w = residuals
  conv = lambda x_: jax.lax.conv_general_dilated(  # noqa: E731
      x_, w, strides, "VALID", dimension_numbers=_NHWC, precision=precision)
  dx = jax.vjp(conv, x)[1](g)[0]
  sampled = x[:, ::strides[0], ::strides[1], :]  # ceil(size / stride) = the output's size
  dw = jax.lax.dot_general(sampled.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]),
                           (((0,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=jnp.float32)
  return dx, dw.reshape(w.shape).astype(w.dtype)


_conv1x1.defvjp(_conv1x1_fwd, _conv1x1_bwd)


DECONV_IMPLS = ("conv_transpose", "matmul")


def conv_transpose(features: int, kernel: Sequence[int], *, dtype: Dtype, param_dtype: Dtype,
                   strides: Sequence[int], name: str | None = None,
                   impl: str = "conv_transpose") -> nn.Module:
  """The U-Net's de-convolution (padding "SAME") with partitioned kernel axes.

  impl "conv_transpose": nn.ConvTranspose (XLA's transposed convolution). impl "matmul": the same
  layer, parameters and values (kernel [k..., C_in, C_out], bias) computed as one matmul and a
  depth-to-space reshape, for kernels equal to their strides (no overlapping windows: each input
  position writes its own block). XLA:CPU runs the transposed convolution's weight gradient as
  an unfused base-dilated convolution: ~5 s of the paper-size train step at batch 1
  (benchmarks/README "Where the step's time goes"); the matmul's backward is two matmuls.
  """
  kernel, strides = tuple(kernel), tuple(strides)
  names = (None,) * len(kernel) + (CONV_IN, CONV_OUT)
  kernel_init = partitioned(nn.initializers.lecun_normal(), names)
  bias_init = partitioned(nn.initializers.zeros_init(), (CONV_OUT,))
  if impl == "conv_transpose":
    return nn.ConvTranspose(
        features, kernel, strides=strides, padding="SAME", dtype=dtype,
        param_dtype=param_dtype, kernel_init=kernel_init, bias_init=bias_init, name=name)
  if impl != "matmul":
    raise ValueError(f"de-convolution impl {impl!r}: expected one of {DECONV_IMPLS}")
  if kernel != strides or len(kernel) != 2:
    raise ValueError(f"impl='matmul' needs a 2-D kernel equal to its strides; got kernel "
                     f"{kernel}, strides {strides}")
  return BlockDeconv(features, kernel, dtype=dtype, param_dtype=param_dtype,
                     kernel_init=kernel_init, bias_init=bias_init, name=name)


class BlockDeconv(nn.Module):
  """nn.ConvTranspose(features, kernel, strides=kernel, padding="SAME") as a matmul: input
  position (i, j) writes output block [i*k0:(i+1)*k0, j*k1:(j+1)*k1] = x[i, j] @ kernel, with the
  kernel flipped spatially (lax.conv_transpose's orientation: output offset a takes tap
  k0 - 1 - a)."""
  features: int
  kernel_size: tuple[int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k0, k1 = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k0, k1, x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    *lead, h, w, _ = x.shape
    y = jnp.einsum("...hwc,abco->...hawbo", x, kernel[::-1, ::-1])
    return y.reshape(*lead, h * k0, w * k1, self.features) + bias


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int] | None = None,
             padding: Any = "VALID") -> jax.Array:
  """Max pooling over the spatial axes of x [batch..., spatial..., C], nn.max_pool's contract.

  The same values and gradients as nn.max_pool (the gradient goes to the first maximum of each
  window in row-major order, as XLA's select-and-scatter does), computed as a maximum over the
  window's strided slices with a hand-written backward. XLA:CPU expands select-and-scatter into
  iota index tensors and tuple-valued reduce-windows: ~135 ms of traced work per cpu TriBERT
  step, which ran beside other work (the step time did not change), and 15 % of the cpu
  Sound-of-Pixels step (benchmarks/README.md, "Where the step's time goes").
  """
  window = tuple(int(w) for w in window)
  strides = window if strides is None else tuple(int(s) for s in strides)
  spatial = x.shape[x.ndim - 1 - len(window):-1]
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(spatial, window, strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  if len(window) != len(strides) or len(pads) != len(window):
    raise ValueError(f"max_pool: window {window}, strides {strides} and padding {pads} must "
                     "name the same number of spatial axes")
  return _max_pool(x, window, strides, pads)


def _pool_geometry(shape, window, strides, pads):
  """Full-rank padding config, output spatial sizes and the first spatial axis."""
  lead = len(shape) - 1 - len(window)
  config = [(0, 0, 0)] * lead + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  out = tuple((size + lo + hi - k) // s + 1
              for size, (lo, hi), k, s in zip(shape[lead:-1], pads, window, strides))
  return config, out, lead


def _window_slices(xp, window, strides, out, lead):
  """The window's strided slices of the padded input, one per offset in row-major order."""
  for offset in itertools.product(*(range(k) for k in window)):
    start = (0,) * lead + offset + (0,)
    limit = (xp.shape[:lead] + tuple(o + s * (n - 1) + 1 for o, s, n in
                                     zip(offset, strides, out)) + xp.shape[-1:])
    yield offset, jax.lax.slice(xp, start, limit, (1,) * lead + strides + (1,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  config, out, lead = _pool_geometry(x.shape, window, strides, pads)
  xp = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), config)
  result = None
  for _, piece in _window_slices(xp, window, strides, out, lead):
    result = piece if result is None else jnp.maximum(result, piece)
  return result


def _max_pool_fwd(x, window, strides, pads):
  y = _max_pool(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, residuals, g):
  x, y = residuals
  config, out, lead = _pool_geometry(x.shape, window, strides, pads)
  xp = jax.lax.pad(x, jnp.array(-jnp.inf, x.dtype), config)
  unclaimed = jnp.ones(y.shape, bool)
  grad = jnp.zeros(xp.shape, g.dtype)
  zero = jnp.array(0, g.dtype)
  for offset, piece in _window_slices(xp, window, strides, out, lead):
    first = unclaimed & (piece == y)
    unclaimed = unclaimed & ~first
    # The transpose of the strided slice: interior padding puts each output at its input.
    scatter = [(0, 0, 0)] * lead + [
        (o, size - o - s * (n - 1) - 1, s - 1)
        for o, s, n, size in zip(offset, strides, out, xp.shape[lead:-1])] + [(0, 0, 0)]
    grad = grad + jax.lax.pad(jnp.where(first, g, zero), zero, scatter)
  unpad = tuple(slice(lo, lo + size) for (lo, _, _), size in zip(config, x.shape))
  return (grad[unpad],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def batch_norm(train: bool, *, dtype: Dtype, param_dtype: Dtype, momentum: float = 0.9,
               scale_init=nn.initializers.ones_init(), name: str | None = None) -> nn.BatchNorm:
  """BatchNorm: batch statistics in training, running averages (batch_stats) in eval."""
  return nn.BatchNorm(
      use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
      param_dtype=param_dtype, scale_init=partitioned(scale_init, (NORM,)),
      bias_init=partitioned(nn.initializers.zeros_init(), (NORM,)), name=name)


def layer_norm(*, dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
  """LayerNorm (BERT epsilon) with partitioned scale/bias."""
  return nn.LayerNorm(
      epsilon=1e-12, dtype=dtype, param_dtype=param_dtype,
      scale_init=partitioned(nn.initializers.ones_init(), (NORM,)),
      bias_init=partitioned(nn.initializers.zeros_init(), (NORM,)), name=name)


def embed(num: int, features: int, *, param_dtype: Dtype, dtype: Dtype,
          name: str | None = None) -> nn.Embed:
  """nn.Embed (learned frame/slot embeddings) with a partitioned table [vocab, embed]."""
  return nn.Embed(
      num, features, dtype=dtype, param_dtype=param_dtype,
      embedding_init=partitioned(nn.initializers.normal(0.02), (VOCAB, EMBED)), name=name)


def activation(name: str):
  """Activation by config name."""
  return {"relu": nn.relu, "gelu": lambda x: nn.gelu(x, approximate=False), "tanh": jnp.tanh,
          "sigmoid": nn.sigmoid, "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),
          "none": lambda x: x}[name]


def masked_mean(x: jax.Array, mask: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
  """Mean of x over axis counting only entries where mask (broadcastable to x) is 1."""
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  return jnp.sum(x * mask, axis) / jnp.maximum(jnp.sum(mask, axis), 1.0)


def attention_bias(key_mask: jax.Array) -> jax.Array:
  """Key validity [b, Lk] (1 = real token) -> additive bias [b, 1, 1, Lk] (per example)."""
  return jnp.where(key_mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          key_mask: jax.Array, dropout: nn.Module | None = None) -> jax.Array:
  """Multi-head attention core: q [b,Lq,H,d], k/v [b,Lk,H,d], key_mask [b,Lk] -> [b,Lq,H,d]."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32)
  logits = logits / jnp.sqrt(query.shape[-1]).astype(jnp.float32) + attention_bias(key_mask)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout is not None:
    probs = dropout(probs)
  return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)
