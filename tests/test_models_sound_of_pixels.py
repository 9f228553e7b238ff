"""Sound-of-Pixels baseline (tiny config): shapes, conditioning, gradients, and one training
step + evaluation through the trainer's pipeline, loss and separation evaluation."""

import os

# The trainer's jits take no compiler options: ask for the cheapest XLA CPU backend optimisation
# for the whole session (must precede its first compilation; test_train.py does the same).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import sound_of_pixels as sop_config  # noqa: E402
from tribert_jax import losses  # noqa: E402
from tribert_jax import train  # noqa: E402
from tribert_jax.models import sound_of_pixels  # noqa: E402


def compile_fast(fn, *args):
  """jit + compile at XLA optimisation level 0 (these one-off programs compile ~2x faster)."""
  return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def tiny_model():
  """(config.model, model, variables, inputs) at the tiny size, batch 2."""
  cfg = sop_config.get_config("tiny").model
  model = sound_of_pixels.SoundOfPixels(cfg)
  inputs = sound_of_pixels.example_inputs(cfg, batch_size=2, key=jax.random.PRNGKey(0))
  init = compile_fast(lambda k, x: model.init({"params": k}, x, train=False),
                      jax.random.PRNGKey(1), inputs)
  return cfg, model, init(jax.random.PRNGKey(1), inputs), inputs


def test_output_shapes_and_one_mask_per_video(tiny_model):
  cfg, model, variables, inputs = tiny_model
  # Video 1 of example 0 shows the same frames as video 0: identical masks; example 1 differs.
  frames = inputs["frames"].at[0, 1].set(inputs["frames"][0, 0])
  inputs = dict(inputs, frames=frames)
  outputs, intermediates = compile_fast(lambda v, x: model.apply(v, x, train=False),
                                        variables, inputs)(variables, inputs)
  assert set(outputs) == {"mask_logits"}
  assert outputs["mask_logits"].shape == (2, 2, 256, 256)
  assert intermediates["visual_feature"].shape == (2, 2, cfg.num_channels)
  # Dilated ResNet-18: output stride 16 (32 x 32 frames -> 2 x 2 maps).
  side = cfg.input.image_size // 16
  assert intermediates["visual_channel_maps"].shape == (2, 2, side, side, cfg.num_channels)
  visual = np.asarray(intermediates["visual_feature"])
  assert np.all((visual > 0) & (visual < 1))
  logits = np.asarray(outputs["mask_logits"])
  np.testing.assert_allclose(logits[0, 0], logits[0, 1], atol=1e-5)
  assert not np.allclose(logits[1, 0], logits[1, 1])


def test_synthesizer_is_linear_in_the_audio_channels():
  synthesizer = sound_of_pixels.Synthesizer()
  visual = jax.random.uniform(jax.random.PRNGKey(0), (1, 2, 3))
  audio = jax.random.normal(jax.random.PRNGKey(1), (1, 4, 5, 3))
  variables = synthesizer.init(jax.random.PRNGKey(2), visual, audio)
  variables = jax.tree.map(lambda x: x + 0.5, variables)  # alpha 1.5, beta 0.5
  logits = synthesizer.apply(variables, visual, audio)
  expected = np.einsum("bnk,bftk->bnft", 1.5 * np.asarray(visual), np.asarray(audio)) + 0.5
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter(tiny_model):
  cfg, model, variables, inputs = tiny_model
  rng = np.random.default_rng(0)
  targets = dict(gt_masks=jnp.asarray(rng.random((2, 2, 256, 256)) > 0.5, jnp.float32),
                 weight=jnp.asarray(rng.random((2, 256, 256)) + 0.1, jnp.float32),
                 labels=jnp.zeros((2, 2, cfg.num_classes)), valid=jnp.ones((2,)))

  def loss(params):
    (outputs, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                  inputs, train=True, mutable=["batch_stats"])
    total, terms = losses.tribert_loss(outputs, targets, cfg.loss_weights)
    return total, terms

  grads, terms = compile_fast(jax.grad(loss, has_aux=True), variables["params"])(
      variables["params"])
  assert set(terms) == {"separation"}  # no classifier, so no classification terms
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]
  assert not dead, f"parameters without gradient: {dead}"
  assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)


def test_unet_depth_must_divide_the_spectrogram():
  cfg = sop_config.get_config("tiny").model
  cfg.unet.depth = 9
  model = sound_of_pixels.SoundOfPixels(cfg)
  with pytest.raises(ValueError, match="depth"):
    jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                      sound_of_pixels.example_inputs(cfg), train=False))


@pytest.mark.parametrize("size", ["paper", "cpu", "tiny"])
def test_config_sizes_build(size):
  config = sop_config.get_config(size)
  assert config.phase == "sound_of_pixels" and config.model.name == "sound_of_pixels"
  assert config.model.input.image_size == config.data.image_size
  # The same training budget as TriBERT pre-training at that size.
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  reference = pretrain.get_config(size)
  assert config.num_train_steps == reference.num_train_steps
  assert config.data.batch_size == reference.data.batch_size
  optim, reference_optim = config.optim.to_dict(), reference.optim.to_dict()
  multipliers, reference_multipliers = optim.pop("lr_multipliers"), reference_optim.pop(
      "lr_multipliers")
  assert optim == reference_optim
  # TriBERT's separation-network rate goes to Sound-of-Pixels' separation modules.
  factor = reference_multipliers.get("separation_net")
  expected = {} if factor is None else {"audio_network": factor, "synthesizer": factor}
  assert multipliers == expected
  model = sound_of_pixels.SoundOfPixels(config.model)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                                sound_of_pixels.example_inputs(config.model),
                                                train=False))
  assert set(variables["params"]) == {"video_network", "audio_network", "synthesizer"}


def test_trains_and_evaluates_through_the_trainer(synthmusic_tiny, tmp_path):
  """One step through the real input pipeline, TriBERT's loss and the separation evaluation."""
  config = sop_config.get_config("tiny")
  config.data.root = str(synthmusic_tiny)
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["step"] == 1
  train_scalars = result["train"]
  assert "train/loss/separation" in train_scalars
  assert not any(k.startswith("train/loss/") and k != "train/loss/separation"
                 for k in train_scalars)
  assert all(np.isfinite(v) for v in train_scalars.values())
  evaluation = result["eval"]
  assert evaluation["num_mixtures"] > 0
  assert np.isfinite(evaluation["mixture_sdr"]) and np.isfinite(evaluation["ideal_mask_sdr"])
  assert np.isfinite(evaluation["sdr"])
