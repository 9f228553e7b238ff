"""Audio encoder: both layouts give one feature per mixture."""

import jax
import jax.numpy as jnp
import pytest

from configs.parts.model import get_model_config
from tribert_jax.models.audio_encoder import AudioEncoder


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


@pytest.mark.parametrize("encoder", ["vggish", "vgg7"])
def test_audio_encoder_feature_shape(encoder):
  cfg = get_model_config("tiny")
  cfg.audio.encoder = encoder
  model = AudioEncoder(cfg, width=16)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 256, 256))
  variables, y = run_o0(lambda k, x: (lambda v: (v, model.apply(v, x, train=False)))(
      model.init(k, x, train=False)), jax.random.PRNGKey(1), x)
  assert y.shape == (3, 16)
  if encoder == "vgg7":  # 256 / 2**7 = 2: a 2x2xC map flattened into the projection
    kernel = variables["params"]["projection"]["kernel"].value
    assert kernel.shape == (2 * 2 * cfg.audio.vgg7_channels[-1], 16)


def test_unknown_encoder_is_a_clear_error():
  cfg = get_model_config("tiny")
  cfg.audio.encoder = "resnet"
  with pytest.raises(ValueError, match="config.model.audio.encoder"):
    AudioEncoder(cfg, 16).init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256)), train=False)
