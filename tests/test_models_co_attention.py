"""Tri-modal co-attention against a direct NumPy computation, both concatenation modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from tribert_jax.models.co_attention import TriModalCoAttention
from tribert_jax.models.tribert import unbox

WIDTH, HEADS, INTERMEDIATE = 8, 2, 12


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def np_dense(p, x):
  return x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])


def np_layer_norm(p, x):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-12) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_attention(q, k, v, key_mask, heads):
  b, lq, w = q.shape
  d = w // heads
  q, k, v = (a.reshape(b, a.shape[1], heads, d) for a in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
  logits = np.where(key_mask[:, None, None, :] > 0, logits, -1e9)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, lq, w)


def np_co_attention(params, hidden, masks, concat):
  """The layer written out: Q of the target, K/V of the other streams, then output + FFN."""
  gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))
  out = {}
  for s in hidden:
    others = [o for o in sorted(hidden) if o != s]  # the layer's fixed (sorted) order
    if concat == "features":  # the release's order: vision, pose, audio
      others = [o for o in ("visual", "pose", "audio") if o != s]
    q = np_dense(params[f"{s}_query"], hidden[s])
    ks = [np_dense(params[f"{o}_key"], hidden[o]) for o in others]
    vs = [np_dense(params[f"{o}_value"], hidden[o]) for o in others]
    if concat == "tokens":
      k, v = np.concatenate(ks, 1), np.concatenate(vs, 1)
      m = np.concatenate([masks[o] for o in others], 1)
    else:
      # Each stream split into heads first, then concatenated per head (the release's layout).
      split = lambda y: y.reshape(*y.shape[:2], HEADS, -1)
      k = np.concatenate([split(x) for x in ks], -1).reshape(*ks[0].shape[:2], -1)
      v = np.concatenate([split(x) for x in vs], -1).reshape(*vs[0].shape[:2], -1)
      m = np.prod([masks[o] for o in others], axis=0)
    context = np_attention(q, k, v, m, HEADS)
    y = np_layer_norm(params[f"{s}_output_norm"],
                      hidden[s] + np_dense(params[f"{s}_output"], context))
    ff = params[f"{s}_feed_forward"]
    z = np_dense(ff["output"], gelu(np_dense(ff["intermediate"], y)))
    out[s] = np_layer_norm(ff["norm"], y + z)
  return out


def random_streams(lengths, widths, seed=0):
  rng = np.random.default_rng(seed)
  hidden = {s: rng.standard_normal((2, lengths[s], widths[s])).astype(np.float32)
            for s in lengths}
  masks = {}
  for s in lengths:
    m = (rng.random((2, lengths[s])) > 0.4).astype(np.float32)
    m[:, 0] = 1.0  # the <SOS> position is always real
    masks[s] = m
  return hidden, masks


@pytest.mark.parametrize("concat,lengths", [
    ("tokens", dict(visual=5, pose=7, audio=3)),
    ("features", dict(visual=6, pose=6, audio=6)),
])
def test_co_attention_matches_numpy(concat, lengths):
  widths = dict(visual=16, pose=12, audio=8)
  hidden, masks = random_streams(lengths, widths)
  layer = TriModalCoAttention(WIDTH, HEADS, INTERMEDIATE, concat, deterministic=True)
  variables = unbox(run_o0(layer.init, jax.random.PRNGKey(0), hidden, masks))
  # Random biases/norm parameters so every term of the computation is exercised.
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda x: jnp.asarray(np.asarray(x) + 0.1 * rng.standard_normal(x.shape),
                                              jnp.float32), variables["params"])
  # Under jit the streams arrive with sorted keys: the result must not depend on dict order.
  got = run_o0(layer.apply, {"params": params}, hidden, masks)
  expected = np_co_attention(jax.tree.map(np.asarray, params), hidden, masks, concat)
  for s in hidden:
    assert got[s].shape == hidden[s].shape
    np.testing.assert_allclose(np.asarray(got[s]), expected[s], rtol=1e-4, atol=1e-4)
  if concat == "features":  # keys/values of each other stream at half the co-attention width
    assert params["pose_key"]["kernel"].shape == (12, WIDTH // 2)


def test_masked_keys_and_other_examples_have_no_influence():
  lengths = dict(visual=5, pose=7, audio=3)
  hidden, masks = random_streams(lengths, dict(visual=16, pose=12, audio=8))
  layer = TriModalCoAttention(WIDTH, HEADS, INTERMEDIATE, "tokens", deterministic=True)
  changed = {k: v.copy() for k, v in hidden.items()}
  changed["pose"][0][masks["pose"][0] == 0] += 10.0  # padded pose tokens of example 0
  changed["pose"][1] += 5.0  # everything of example 1

  def run(k, hidden, changed):
    variables = layer.init(k, hidden, masks)
    return layer.apply(variables, hidden, masks), layer.apply(variables, changed, masks)

  base, out = run_o0(run, jax.random.PRNGKey(0), hidden, changed)
  for s in ("visual", "audio"):  # they only read pose keys/values
    np.testing.assert_allclose(out[s][0], base[s][0], atol=1e-5)
    assert not np.allclose(out[s][1], base[s][1])


def test_features_concat_needs_equal_lengths():
  hidden, masks = random_streams(dict(visual=5, pose=7, audio=5), dict(visual=8, pose=8, audio=8))
  layer = TriModalCoAttention(WIDTH, HEADS, INTERMEDIATE, "features")
  with pytest.raises(ValueError, match="equal sequence lengths"):
    layer.init(jax.random.PRNGKey(0), hidden, masks)
