"""Attention U-Net: shapes, per-video conditioning, both bottleneck fusions, depth checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from tribert_jax.models import unet


def run_o0(fn, *args):
  """fn(*args) compiled once at XLA optimisation level 0: a one-off test program compiles in
  about half the time (eager mode would compile every op separately)."""
  return jax.jit(fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})(*args)


def test_one_mask_per_video_conditioned_on_its_feature():
  cfg = get_model_config("tiny")
  model = unet.AttentionUNet(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 256, 256))
  fused = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 12))
  fused = fused.at[:, 2].set(fused[:, 0])  # videos 0 and 2 carry the same feature
  x_other = x.at[1].set(0.0)

  def run(k, x, x_other, fused):
    variables = model.init(k, x, fused, train=False)
    apply = lambda x: model.apply(variables, x, fused, train=False)
    return variables, apply(x), apply(x_other)

  variables, logits, other = run_o0(run, jax.random.PRNGKey(2), x, x_other, fused)
  assert logits.shape == (2, 3, 256, 256)
  np.testing.assert_allclose(logits[:, 0], logits[:, 2], atol=1e-5)
  assert not np.allclose(logits[:, 0], logits[:, 1])
  # The encoder runs per mixture: the parameters hold one encoder, batch_stats have no N axis.
  assert variables["batch_stats"]["down0"]["bn0"]["mean"].shape == (cfg.unet.base_channels,)
  # Another example's mixture does not leak into this one.
  np.testing.assert_allclose(other[0], logits[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["self_attention", "release"])
def test_bottleneck_fusion_uses_the_feature(kind):
  fusion = unet.BottleneckFusion(kind, num_heads=2)
  bottleneck = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
  # The release fusion uses f raw: its width must equal the bottleneck's channels.
  f = jax.random.normal(jax.random.PRNGKey(1), (2, 8 if kind == "release" else 6))
  v = fusion.init(jax.random.PRNGKey(2), bottleneck, f)
  out = fusion.apply(v, bottleneck, f)
  assert out.shape == bottleneck.shape
  other = fusion.apply(v, bottleneck, f.at[1].set(-f[1]))
  np.testing.assert_allclose(other[0], out[0], atol=1e-6)
  assert not np.allclose(other[1], out[1])


def test_attention_gate_scales_the_skip_into_zero_one():
  gate = unet.AttentionGate(inter_features=2)
  skip = jnp.ones((1, 4, 4, 3))
  g = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 4, 3))
  v = gate.init(jax.random.PRNGKey(1), skip, g)
  out = gate.apply(v, skip, g)
  assert bool(jnp.all((out >= 0) & (out <= 1)))


def test_depth_must_divide_the_spectrogram():
  cfg = get_model_config("tiny")
  cfg.unet.depth = 9
  with pytest.raises(ValueError, match="depth"):
    unet.AttentionUNet(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256)),
                                 jnp.zeros((1, 2, 4)), train=False)


def test_every_level_conditioning_starts_as_the_paper_network_and_learns_film():
  cfg = get_model_config("tiny")
  film_cfg = get_model_config("tiny")
  film_cfg.unet.conditioning = "every_level"
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 256, 256))
  fused = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 12))
  paper, film = unet.AttentionUNet(cfg), unet.AttentionUNet(film_cfg)

  def run(x, fused):
    v_film = nn.meta.unbox(film.init(jax.random.PRNGKey(2), x, fused, train=False))
    v_paper = {"params": {k: p for k, p in v_film["params"].items() if not k.startswith("film")},
               "batch_stats": v_film["batch_stats"]}
    loss = lambda params: jnp.mean(
        film.apply({"params": params, "batch_stats": v_film["batch_stats"]}, x, fused,
                   train=False) ** 2)
    grads = jax.grad(loss)(v_film["params"])
    return (v_film["params"], paper.apply(v_paper, x, fused, train=False),
            film.apply(v_film, x, fused, train=False), grads)

  params, out_paper, out_film, grads = run_o0(run, x, fused)
  film_names = sorted(k for k in params if k.startswith("film"))
  assert film_names == [f"film{i}" for i in range(cfg.unet.depth)]
  # Zero-initialised FiLM: the same function as the paper's bottleneck-only network at init.
  np.testing.assert_allclose(out_film, out_paper, atol=1e-6)
  # ...whose gamma/beta receive a gradient from the feature.
  for name in film_names:
    assert float(jnp.abs(grads[name]["dense"]["kernel"]).max()) > 0


def test_unknown_conditioning_is_a_config_error():
  cfg = get_model_config("tiny")
  cfg.unet.conditioning = "everywhere"
  with pytest.raises(ValueError, match="config.model.unet.conditioning"):
    jax.eval_shape(lambda: unet.AttentionUNet(cfg).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 256, 256)), jnp.zeros((1, 2, 4)), train=False))
