"""The wall-clock training budget (config.max_train_seconds, tribert_jax/train_clock.py): the clock
counts training only, a run stops at the first step after the budget and says why in
WORKDIR/train_end.json, a resumed run continues the clock; bad values are refused by name."""

import dataclasses
import json
import os
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import pytest  # noqa: E402

from configs import sound_of_pixels  # noqa: E402
from tribert_jax import checkpointing  # noqa: E402
from tribert_jax import train  # noqa: E402
from tribert_jax import train_clock  # noqa: E402
from tribert_jax import validation  # noqa: E402
from train_helpers import tiny  # noqa: E402

SLEEP_S = 1.5  # injected into every checkpoint save and evaluation of the training runs


class FakeTime:
  """A monotonic clock the test moves by hand."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_clock_counts_only_running_time_and_resumes():
  now = FakeTime()
  clock = train_clock.TrainClock(seconds=5.0, budget=12.0, now=now)
  now.now += 30.0  # compilation: the clock has not started
  assert clock.seconds == 5.0 and not clock.running and not clock.expired()
  clock.start()
  now.now += 4.0
  with clock.paused():  # an evaluation or a checkpoint save
    now.now += 100.0
    assert clock.seconds == 9.0
  assert clock.running and clock.seconds == 9.0
  now.now += 3.0
  assert clock.seconds == 12.0 and clock.expired()
  clock.stop()
  now.now += 50.0
  assert clock.seconds == 12.0
  with clock.paused():  # pausing a stopped clock leaves it stopped
    pass
  assert not clock.running
  assert not train_clock.TrainClock(1e9, budget=None).expired()
  assert train_clock.restored_seconds({"train_seconds": 7.5}) == 7.5
  assert train_clock.restored_seconds({}) == 0.0  # checkpoints from before the clock


def test_bad_budget_and_quick_split_are_refused_by_name():
  config = sound_of_pixels.get_config("tiny")
  assert validation.check_config(config) == []
  for value in (0, None, 0.5, 600):
    config.max_train_seconds = value
    assert validation.check_config(config) == [], value
  config.max_train_seconds = 0.0
  for value in (-1, float("nan"), float("inf"), "600"):
    problems = validation.check_config({"max_train_seconds": value})
    assert len(problems) == 1 and problems[0].startswith("config.max_train_seconds="), problems
  config.eval.quick_split = "dev"
  problems = validation.check_config(config)
  assert problems == ["config.eval.quick_split='dev': expected one of ['train', 'val', 'test']"]


def slow_non_training(monkeypatch):
  """Every checkpoint save and (quick) evaluation of the runs sleeps SLEEP_S."""
  real_save, real_make_task = checkpointing.Checkpointer.save, train.make_task

  def save(self, *args, **kwargs):
    time.sleep(SLEEP_S)
    return real_save(self, *args, **kwargs)

  def slowed(fn):
    def call(*args, **kwargs):
      time.sleep(SLEEP_S)
      return fn(*args, **kwargs)
    return call

  def make_task(config):
    task = real_make_task(config)
    return dataclasses.replace(task, evaluate=slowed(task.evaluate),
                               quick_evaluate=slowed(task.quick_evaluate))

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save)
  monkeypatch.setattr(train, "make_task", make_task)


def test_budget_stops_early_and_resume_keeps_the_clock(synthmusic_tiny, tmp_path, monkeypatch):
  slow_non_training(monkeypatch)
  workdir = str(tmp_path)
  config = tiny(sound_of_pixels, synthmusic_tiny, num_train_steps=50, max_train_seconds=1e-3)
  config.eval.quick_every_steps = 10  # off the step the budget ends at: the last step gets one
  config.eval.quick_batches = 1
  config.eval.quick_split = "test"
  start = time.monotonic()
  result = train.train_and_evaluate(config, workdir)
  wall = time.monotonic() - start
  # The first step spends the budget: it is the last; saved, quick- and fully evaluated.
  end = train_clock.read_end(workdir)
  assert end == result["end"]
  assert (end["step"], end["reason"], end["num_train_steps"]) == (1, "seconds", 50)
  # Compilation, the sleeps of the save, the quick and the full evaluation are not training.
  assert 0 < end["train_seconds"] < SLEEP_S < 3 * SLEEP_S < wall
  assert result["eval"] and os.path.isfile(os.path.join(workdir, "eval", "val_step_1.json"))
  with open(os.path.join(workdir, "eval", "quick_test.jsonl")) as file:
    points = [json.loads(line) for line in file]
  assert [p["step"] for p in points] == [1]
  assert points[0]["train_seconds"] == end["train_seconds"]
  _, progress, _ = checkpointing.load_state_tree(workdir, "latest")
  assert progress["train_seconds"] == end["train_seconds"]

  # Resumed with the budget spent: no step is trained, the clock is the checkpoint's.
  config.eval.at_end = False
  config.eval.quick_every_steps = 0
  result = train.train_and_evaluate(config, workdir)
  assert result["end"] == end

  # Resumed with no budget: training continues to num_train_steps from the stored clock.
  config.num_train_steps, config.max_train_seconds = 2, 0
  result = train.train_and_evaluate(config, workdir)
  assert (result["end"]["step"], result["end"]["reason"]) == (2, "steps")
  assert end["train_seconds"] < result["end"]["train_seconds"] < end["train_seconds"] + SLEEP_S
  assert train_clock.read_end(workdir) == result["end"]
