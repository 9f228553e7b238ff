"""Tests of tribert_jax.checkpointing: latest/best saves, NaN refusal, reading another run."""

import errno

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


def _tuple_state(value=1.0):
  """A state with a tuple inside (like optax's): without _METADATA its structure is unknown."""
  return {**_state(value), "opt_state": (jnp.zeros(2), {"mu": jnp.full(2, value)})}


def _two_checkpoints(tmp_path):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3)
  for step in (1, 2):
    checkpointer.save(step, _tuple_state(float(step)), {"step": step})
  checkpointer.close()
  return tmp_path / checkpointing.LATEST_DIR


def _restore(tmp_path, read_only=False):
  abstract = jax.eval_shape(_tuple_state)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=3, read_only=read_only)
  try:
    return checkpointer.restore_latest(checkpointing.abstract_with_shardings(
        abstract, jax.tree.map(lambda _: sharding, abstract)))
  finally:
    checkpointer.close()


def _truncate_arrays(step_dir):
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:10])


@pytest.mark.parametrize("damage", ["truncated_array_file", "missing_metadata"])
def test_a_broken_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage,
                                                                       caplog):
  latest = _two_checkpoints(tmp_path)
  if damage == "truncated_array_file":
    _truncate_arrays(latest / "2")
  else:
    (latest / "2" / "state" / "_METADATA").unlink()
  with caplog.at_level("WARNING"):
    state, progress = _restore(tmp_path)
  assert progress["step"] == 1
  np.testing.assert_array_equal(state["params"]["encoder"]["kernel"], np.full((3, 4), 1.0))
  assert any(f"{latest / '2'} is broken" in r.getMessage() for r in caplog.records)
  # Moved aside (kept for inspection), so step 2 can be saved again.
  assert not (latest / "2").exists()
  assert len(list((tmp_path / checkpointing.BROKEN_DIR).iterdir())) == 1


def test_read_only_checkpointer_creates_nothing_and_keeps_broken_ones(tmp_path):
  assert _restore(tmp_path / "empty", read_only=True) is None
  assert not (tmp_path / "empty").exists()
  latest = _two_checkpoints(tmp_path)
  _truncate_arrays(latest / "2")
  assert _restore(tmp_path, read_only=True)[1]["step"] == 1
  assert (latest / "2").is_dir() and not (tmp_path / checkpointing.BROKEN_DIR).exists()


def test_disk_full_while_saving_is_one_clear_error(tmp_path, monkeypatch):
  checkpointer = checkpointing.Checkpointer(str(tmp_path), keep=2)

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(checkpointer.latest, "save", full)
  with pytest.raises(checkpointing.CheckpointSaveError) as info:
    checkpointer.save(3, _state(), {"step": 3})
  checkpointer.close()
  assert str(info.value) == ("no space left on device while saving checkpoint step 3 to "
                             f"{tmp_path / checkpointing.LATEST_DIR}")
  assert info.value.errno == errno.ENOSPC
