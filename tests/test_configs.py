"""Every config in configs/*.py, with every size argument, builds and its model initialises."""

import importlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from tribert_jax import initialization
from tribert_jax import optimizers
from tribert_jax.tasks import separation
from tribert_jax.models import amnet_embedding
from tribert_jax.models import separation_pretrain
from tribert_jax.models import sound_of_pixels
from tribert_jax.models import stgcn
from tribert_jax.models import tribert

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(p.stem for p in CONFIG_DIR.glob("*.py")
                      if p.stem not in ("__init__", "common"))


def test_every_phase_config_is_listed():
  assert CONFIG_FILES == ["ablations", "amnet", "amnet_ame", "finetune", "pose_pretrain",
                          "pretrain", "probe", "retrieval", "separation_pretrain",
                          "sound_of_pixels", "sound_of_pixels_frames", "visual_pretrain"]


_ABSTRACT_CACHE = {}


def _pose_init(config):
  model = stgcn.PoseClassifier(config=config.model)
  i = config.model.input
  pose = jnp.zeros((1, i.num_persons, i.pose_window, i.num_joints, 3))
  mask = jnp.ones((1, i.num_persons, i.pose_window))
  return lambda rng: model.init({"params": rng, "dropout": rng}, pose, mask, train=False)


def _frame_classifier_init(model_cls):
  def make(config):
    model = model_cls(config=config.model)
    images = jnp.zeros((1, config.model.input.image_size, config.model.input.image_size, 3))
    return lambda rng: model.init({"params": rng}, images, train=False)
  return make


def _ame_init(config):
  model = amnet_embedding.AudioMotionEmbedding(config=config.model)
  inputs = amnet_embedding.example_ame_inputs(config.model)
  return lambda rng: model.init({"params": rng}, inputs, train=False)


def _separation_init(config):
  model = separation.build_model(config.model)
  inputs = tribert.example_inputs(config.model, batch_size=1)
  return lambda rng: model.init({"params": rng, "dropout": rng, "masking": rng}, inputs,
                                train=False)


# Phases with a model of their own; every other phase builds separation.build_model's.
_PHASE_INITS = {
    "pose_pretrain": _pose_init,
    "sound_of_pixels_frames": _frame_classifier_init(sound_of_pixels.FrameClassifier),
    "visual_pretrain": _frame_classifier_init(separation_pretrain.VisualClassifier),
    "amnet_ame": _ame_init,
}


def _abstract_variables(config):
  """jax.eval_shape of the phase's model init (no FLOPs, no memory). Phases whose models have
  the same config (pretrain, ablations, probe and retrieval build one TriBERT) are traced once:
  the result depends only on the model builder and config.model (3-5 s per paper-size trace)."""
  kind = config.phase if config.phase in _PHASE_INITS else "separation"
  key = (kind, config.model.to_json())
  if key not in _ABSTRACT_CACHE:
    make_init = _PHASE_INITS.get(config.phase, _separation_init)
    _ABSTRACT_CACHE[key] = jax.eval_shape(make_init(config), jax.random.PRNGKey(0))
  return _ABSTRACT_CACHE[key]


@pytest.mark.parametrize("size", common.SIZES)
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_builds_and_model_initialises(name, size):
  config = importlib.import_module(f"configs.{name}").get_config(size)
  assert config.size == size and config.phase == name
  # Model input sizes follow the data keys (one override changes both).
  assert config.model.input.image_size == config.data.image_size
  assert config.model.num_classes == config.data.num_classes
  assert config.data.batch_size % config.grad_accum_steps == 0
  variables = _abstract_variables(config)
  params = variables["params"]
  assert jax.tree.leaves(params)
  # The optimiser builds against this model: per-module learning rates name real parameter
  # path prefixes (checked when the optimiser state is initialised).
  tx, _ = optimizers.make_optimizer(config.optim, config.num_train_steps,
                                    param_names=list(params))
  jax.eval_shape(tx.init, params)
  if name == "finetune":
    assert config.data.num_classes == 11 and config.init.checkpoint
  if name == "pose_pretrain":
    assert "stgcn" in params
  elif config.model.name == "tribert":
    # The pose pre-training checkpoint maps onto TriBERT's pose encoder.
    assert all(target.split("/")[0] in params for _, target in initialization.POSE_ENCODER_PREFIX_MAP)


def test_config_argument_is_checked():
  with pytest.raises(ValueError, match="config argument must be one of"):
    importlib.import_module("configs.pretrain").get_config("huge")


def test_linked_keys_follow_overrides():
  config = importlib.import_module("configs.pretrain").get_config("tiny")
  config.data.image_size = 48
  config.data.num_classes = 11
  assert config.model.input.image_size == 48 and config.model.num_classes == 11


def test_finetune_reinitialises_exactly_the_class_dependent_layers():
  """Pretrain (21 classes) -> finetune (11): the reinit patterns cover every shape change."""
  pretrain_params = _abstract_variables(
      importlib.import_module("configs.pretrain").get_config("tiny"))["params"]
  finetune_config = importlib.import_module("configs.finetune").get_config("tiny")
  finetune_params = _abstract_variables(finetune_config)["params"]
  zeros = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), nn_unbox(tree))  # noqa: E731
  merged, report = initialization.map_parameters(
      zeros(finetune_params), zeros(pretrain_params),
      reinit_patterns=finetune_config.init.reinit_patterns)
  changed = {p for p, v in initialization.flatten(zeros(finetune_params)).items()
             if initialization.flatten(zeros(pretrain_params))[p].shape != v.shape}
  assert changed and changed <= set(report.reinitialised)
  assert report.copied and not report.unused_source and merged


def nn_unbox(tree):
  """Strips logical-partitioning boxes."""
  return tribert.unbox(tree)
