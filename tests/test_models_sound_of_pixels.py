"""Sound-of-Pixels baseline (tiny config): shapes, conditioning, the original's initialisation
(initial masks ~0.5), the oracle visual vector, gradients, the original's optimiser groups, and
one training step + evaluation through the trainer's pipeline, loss and separation evaluation."""

import os

# The trainer's jits take no compiler options: ask for the cheapest XLA CPU backend optimisation
# for the whole session (must precede its first compilation; test_train.py does the same).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import flax.linen as nn  # noqa: E402
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


@pytest.fixture(scope="module")
def tiny_apply(tiny_model):
  """The tiny model's eval-mode forward, compiled once for the fixture's input shapes."""
  _, model, variables, inputs = tiny_model
  return compile_fast(lambda v, x: model.apply(v, x, train=False), variables, inputs)


def test_output_shapes_and_one_mask_per_video(tiny_model, tiny_apply):
  cfg, model, variables, inputs = tiny_model
  # Video 1 of example 0 shows the same frames as video 0: identical masks; example 1 differs.
  frames = inputs["frames"].at[0, 1].set(inputs["frames"][0, 0])
  inputs = dict(inputs, frames=frames)
  outputs, intermediates = tiny_apply(variables, inputs)
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


def test_original_initialisation_gives_masks_near_one_half(tiny_model, tiny_apply):
  """weights_init of the original: U-Net conv kernels N(0, 1e-3), BatchNorm scales N(1, 0.02),
  biases 0: the initial mask probabilities are ~0.5 on random input."""
  cfg, _, variables, inputs = tiny_model
  assert cfg.init == "sound_of_pixels"
  params = jax.tree.map(np.asarray, nn.meta.unbox(variables["params"]))
  unet = params["audio_network"]
  kernels = np.concatenate([unet[n]["kernel"].ravel() for n in unet if "kernel" in unet[n]])
  assert abs(kernels.std() - 1e-3) < 2e-4 and abs(kernels.mean()) < 2e-4
  scales = np.concatenate([unet[n]["scale"].ravel() for n in unet if "scale" in unet[n]])
  assert abs(scales.mean() - 1) < 0.01 and 0.01 < scales.std() < 0.03
  # The trunk keeps torchvision's ResNet initialisation (Kaiming normal, fan-out).
  conv1 = params["video_network"]["resnet"]["conv1"]["kernel"]  # [7, 7, 3, width]
  assert abs(conv1.std() - np.sqrt(2 / (49 * conv1.shape[-1]))) < 0.3 * conv1.std()
  outputs, _ = tiny_apply(variables, inputs)
  masks = np.asarray(jax.nn.sigmoid(outputs["mask_logits"]))
  assert abs(masks.mean() - 0.5) < 0.01 and masks.std() < 0.01, (masks.mean(), masks.std())


def test_flax_initialisation_switch():
  cfg = sop_config.get_config("tiny").model
  cfg.init = "flax"
  unet = sound_of_pixels.AudioUNet(cfg)  # the U-Net alone: the part whose init differs
  log_mixture = jnp.zeros((1, 256, 256))
  variables = jax.jit(lambda k: unet.init(k, log_mixture, train=False))(jax.random.PRNGKey(0))
  params = nn.meta.unbox(variables["params"])
  assert np.all(np.asarray(params["input_bn"]["scale"]) == 1.0)  # Flax's ones
  assert np.asarray(params["down0"]["kernel"]).std() > 0.05  # LeCun normal, not N(0, 1e-3)
  cfg.init = "torch"
  with pytest.raises(ValueError, match="config.model.init='torch'"):
    jax.eval_shape(lambda: unet.clone(config=cfg).init(jax.random.PRNGKey(0), log_mixture,
                                                        train=False))


def test_oracle_visual_vector_comes_from_the_labels():
  """visual_source="oracle": the visual vector is sigmoid(labels @ W), no frames read; different
  labels give different masks, and the map (and the audio side) receive gradients."""
  config = sop_config.get_config("tiny,visual=oracle")
  cfg = config.model
  assert cfg.visual_source == "oracle" and not config.optim.lr_multipliers
  model = sound_of_pixels.SoundOfPixels(cfg)
  inputs = sound_of_pixels.example_inputs(cfg, batch_size=1, key=jax.random.PRNGKey(0))
  labels = jax.nn.one_hot(jnp.array([[0, 1]]), cfg.num_classes)
  inputs = dict(inputs, labels=labels, frames=None)  # the oracle never reads frames
  variables = nn.meta.unbox(jax.jit(lambda k: model.init({"params": k}, inputs, train=False))(
      jax.random.PRNGKey(1)))
  params = variables["params"]
  assert set(params) == {"oracle_visual", "audio_network", "synthesizer"}
  # [C, K], N(0, oracle_init_std^2): the classes' vectors differ from the start.
  kernel = np.asarray(params["oracle_visual"]["label_map"]["kernel"])
  assert kernel.shape == (cfg.num_classes, cfg.num_channels)
  assert cfg.oracle_init_std == 1.0 and 0.75 < kernel.std() < 1.25, kernel.std()

  def loss(p):
    (outputs, intermediates), _ = model.apply({"params": p, "batch_stats":
                                               variables["batch_stats"]}, inputs, train=True,
                                              mutable=["batch_stats"])
    return jnp.mean(outputs["mask_logits"][:, 0] ** 2), (outputs, intermediates)

  grads, (outputs, intermediates) = jax.jit(jax.grad(loss, has_aux=True))(params)
  expected = jax.nn.sigmoid(labels @ params["oracle_visual"]["label_map"]["kernel"])
  np.testing.assert_allclose(intermediates["visual_feature"], expected, rtol=1e-5)
  logits = np.asarray(outputs["mask_logits"])
  assert not np.allclose(logits[0, 0], logits[0, 1])
  # Only class 0's row of the map gets a gradient from video 0's loss.
  row_norms = np.abs(np.asarray(grads["oracle_visual"]["label_map"]["kernel"])).sum(-1)
  assert row_norms[0] > 0 and np.all(row_norms[1:] == 0)
  with pytest.raises(ValueError, match="labels"):
    model.apply(variables, {k: v for k, v in inputs.items() if k != "labels"}, train=False)


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
  config = sop_config.get_config(f"{size},optim=original")
  assert config.phase == "sound_of_pixels" and config.model.name == "sound_of_pixels"
  assert config.model.input.image_size == config.data.image_size
  # The same training budget as TriBERT pre-training at that size.
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  reference = pretrain.get_config(size)
  assert config.num_train_steps == reference.num_train_steps
  assert config.data.batch_size == reference.data.batch_size
  # The original's optimiser: SGD 0.9, weight decay 1e-4, 1e-3 and 0.1x for the ResNet trunk,
  # x0.1 at 40 % and 80 % of the updates.
  optim = config.optim
  assert (optim.name, optim.learning_rate, optim.momentum, optim.weight_decay) == (
      "sgd", 1e-3, 0.9, 1e-4)
  assert (optim.decay, tuple(optim.decay_fractions), optim.decay_factor) == (
      "step", (0.4, 0.8), 0.1)
  assert optim.lr_multipliers.to_dict() == {"video_network/resnet": 0.1}
  assert not config.init.parts.frames.checkpoint
  model = sound_of_pixels.SoundOfPixels(config.model)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                                sound_of_pixels.example_inputs(config.model),
                                                train=False))
  assert set(variables["params"]) == {"video_network", "audio_network", "synthesizer"}
  # The multiplier names the trunk's parameters (an unmatched key would raise here).
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  tx, _ = optimizers.make_optimizer(optim, config.num_train_steps,
                                    param_names=list(variables["params"]))
  jax.eval_shape(tx.init, variables["params"])


def test_paper_size_trains_as_the_original_and_cpu_with_adam_in_the_same_groups():
  assert sop_config.get_config("paper").optim.to_dict() == (
      sop_config.get_config("paper,optim=original").optim.to_dict())
  for size in ("cpu", "tiny"):
    optim = sop_config.get_config(size).optim
    assert (optim.name, optim.learning_rate, optim.weight_decay, optim.warmup_steps) == (
        "adam", 1e-3, 0.0, 0)
    assert (optim.decay, optim.end_lr_factor, tuple(optim.decay_fractions)) == ("cosine", 0.0, ())
    assert optim.lr_multipliers.to_dict() == {"video_network/resnet": 0.1}
    assert optim.to_dict() == sop_config.get_config(f"{size},optim=adam").optim.to_dict()
  # The oracle has no trunk: no multiplier for it under either optimiser.
  assert not sop_config.get_config("cpu,visual=oracle").optim.lr_multipliers.to_dict()
  with pytest.raises(ValueError, match="optim='sgd'"):
    sop_config.get_config("cpu,optim=sgd")


def test_decay_follows_an_override_of_the_number_of_updates():
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  config = sop_config.get_config("cpu,optim=original")
  for steps in (config.num_train_steps, 50):  # e.g. benchmarks/quality.py --steps 50
    _, schedule = optimizers.make_optimizer(config.optim, steps)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(int(0.4 * steps))) == pytest.approx(1e-4)
    assert float(schedule(steps - 1)) == pytest.approx(1e-5)


def test_config_arguments():
  config = sop_config.get_config("cpu,frames=pretrained")
  assert config.init.parts.frames.checkpoint == "./runs/sound_of_pixels_frames_cpu"
  assert tuple(map(tuple, config.init.parts.frames.prefix_map)) == (
      ("resnet", "video_network/resnet"),)
  for bad in ("tiny,frames=imagenet", "tiny,visual=pose", "tiny,frames=pretrained,visual=oracle"):
    with pytest.raises(ValueError, match="frames|visual"):
      sop_config.get_config(bad)


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
