"""Stage 0 of the staged recipe (configs/visual_pretrain.py): TriBERT's visual trunk classifies
frames with its decoupled-attention class scores, one step through main.py, and its checkpoint
loads into the separation pre-training through config.init.parts.frames (frames=pretrained)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers

from configs import separation_pretrain as separation_config
from configs import visual_pretrain as visual_config
from tribert_jax import initialization
from tribert_jax import train
from tribert_jax.models import separation_pretrain
from tribert_jax.models import tribert

def _abstract(module, *args):
  return nn.meta.unbox(jax.eval_shape(
      lambda: module.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1),
                           "masking": jax.random.PRNGKey(2)}, *args, train=False)))


@pytest.mark.parametrize("size", ["paper", "tiny"])
def test_classifier_holds_tribert_visual_encoder_and_maps_onto_the_separation_stage(size):
  config = visual_config.get_config(size)
  assert config.phase == "visual_pretrain" and config.model.name == "visual_classifier"
  assert (config.optim.name, config.optim.learning_rate, config.optim.decay) == (
      "adam", 1e-3, "cosine")
  s = config.model.input.image_size
  classifier = _abstract(separation_pretrain.VisualClassifier(config.model),
                         jnp.zeros((2, s, s, 3)))
  assert set(classifier["params"]) == {"visual_encoder"}  # no head of its own
  # The same arrays, shapes included, as TriBERT's visual encoder at this size.
  model = tribert.TriBERT(config.model)
  full = _abstract(model, tribert.example_inputs(config.model, batch_size=1))
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)  # noqa: E731
  assert shapes(classifier["params"]["visual_encoder"]) == shapes(
      full["params"]["visual_encoder"])
  stage = separation_config.get_config(f"{size},frames=pretrained")
  assert stage.init.parts.frames.checkpoint == f"./runs/visual_pretrain_{size}"
  target = _abstract(separation_pretrain.SeparationPretrainNet(stage.model),
                     tribert.example_inputs(stage.model, batch_size=1))
  zeros = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)  # noqa: E731
  for collection in ("params", "batch_stats"):
    _, report = initialization.map_parameters(
        zeros(target[collection]), zeros(classifier[collection]),
        prefix_map=stage.init.parts.frames.prefix_map)
    assert report.copied and not report.unused_source
    assert all(p.startswith("visual_encoder/") for p in report.copied)


def test_frame_logits_are_the_class_scores_of_each_frame_alone():
  """Frames of a batch are classified independently: the logits of a frame do not change with
  the other frame it is batched with (no pooling across the M axis; one shape, one compile)."""
  config = visual_config.get_config("tiny")
  s = config.model.input.image_size
  model = separation_pretrain.VisualClassifier(config.model)
  a, b, c = jax.random.normal(jax.random.PRNGKey(3), (3, 1, s, s, 3))
  variables = model.init({"params": jax.random.PRNGKey(0)}, jnp.concatenate([a, b]), train=False)
  apply = jax.jit(lambda images: model.apply(variables, images, train=False))
  with_b, with_c = apply(jnp.concatenate([a, b])), apply(jnp.concatenate([a, c]))
  assert with_b.shape == (2, config.data.num_classes)
  np.testing.assert_allclose(np.asarray(with_b[0]), np.asarray(with_c[0]), rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(with_b[1]), np.asarray(with_c[1]))  # the frames do differ


def test_config_arguments_are_checked():
  with pytest.raises(ValueError, match="frames='imagenet'"):
    separation_config.get_config("tiny,frames=imagenet")
  with pytest.raises(ValueError, match="recipe="):
    visual_config.get_config("tiny,recipe=staged")
  assert separation_config.get_config("cpu").init.parts.frames.checkpoint == ""


@pytest.fixture(scope="module")
def visual_workdir(synthmusic_tiny, tmp_path_factory):
  """One step (+ evaluation) of the tiny visual pre-training through main.py."""
  workdir = tmp_path_factory.mktemp("visual")
  [log] = train_helpers.finish_main(train_helpers.start_main(
      "--config=configs/visual_pretrain.py:tiny", f"--workdir={workdir}",
      f"--config.data.root={synthmusic_tiny}"))
  return workdir, log


def test_separation_stage_starts_from_the_visual_pretraining(visual_workdir, synthmusic_tiny,
                                                             tmp_path):
  """One step through main.py writes a checkpoint and a frame evaluation; frames=pretrained: a
  fresh separation pre-training state holds its trunk (parameters and batch statistics) and
  keeps its own initialisation for the conditioning layer and the U-Net."""
  workdir, log = visual_workdir
  assert (workdir / "checkpoints" / "1").is_dir(), sorted(os.listdir(workdir))
  assert json.loads((workdir / "config.json").read_text())["phase"] == "visual_pretrain"
  assert "frame evaluation at step 1: top-1 accuracy" in log, log[-3000:]
  config = separation_config.get_config("tiny,frames=pretrained")
  config.data.root = str(synthmusic_tiny)
  config.init.parts.frames.checkpoint = str(workdir)
  state, progress = train_helpers.fresh_state(config, tmp_path)
  assert progress == {} and int(state.step) == 0
  train_helpers.assert_part_copied(state, workdir, "visual_encoder", "visual_encoder")
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # restore_or_initialize's
  fresh = train.make_task(config).init_variables(init_rng)
  fresh = jax.tree.map(np.asarray, nn.meta.unbox(fresh["params"]))
  for name in ("conditioning", "separation_net"):
    jax.tree.map(np.testing.assert_array_equal,
                 jax.tree.map(np.asarray, state.params[name]), fresh[name])
