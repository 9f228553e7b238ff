"""Sound-of-Pixels' frame pre-training (configs/sound_of_pixels_frames.py): the FrameClassifier's
trunk has Sound-of-Pixels' shapes, frames carry their clip's labels, one step through main.py,
and its checkpoint loads into Sound-of-Pixels through config.init.parts.frames."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train_helpers

from configs import sound_of_pixels as sop_config
from configs import sound_of_pixels_frames as frames_config
from tribert_jax import initialization
from tribert_jax.models import sound_of_pixels
from tribert_jax.tasks import frame_classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _abstract_params(module, *args):
  return nn.meta.unbox(jax.eval_shape(lambda: module.init({"params": jax.random.PRNGKey(0)},
                                                          *args, train=False)))


@pytest.mark.parametrize("size", ["paper", "tiny"])
def test_classifier_trunk_has_the_shapes_of_sound_of_pixels_trunk(size):
  config = frames_config.get_config(size)
  assert config.phase == "sound_of_pixels_frames" and config.model.name == "frame_classifier"
  assert (config.optim.name, config.optim.learning_rate, config.optim.decay) == (
      "adam", 1e-3, "cosine")
  s = config.model.input.image_size
  classifier = _abstract_params(sound_of_pixels.FrameClassifier(config.model),
                                jnp.zeros((1, s, s, 3)))
  assert set(classifier["params"]) == {"resnet", "classifier"}
  assert classifier["params"]["classifier"]["kernel"].shape[-1] == config.data.num_classes
  sop = sop_config.get_config(f"{size},frames=pretrained")
  target = _abstract_params(sound_of_pixels.SoundOfPixels(sop.model),
                            sound_of_pixels.example_inputs(sop.model))
  zeros = lambda tree: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), tree)  # noqa: E731
  for collection in ("params", "batch_stats"):
    _, report = initialization.map_parameters(
        zeros(target[collection]), zeros(classifier[collection]),
        prefix_map=sop.init.parts.frames.prefix_map)
    # Every trunk array is covered; only the classifier head stays behind.
    assert report.copied and all(p.startswith("video_network/resnet/") for p in report.copied)
    assert all(p.startswith("classifier/") for p in report.unused_source)


def test_every_frame_carries_its_clips_labels():
  b, n, t, c = 2, 2, 3, 5
  frames = np.arange(b * n * t, dtype=np.float32).reshape(b, n, t, 1, 1, 1) * np.ones(
      (1, 1, 1, 4, 4, 3), np.float32)
  labels = np.eye(c, dtype=np.float32)[np.array([[0, 1], [2, 3]])]
  inputs, targets = frame_classification.model_inputs(
      dict(frames=frames, labels=labels, valid=np.array([1.0, 0.0])))
  assert inputs["images"].shape == (b * n * t, 4, 4, 3)
  frame_of = np.asarray(inputs["images"][:, 0, 0, 0]).astype(int)  # index b*n*t of the frame
  np.testing.assert_array_equal(np.argmax(targets["labels"], -1), frame_of // t)
  np.testing.assert_array_equal(targets["valid"], np.repeat([1.0, 0.0], n * t))


@pytest.fixture(scope="module")
def frames_workdir(synthmusic_tiny, tmp_path_factory):
  """One step (+ evaluation) of the tiny frame pre-training through main.py."""
  workdir = tmp_path_factory.mktemp("frames")
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/sound_of_pixels_frames.py:tiny",
       f"--workdir={workdir}", f"--config.data.root={synthmusic_tiny}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-5000:]
  return workdir, result.stdout


def test_one_step_through_main(frames_workdir):
  workdir, log = frames_workdir
  assert (workdir / "checkpoints" / "1").is_dir(), sorted(os.listdir(workdir))
  assert json.loads((workdir / "config.json").read_text())["phase"] == "sound_of_pixels_frames"
  assert "frame evaluation at step 1: top-1 accuracy" in log, log[-3000:]


def test_sound_of_pixels_loads_the_classifier_trunk(frames_workdir, synthmusic_tiny, tmp_path):
  """frames=pretrained: a fresh Sound-of-Pixels state holds the checkpoint's trunk (parameters
  and batch statistics) and keeps its own initialisation elsewhere."""
  workdir, _ = frames_workdir
  config = sop_config.get_config("tiny,frames=pretrained")
  config.data.root = str(synthmusic_tiny)
  config.init.parts.frames.checkpoint = str(workdir)
  state, progress = train_helpers.fresh_state(config, tmp_path)
  assert progress == {} and int(state.step) == 0
  train_helpers.assert_part_copied(state, workdir, "resnet", "video_network/resnet")
  # The U-Net keeps the original's initialisation (N(0, 1e-3) kernels), not the checkpoint's.
  assert np.asarray(state.params["audio_network"]["down0"]["kernel"]).std() < 2e-3
