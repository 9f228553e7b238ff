"""Training-loop faults (tiny configs): a non-finite loss stops the run keeping the last good
checkpoint; a failing final evaluation keeps the last step (it is saved first).

The model is tiny Sound-of-Pixels: these paths are the trainer's and the separation task's,
the same for every separation model (TriBERT's end-to-end run is test_train.py's), and
Sound-of-Pixels compiles in a fraction of TriBERT's time."""

import dataclasses
import os
import re

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import sound_of_pixels  # noqa: E402
from tribert_jax import checkpointing  # noqa: E402
from tribert_jax import train  # noqa: E402
from train_helpers import tiny  # noqa: E402


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(synthmusic_tiny, tmp_path,
                                                               monkeypatch):
  real_batches = train.train_batches

  def poisoned(config, start_batch):
    for index, batch in enumerate(real_batches(config, start_batch), start=start_batch):
      if index == 1:  # the second step's audio is corrupt
        batch = dict(batch, waveform=np.full_like(batch["waveform"], np.nan),
                     mixture=np.full_like(batch["mixture"], np.nan))
      yield batch

  monkeypatch.setattr(train, "train_batches", poisoned)
  config = tiny(sound_of_pixels, synthmusic_tiny, num_train_steps=3)
  config.eval.at_end = False
  with pytest.raises(train.NonFiniteError,
                     match=r"training step 2: loss terms \[.*separation") as error:
    train.train_and_evaluate(config, str(tmp_path))
  # The message names the clips of the failing batch (one mixture of N clips per example).
  assert "the batch's clips" in str(error.value)
  assert re.search(r"clips \(this process, one mixture each\): [\w.-]+\+[\w.-]+", str(error.value))
  tree, progress, step = checkpointing.load_state_tree(str(tmp_path))
  assert step == 1 and progress["step"] == 1
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree["params"]))


def test_the_last_step_is_saved_before_the_final_evaluation(synthmusic_tiny, tmp_path,
                                                            monkeypatch):
  """A failing final evaluation (a bad mixture list, a crash in scoring) keeps the run's last
  step: the save comes first."""
  real_make_task = train.make_task

  def task_whose_evaluation_fails(config):
    def evaluate(*args, **kwargs):
      raise RuntimeError("evaluation failed")
    return dataclasses.replace(real_make_task(config), evaluate=evaluate)

  monkeypatch.setattr(train, "make_task", task_whose_evaluation_fails)
  config = tiny(sound_of_pixels, synthmusic_tiny, num_train_steps=2)
  assert config.eval.at_end
  with pytest.raises(RuntimeError, match="evaluation failed"):
    train.train_and_evaluate(config, str(tmp_path))
  _, progress, step = checkpointing.load_state_tree(str(tmp_path))
  assert step == 2 and progress["step"] == 2
