"""WSDDN scores, audio classifier and <SOS> poolers."""

import jax
import jax.numpy as jnp
import numpy as np

from tribert_jax.models import heads


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def softmax(x, axis):
  e = np.exp(x - x.max(axis, keepdims=True))
  return e / e.sum(axis, keepdims=True)


def test_wsddn_scores_are_the_softmax_product_in_unit_interval():
  rng = np.random.default_rng(0)
  cls, det = rng.standard_normal((2, 2, 6, 5)) * 3
  mask = np.ones((2, 6), np.float32)
  mask[1, 4:] = 0.0  # two padded regions in example 1
  got = np.asarray(heads.wsddn_scores(jnp.asarray(cls), jnp.asarray(det), jnp.asarray(mask)))
  assert got.shape == (2, 5) and np.all(got >= 0) and np.all(got <= 1)
  expected0 = (softmax(cls[0], -1) * softmax(det[0], 0)).sum(0)  # over classes, over regions
  expected1 = (softmax(cls[1, :4], -1) * softmax(det[1, :4], 0)).sum(0)
  np.testing.assert_allclose(got[0], expected0, rtol=1e-5)
  np.testing.assert_allclose(got[1], expected1, rtol=1e-5)  # padded regions ignored


def test_wsddn_without_regions_scores_zero():
  got = heads.wsddn_scores(jnp.ones((1, 3, 4)), jnp.ones((1, 3, 4)), jnp.zeros((1, 3)))
  np.testing.assert_array_equal(got, 0.0)


def test_heads_shapes_and_ranges():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 7, 16)) * 5
  mask = jnp.ones((3, 7)).at[0, 3:].set(0.0)
  head = heads.WSDDNHead(num_classes=4)
  scores = run_o0(lambda k: head.apply(head.init(k, x, mask), x, mask), jax.random.PRNGKey(1))
  assert scores.shape == (3, 4) and bool(jnp.all((scores >= 0) & (scores <= 1)))
  audio = heads.AudioClassifier(num_classes=4)
  logits = run_o0(lambda k: audio.apply(audio.init(k, x, mask), x, mask), jax.random.PRNGKey(1))
  assert logits.shape == (3, 4)
  pooler = heads.Pooler(width=5)
  v = pooler.init(jax.random.PRNGKey(1), x[:, :2], mask[:, :2])
  pooled = pooler.apply(v, x[:, :2], mask[:, :2])
  assert pooled.shape == (3, 5) and bool(jnp.all(pooled >= 0))  # ReLU pooler
  # Masked <SOS> slots do not count in the pooled mean.
  masked = jnp.ones((3, 2)).at[:, 1].set(0.0)
  np.testing.assert_allclose(pooler.apply(v, x[:, :2], masked), pooler.apply(v, x[:, :1],
                                                                             masked[:, :1]),
                             rtol=1e-5, atol=1e-6)
