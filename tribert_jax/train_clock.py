"""The training clock: seconds spent training, for the wall-clock budget config.max_train_seconds.

Equal-wall-clock comparisons (benchmarks/quality.py) need a clock that counts what a model costs
to train and nothing else. The clock runs over the loop's steps (data, dispatch, the wait for each
step's result, logging) and is paused by the loop (`with clock.paused():`) around what is not
training: the ahead-of-time compilation of the train step (it starts after it), full and quick
evaluations and the synchronous part of checkpoint saves. Its seconds are stored in every
checkpoint's progress record (PROGRESS_KEY), so a resumed run continues the clock; a run stops at
the first step boundary after the budget (`expired`). Every finished run writes
WORKDIR/train_end.json (END_FILE): the final step, the training seconds and why it stopped
("steps": config.num_train_steps reached; "seconds": the budget spent).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping

PROGRESS_KEY = "train_seconds"  # the clock's seconds in a checkpoint's progress record
END_FILE = "train_end.json"


def budget_seconds(config: Any) -> float | None:
  """config.max_train_seconds as seconds, or None when there is no budget (0, None or absent)."""
  value = config.get("max_train_seconds", None) if hasattr(config, "get") else None
  return float(value) if value else None


class TrainClock:
  """Seconds of training so far (resumed from `seconds`), stopped until `start()`."""

  def __init__(self, seconds: float = 0.0, budget: float | None = None,
               now: Callable[[], float] = time.monotonic):
    self._seconds = float(seconds)
    self._since: float | None = None  # monotonic time the clock last started; None = stopped
    self._now = now
    self.budget = budget

  @property
  def running(self) -> bool:
    return self._since is not None

  @property
  def seconds(self) -> float:
    """Training seconds, including the running interval."""
    if self._since is None:
      return self._seconds
    return self._seconds + self._now() - self._since

  def start(self) -> None:
    """Starts (or keeps) the clock running."""
    if self._since is None:
      self._since = self._now()

  def stop(self) -> None:
    """Stops the clock, keeping the seconds counted so far."""
    if self._since is not None:
      self._seconds += self._now() - self._since
      self._since = None

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Not training time inside the block; the clock runs again after it if it was running."""
    was_running = self.running
    self.stop()
    try:
      yield
    finally:
      if was_running:
        self.start()

  def expired(self) -> bool:
    """Whether the budget (if any) is spent."""
    return self.budget is not None and self.seconds >= self.budget


def expired_everywhere(clock: TrainClock) -> bool:
  """clock.expired() as process 0 sees it, on every process: the processes' clocks differ a
  little, and all of them must stop at the same step (the step's collectives)."""
  expired = clock.expired()
  if clock.budget is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return expired
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(expired)))


def restored_seconds(progress: Mapping[str, Any]) -> float:
  """The clock's seconds from a checkpoint's progress record (0 for a fresh run or a checkpoint
  written before the clock existed)."""
  return float(progress.get(PROGRESS_KEY, 0.0) or 0.0)


def write_end(workdir: str, record: Mapping[str, Any]) -> str:
  """Writes WORKDIR/train_end.json (atomically: a reader never sees half a file); its path."""
  path = os.path.join(workdir, END_FILE)
  os.makedirs(workdir, exist_ok=True)
  with open(path + ".tmp", "w") as file:
    json.dump(dict(record), file, indent=2, sort_keys=True)
  os.replace(path + ".tmp", path)
  return path


def read_end(workdir: str) -> dict[str, Any] | None:
  """WORKDIR/train_end.json, or None when the run has not finished."""
  path = os.path.join(workdir, END_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as file:
    return json.load(file)
