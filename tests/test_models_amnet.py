"""AMnet (tiny configs): shapes of every network in train and eval mode, gradients, the AME loss
against a NumPy transcription, and a few AME steps on tiny SynthMUSIC."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import amnet as amnet_config
from configs import amnet_ame as ame_config
from tribert_jax import losses
from tribert_jax import validation
from tribert_jax.models import amnet
from tribert_jax.models import amnet_embedding
from tribert_jax.models import tribert
from tribert_jax.tasks import audio_motion_embedding
from tribert_jax.tasks import separation


def _abstract_outputs(model, inputs, train):
  variables = jax.eval_shape(lambda: nn.meta.unbox(
      model.init({"params": jax.random.PRNGKey(0)}, inputs, train=False)))
  if train:
    (outputs, intermediates), _ = jax.eval_shape(
        lambda v: model.apply(v, inputs, train=True, mutable=["batch_stats"]), variables)
  else:
    outputs, intermediates = jax.eval_shape(lambda v: model.apply(v, inputs, train=False),
                                            variables)
  shapes = lambda tree: {k: tuple(v.shape) for k, v in tree.items()}  # noqa: E731
  return variables, shapes(outputs), shapes(intermediates)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_ame_network_shapes(size, train):
  cfg = ame_config.get_config(size).model
  model = amnet_embedding.AudioMotionEmbedding(cfg)
  _, outputs, intermediates = _abstract_outputs(
      model, amnet_embedding.example_ame_inputs(cfg, 3), train)
  t_out = {"tiny": 8, "paper": 12}[size]  # paper: T = 48, temporal stride 4
  assert outputs == {"motion_embedding": (3, t_out), "sound_embedding": (3, t_out)}
  side = cfg.input.image_size // 16  # spatial stride 16 (paper 224 -> 14)
  assert intermediates["motion_embedding_map"] == (3, t_out, side, side)  # f_M2
  assert intermediates["motion_features"] == (3, t_out, 8 * cfg.motion.width)  # C_M x T'
  if size == "paper":
    assert cfg.motion.width * 8 == 512 and cfg.input.num_frames == 48 and side == 14
    assert amnet_embedding.ame_audio_length(cfg) == cfg.input.audio_length  # 6 s > crop


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("stage", ["appearance", "motion"])
def test_separation_network_shapes(stage, train):
  cfg = amnet_config.get_config(f"tiny,stage={stage}").model
  model = amnet.AMnet(cfg)
  variables, outputs, intermediates = _abstract_outputs(
      model, tribert.example_inputs(cfg, batch_size=2), train)
  assert outputs == {"mask_logits": (2, 2, 256, 256)}
  assert intermediates["appearance_feature"] == (2, 2, cfg.num_classes)  # f_A, C_A = classes
  expected = {"appearance_network", "spectrogram_network", "synthesizer"}
  if stage == "motion":
    expected |= {"motion_network", "refinement_network"}
    assert intermediates["residuals"] == (2, 2, 2, 256, 256)  # (n -> m) pairs
    assert intermediates["motion_features"] == (2, 2, 8, 8 * cfg.motion.width)
  assert set(variables["params"]) == expected
  # f_mix has C_S = C_A channels, the synthesizer one weight per channel.
  assert variables["params"]["synthesizer"]["alpha"].shape == (cfg.num_classes,)


def test_refinement_encoder_reaches_512_by_16_by_16_at_paper_size():
  cfg = amnet_config.get_config("paper,stage=motion").model
  network = amnet.RefinementNetwork(cfg)
  spectrogram, motion = jnp.zeros((1, 256, 256)), jnp.zeros((1, 12, 512))
  variables = jax.eval_shape(lambda: nn.meta.unbox(
      network.init(jax.random.PRNGKey(0), spectrogram, motion, False)))
  position = variables["params"]["transformer"]["spectrogram_position"]
  assert position.shape == (16 * 16, 512)
  assert cfg.refinement.num_heads == 8
  out = jax.eval_shape(lambda v: network.apply(v, spectrogram, motion, False), variables)
  assert out.shape == (1, 256, 256)


def test_residual_fusion_relocates_between_sources():
  appearance = jnp.zeros((1, 2, 1, 1))
  residuals = jnp.asarray([[[[[9.0]], [[2.0]]], [[[5.0]], [[9.0]]]]])  # r_01 = 2, r_10 = 5
  fused = amnet.residual_fusion(appearance, residuals, "relocate")
  np.testing.assert_allclose(np.asarray(fused).ravel(), [5.0 - 2.0, 2.0 - 5.0])
  own = amnet.residual_fusion(appearance, jnp.ones((1, 2, 1, 1)), "self")
  np.testing.assert_allclose(np.asarray(own).ravel(), [1.0, 1.0])


def _dead(tree):
  """Paths of the all-zero gradients of a tree (every gradient must be finite)."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  assert all(np.all(np.isfinite(np.asarray(g))) for _, g in flat)
  return [jax.tree_util.keystr(p) for p, g in flat if not np.any(np.asarray(g) != 0)]


def test_every_parameter_gets_a_gradient():
  """One compiled program: the appearance stage's and the motion stage's separation losses; the
  motion stage's frozen parts get none. (The AME networks': the few-steps test below.)"""
  app_cfg = amnet_config.get_config("tiny").model
  motion_cfg = amnet_config.get_config("tiny,stage=motion").model
  motion_cfg.motion_stage.freeze_motion_network = False
  for cfg in (app_cfg, motion_cfg):  # the smallest frames the stride-16 trunks take
    cfg.input.image_size = 16
  app_model, motion_model = amnet.AMnet(app_cfg), amnet.AMnet(motion_cfg)
  key = jax.random.PRNGKey(0)
  # The networks are fully convolutional: a 64 x 64 spectrogram keeps this program small.
  sep_inputs = tribert.example_inputs(app_cfg, batch_size=1, key=key)
  sep_inputs["mix_warped"] = sep_inputs["mix_warped"][:, :64, :64]
  rng = np.random.default_rng(0)
  targets = dict(gt_masks=jnp.asarray(rng.random((1, 2, 64, 64)) > 0.5, jnp.float32),
                 weight=jnp.ones((1, 64, 64)), labels=jnp.zeros((1, 2, 21)),
                 valid=jnp.ones((1,)))

  def grads(key):
    k2, k3 = jax.random.split(key)
    app_vars = app_model.init(k2, sep_inputs, train=False)
    motion_vars = motion_model.init(k3, sep_inputs, train=False)

    def separation_loss(model, variables):
      def loss(params):
        (out, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                  sep_inputs, train=True, mutable=["batch_stats"])
        return losses.tribert_loss(out, targets)[0]
      return jax.grad(loss)(variables["params"])

    return separation_loss(app_model, app_vars), separation_loss(motion_model, motion_vars)

  app_grads, motion_grads = jax.jit(grads)(key)
  dead = _dead
  assert not dead(app_grads)
  trained = {k: v for k, v in motion_grads.items()
             if k in ("refinement_network", "motion_network")}
  # The motion stage reads f_M1, not the AME embedding conv.
  trained["motion_network"] = {k: v for k, v in trained["motion_network"].items()
                               if k != "embedding_conv"}
  assert not dead(trained)
  frozen = {k: v for k, v in motion_grads.items() if k in amnet.frozen_prefixes(
      amnet_config.get_config("tiny,stage=motion").model)}
  assert set(frozen) == {"appearance_network", "spectrogram_network", "synthesizer",
                         "motion_network"}
  del frozen["motion_network"]  # trained in this copy (freeze_motion_network=False)
  assert len(dead(frozen)) == len(jax.tree.leaves(frozen))


def _numpy_ame_loss(motion, sound, valid, temperature, min_shift):
  """Independent transcription of the AME objective with loops."""
  def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-6))

  v, length = motion.shape
  shifts = range(min_shift, length - min_shift + 1)

  def direction(anchors, others):
    total = 0.0
    for i in range(v):
      if not valid[i]:
        continue
      logits = [pearson(anchors[i], others[j]) / temperature for j in range(v) if valid[j]]
      positive = pearson(anchors[i], others[i]) / temperature
      logits += [pearson(anchors[i], np.roll(others[i], k)) / temperature for k in shifts]
      logits = np.asarray(logits)
      total += -(positive - (np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()))
    return total / valid.sum()

  return 0.5 * (direction(motion, sound) + direction(sound, motion))


@pytest.mark.parametrize("min_shift", [1, 3])
def test_ame_loss_matches_numpy(min_shift):
  rng = np.random.default_rng(1)
  motion, sound = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
  sound[2] = 0.7 * motion[2] + 0.3 * sound[2]  # one well-matched pair
  valid = np.asarray([1, 1, 1, 0, 1], np.float32)
  loss, metrics = losses.audio_motion_embedding_loss(jnp.asarray(motion), jnp.asarray(sound),
                                                     jnp.asarray(valid), 0.2, min_shift)
  expected = _numpy_ame_loss(motion, sound, valid, 0.2, min_shift)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["ame"]), expected, rtol=1e-5)
  assert losses.circular_shifts(8, min_shift) == list(range(min_shift, 9 - min_shift))
  np.testing.assert_allclose(
      float(losses.pearson_correlation(jnp.asarray(motion[0]), jnp.asarray(2 * motion[0] + 1))),
      1.0, atol=1e-6)


def test_validation_names_the_amnet_keys():
  config = amnet_config.get_config("tiny,stage=motion")
  config.data.num_frames = 1
  config.model.refinement.num_heads = 3
  config.model.motion_stage.fusion = "sum"
  config.init.parts.motion.checkpoint = ""
  problems = "\n".join(validation.check_config(config))
  for key in ("config.data.num_frames=1", "config.model.refinement.channels",
              "config.model.motion_stage.fusion='sum'", "config.init.parts.motion.checkpoint"):
    assert key in problems, problems
  assert not validation.check_config(ame_config.get_config("paper"))
  assert separation.frozen_parameters(amnet_config.get_config("tiny").model) == ()


def test_ame_prefers_matched_pairs_after_a_few_steps(synthmusic_tiny):
  """A few Adam steps on two fixed tiny SynthMUSIC batches: matched motion/sound pairs end up
  more correlated than mismatched ones, and the loss falls."""
  from data_pipeline.loading import pipeline  # pylint: disable=g-import-not-at-top
  config = ame_config.get_config("tiny")
  config.data.root = str(synthmusic_tiny)
  config.data.batch_size = 4
  config.data.volume_jitter = 0.0
  batches = [{k: v for k, v in batch.items() if k in ("frames", "waveform", "valid")}
             for batch in itertools.islice(
                 iter(pipeline.build_train_pipeline(config.data, seed=0, process_index=0,
                                                    process_count=1)), 2)]
  model = amnet_embedding.AudioMotionEmbedding(config.model)
  variables = jax.jit(lambda key: model.init(
      key, amnet_embedding.example_ame_inputs(config.model), train=False))(jax.random.PRNGKey(0))
  tx = optax.adam(1e-3)
  ame = config.model.ame

  def metrics_of(params, batch_stats, batch):
    inputs, targets = audio_motion_embedding.model_inputs(batch, config.model)
    (out, _), mutated = model.apply({"params": params, "batch_stats": batch_stats}, inputs,
                                    train=True, mutable=["batch_stats"])
    loss, metrics = losses.audio_motion_embedding_loss(
        out["motion_embedding"], out["sound_embedding"], targets["valid"], ame.temperature,
        ame.min_shift)
    return loss, (metrics, mutated["batch_stats"])

  @jax.jit
  def step(params, batch_stats, opt_state, batch):
    (_, (metrics, batch_stats)), grads = jax.value_and_grad(metrics_of, has_aux=True)(
        params, batch_stats, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, metrics, grads

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  history = []  # metrics of each step, before its update
  for i in range(26):
    params, batch_stats, opt_state, metrics, grads = step(params, batch_stats, opt_state,
                                                          batches[i % 2])
    if i == 0:  # every parameter of the AME networks gets a gradient
      assert not _dead(grads)
    history.append({k: float(v) for k, v in metrics.items()})
  # The first two steps (untrained, one per batch) against the last two (after 24 updates).
  first, last = history[:2], history[-2:]
  mean = lambda rows, key: np.mean([r[key] for r in rows])  # noqa: E731
  assert mean(last, "ame") < mean(first, "ame"), (first, last)
  matched, mismatched = mean(last, "matched_correlation"), mean(last, "mismatched_correlation")
  assert matched > mismatched + 0.2, (matched, mismatched)


def test_motion_stage_parts_map_the_earlier_stages_exactly():
  """config.init.parts of stage=motion: every target array comes from the appearance stage or
  the AME model with the same shape (abstract trees: no FLOPs)."""
  from tribert_jax import initialization  # pylint: disable=g-import-not-at-top

  def params(model, inputs):
    return jax.eval_shape(lambda: nn.meta.unbox(
        model.init({"params": jax.random.PRNGKey(0)}, inputs, train=False)))["params"]

  config = amnet_config.get_config("tiny,stage=motion")
  inputs = tribert.example_inputs(config.model)
  target = params(amnet.AMnet(config.model), inputs)
  appearance_cfg = amnet_config.get_config("tiny").model
  ame_cfg = ame_config.get_config("tiny").model
  sources = {"appearance": params(amnet.AMnet(appearance_cfg), inputs),
             "motion": params(amnet_embedding.AudioMotionEmbedding(ame_cfg),
                              amnet_embedding.example_ame_inputs(ame_cfg))}
  copied = set()
  for name, source in sources.items():
    source = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), source)  # arrays, as on disk
    _, report = initialization.map_parameters(target, source,
                                              prefix_map=config.init.parts[name].prefix_map)
    copied |= set(report.copied)
  trained = {p for p in initialization.flatten(target) if p.startswith("refinement_network/")}
  assert copied | trained == set(initialization.flatten(target))
  assert set(amnet.frozen_prefixes(config.model)) == {p.split("/")[0] for p in copied}
