"""Tests of main.py's plumbing: flags, config overrides, modes and jax.distributed arguments.

The training it dispatches to is tested end to end in tests/test_train.py; here the library
calls are replaced so the tests check what main.py hands over.
"""

import os
import sys

from absl import flags
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import main  # noqa: E402  pylint: disable=g-import-not-at-top
from tribert_jax import train  # noqa: E402


@pytest.fixture
def parse_flags(monkeypatch):
  """Parses a main.py command line into absl's FLAGS, restoring them afterwards."""
  def parse(*arguments):
    flags.FLAGS.unparse_flags()
    argv = ["main.py", *arguments]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
    return flags.FLAGS(argv)
  yield parse
  flags.FLAGS.unparse_flags()


def test_train_mode_gets_the_overridden_locked_config(parse_flags, monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(train, "train_and_evaluate", lambda c, w: calls.append((c, w)))
  argv = parse_flags("--config=configs/pretrain.py:tiny", f"--workdir={tmp_path}",
                     "--config.data.batch_size=4", "--config.optim.learning_rate=0.5")
  main.main(argv[:1])
  config, workdir = calls[0]
  assert workdir == str(tmp_path)
  assert config.data.batch_size == 4 and config.optim.learning_rate == 0.5
  assert config.size == "tiny" and config.phase == "pretrain"
  with pytest.raises(AttributeError):  # lock_config: a typo cannot add a key silently
    config.not_a_key = 1


def test_evaluate_mode_passes_the_checkpoint_step(parse_flags, monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(train, "evaluate_checkpoint", lambda c, w, s: calls.append((c.phase, w, s)))
  (tmp_path / "checkpoints" / "7").mkdir(parents=True)  # main.py checks there is one
  argv = parse_flags("--config=configs/finetune.py:tiny", f"--workdir={tmp_path}",
                     "--mode=evaluate", "--checkpoint=7")
  main.main(argv[:1])
  assert calls == [("finetune", str(tmp_path), 7)]


def test_distributed_arguments_from_config_and_environment(parse_flags, monkeypatch, tmp_path):
  parse_flags("--config=configs/pretrain.py:tiny", f"--workdir={tmp_path}")
  config = flags.FLAGS.config
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert main._distributed_arguments(config) is None  # single process by default
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert main._distributed_arguments(config) == dict(
      coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3)
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
  parse_flags("--config=configs/pretrain.py:tiny", f"--workdir={tmp_path}", "--distributed",
              "--config.distributed.num_processes=2", "--config.distributed.process_id=0")
  # Explicit config values win over the environment; no address = cluster auto-detection.
  assert main._distributed_arguments(flags.FLAGS.config) == dict(num_processes=2, process_id=0)
