"""Tests of tribert_jax.initialization: the checkpoint -> parameters mapping between phases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.parts.model import get_model_config
from test_models_pretrained import abstract_tribert, run_o0, zeros_like_tree
from tribert_jax import initialization
from tribert_jax.models.stgcn import PoseClassifier
from tribert_jax.models.tribert import unbox


def _state(value=1.0, classes=21):
  return {"params": {"encoder": {"kernel": jnp.full((3, 4), value)},
                     "audio_head": {"classification": {"kernel": jnp.full((4, classes), value)}}},
          "step": jnp.asarray(3, jnp.int32), "rng": jax.random.PRNGKey(0)}


def test_pretrain_to_finetune_mapping_reinitialises_class_layers():
  source = jax.tree.map(np.asarray, _state(1.0, classes=21)["params"])
  target = jax.tree.map(np.asarray, _state(0.0, classes=11)["params"])
  merged, report = initialization.map_parameters(
      target, source, reinit_patterns=[r"_head/classification/"])
  np.testing.assert_array_equal(merged["encoder"]["kernel"], 1.0)
  np.testing.assert_array_equal(merged["audio_head"]["classification"]["kernel"],
                                np.zeros((4, 11)))
  assert report.copied == ["encoder/kernel"]
  assert report.reinitialised == ["audio_head/classification/kernel"]
  # Without the pattern the class-count change is an error that names the layer.
  with pytest.raises(ValueError, match=r"audio_head/classification/kernel: target \(4, 11\)"):
    initialization.map_parameters(target, source)


def test_pose_classifier_to_tribert_pose_encoder_mapping():
  pose_classifier = {"stgcn": {"block0": {"kernel": np.ones((2, 2))}},
                     "classifier": {"kernel": np.ones((2, 21))}}
  tribert = {"pose_encoder": {"stgcn": {"block0": {"kernel": np.zeros((2, 2))}},
                              "feature_projection": {"kernel": np.zeros((3, 3))}},
             "separation_net": {"kernel": np.zeros((5,))}}
  merged, report = initialization.map_parameters(
      tribert, pose_classifier, prefix_map=[("stgcn", "pose_encoder/stgcn")])
  np.testing.assert_array_equal(merged["pose_encoder"]["stgcn"]["block0"]["kernel"], 1.0)
  np.testing.assert_array_equal(merged["pose_encoder"]["feature_projection"]["kernel"], 0.0)
  assert report.copied == ["pose_encoder/stgcn/block0/kernel"]
  assert report.unused_source == ["classifier/kernel"]
  assert sorted(report.kept_target) == ["pose_encoder/feature_projection/kernel",
                                        "separation_net/kernel"]
  del pose_classifier["stgcn"]["block0"]
  with pytest.raises(ValueError, match="missing 1 arrays"):
    initialization.map_parameters(tribert, pose_classifier,
                                 prefix_map=[("stgcn", "pose_encoder/stgcn")])


def test_pose_classifier_stgcn_loads_into_tribert():
  cfg = get_model_config("tiny")
  clf = PoseClassifier(cfg)
  pose, mask = jnp.ones((1, 2, 16, 68, 3)), jnp.ones((1, 2, 16))
  clf_vars = run_o0(clf.init, jax.random.PRNGKey(0), pose, mask)
  tribert_vars = zeros_like_tree(unbox(abstract_tribert(cfg)))
  out = initialization.load_pose_classifier(tribert_vars, clf_vars)
  got = out["params"]["pose_encoder"]["stgcn"]
  want = unbox(clf_vars)["params"]["stgcn"]
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  np.testing.assert_array_equal(out["batch_stats"]["pose_encoder"]["stgcn"]["data_bn"]["var"],
                                clf_vars["batch_stats"]["stgcn"]["data_bn"]["var"])
