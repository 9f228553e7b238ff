"""Stream embeddings (<SOS>, [MASK], frame/slot), BERT layers and the stacked encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from tribert_jax.models import transformer


def test_random_masking_rate_and_sos_never_masked():
  cfg = get_model_config("tiny")
  cfg.transformer.max_frames = 64
  emb = transformer.StreamEmbedding(cfg, mask_probability=0.15, deterministic=False)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (8, 60, 4, 32))
  valid = jnp.ones((8, 60, 4))
  rngs = {"params": jax.random.PRNGKey(1), "masking": jax.random.PRNGKey(2),
          "dropout": jax.random.PRNGKey(3)}
  variables = emb.init(rngs, tokens, valid)
  mask_embedding = variables["params"]["mask_embedding"].value
  # Count replaced tokens by intercepting the [MASK] replacement: compare with tokens set to it.
  eval_emb = transformer.StreamEmbedding(cfg, mask_probability=0.15, deterministic=True)
  clean, mask = eval_emb.apply(variables, tokens, valid)
  masked_tokens = jnp.broadcast_to(mask_embedding, tokens.shape)
  all_masked, _ = eval_emb.apply(variables, masked_tokens, valid)
  cfg.transformer.dropout = 0.0
  noisy, _ = transformer.StreamEmbedding(cfg, 0.15, deterministic=False).apply(
      variables, tokens, valid, rngs={"masking": jax.random.PRNGKey(4)})
  is_masked = np.all(np.isclose(noisy, all_masked, atol=1e-5), axis=-1)
  np.testing.assert_allclose(noisy[:, 0], clean[:, 0], atol=1e-6)  # <SOS> untouched
  rate = is_masked[:, 1:].mean()
  assert 0.12 < rate < 0.18, rate
  assert np.all(np.isclose(noisy, clean, atol=1e-5).all(-1) | is_masked)
  assert mask.shape == (8, 1 + 240)


def test_global_sos_is_the_mean_of_valid_tokens_per_slot():
  cfg = get_model_config("tiny", "release")
  emb = transformer.StreamEmbedding(cfg, 0.0, deterministic=True)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 2, 32))
  valid = jnp.ones((2, 3, 2)).at[0, :, 1].set(0.0)  # slot 1 of example 0 never present
  variables = emb.init(jax.random.PRNGKey(1), tokens, valid)
  x, mask = emb.apply(variables, tokens, valid)
  assert x.shape == (2, 2 + 6, 32)
  np.testing.assert_array_equal(mask[0, :2], [1, 0])
  np.testing.assert_array_equal(mask[1, :2], [1, 1])


def test_too_many_frames_is_a_clear_error():
  cfg = get_model_config("tiny")
  emb = transformer.StreamEmbedding(cfg, 0.0)
  with pytest.raises(ValueError, match="max_frames"):
    emb.init(jax.random.PRNGKey(0), jnp.zeros((1, cfg.transformer.max_frames, 2, 32)),
             jnp.ones((1, cfg.transformer.max_frames, 2)))


@pytest.mark.parametrize("co_attention", [True, False])
def test_streams_exchange_information_only_through_co_attention(co_attention):
  cfg = get_model_config("tiny")
  cfg.transformer.use_co_attention = co_attention
  enc = transformer.TriBERTEncoder(cfg, deterministic=True)
  rng = np.random.default_rng(0)
  streams = {"visual": rng.standard_normal((2, 7, 32)), "pose": rng.standard_normal((2, 7, 32)),
             "audio": rng.standard_normal((2, 7, 16))}
  streams = {k: jnp.asarray(v, jnp.float32) for k, v in streams.items()}
  masks = {k: jnp.ones((2, 7)) for k in streams}
  variables = enc.init(jax.random.PRNGKey(0), streams, masks)
  base = enc.apply(variables, streams, masks)
  changed = enc.apply(variables, {**streams, "audio": streams["audio"] + 1.0}, masks)
  assert np.allclose(base["visual"], changed["visual"]) != co_attention
  assert {k: v.shape for k, v in base.items()} == {k: v.shape for k, v in streams.items()}


def test_transformer_layer_padding_is_per_example():
  layer = transformer.TransformerLayer(num_heads=2, intermediate_size=16)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 8))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], jnp.float32)
  v = layer.init(jax.random.PRNGKey(1), x, mask)
  y = layer.apply(v, x, mask)
  y2 = layer.apply(v, x.at[0, 3:].set(50.0), mask)
  np.testing.assert_allclose(y[0, :3], y2[0, :3], atol=1e-5)
  np.testing.assert_allclose(y[1], y2[1], atol=1e-6)
