"""Tests of tribert_jax.checkpointing: latest/best saves, NaN refusal, reading another run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tribert_jax import checkpointing


def _state(value=1.0, classes=21):
  return {"params": {"encoder": {"kernel": jnp.full((3, 4), value)},
                     "audio_head": {"classification": {"kernel": jnp.full((4, classes), value)}}},
          "step": jnp.asarray(3, jnp.int32), "rng": jax.random.PRNGKey(0)}


def test_latest_and_best_round_trip(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  for step, sdr in ((1, 1.0), (2, 5.0), (3, 2.0), (4, None)):
    metrics = None if sdr is None else {"sdr": sdr}
    checkpointer.save(step, _state(float(step)), {"step": step, "data": {"seed": 0}},
                      metrics=metrics)
  checkpointer.wait_until_finished()
  assert checkpointer.latest.all_steps() == [3, 4]  # keep-last-2
  assert checkpointer.best.all_steps() == [2]  # best validation SDR
  abstract = jax.eval_shape(_state)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  state, progress = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(abstract, jax.tree.map(lambda _: sharding, abstract)))
  checkpointer.close()
  assert progress == {"step": 4, "data": {"seed": 0}}
  np.testing.assert_array_equal(state["params"]["encoder"]["kernel"], np.full((3, 4), 4.0))
  tree, progress, step = checkpointing.load_state_tree(str(tmp_path), "best")
  assert step == 2 and progress["step"] == 2
  assert isinstance(tree["params"]["encoder"]["kernel"], np.ndarray)
  np.testing.assert_array_equal(tree["params"]["encoder"]["kernel"], np.full((3, 4), 2.0))
  # A checkpoints folder or one step's folder work as well as the workdir.
  assert checkpointing.load_state_tree(str(tmp_path / "checkpoints"))[2] == 4
  assert checkpointing.load_state_tree(str(tmp_path / "checkpoints" / "3"))[2] == 3


def test_non_finite_state_is_never_saved(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(1, _state(), {"step": 1})
  with pytest.raises(checkpointing.NonFiniteStateError, match="step 2 holds NaN"):
    checkpointer.save(2, _state(float("nan")), {"step": 2})
  checkpointer.wait_until_finished()
  assert checkpointer.latest.all_steps() == [1]
  checkpointer.close()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpointing.load_state_tree(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpointing.load_state_tree(str(tmp_path / "empty"))


def test_best_falls_back_to_latest_when_the_run_never_evaluated(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)
  checkpointer.save(5, _state(5.0), {"step": 5})  # no metrics: checkpoints_best/ stays empty
  checkpointer.wait_until_finished()
  checkpointer.close()
  assert (tmp_path / checkpointing.BEST_DIR).is_dir()
  directory, step = checkpointing.resolve_checkpoint_dir(str(tmp_path), "best")
  assert step == 5 and directory.endswith(checkpointing.LATEST_DIR)
  tree, _, step = checkpointing.load_state_tree(str(tmp_path), "best")
  assert step == 5
  np.testing.assert_array_equal(tree["params"]["encoder"]["kernel"], np.full((3, 4), 5.0))
