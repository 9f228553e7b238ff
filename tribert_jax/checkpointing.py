"""Checkpoints of a training run (orbax): save / restore with a keep policy, read another run's.

Layout inside a workdir:
  checkpoints/<step>/{state,progress}   the last config.keep_checkpoints saves (async); `progress`
                                        is JSON: step, data position, seed
  checkpoints_best/<step>/{state,progress}   the one save with the best validation SDR

The resume / initialisation order and the checkpoint -> parameters mapping live in
tribert_jax/initialization.py.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "checkpoints_best"


class NonFiniteStateError(RuntimeError):
  """The state to be saved holds NaN or Inf: refusing to overwrite good checkpoints with it."""


def _manager(directory: str, *, max_to_keep: int | None, best_metric: str | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager holding a pytree `state` and a JSON `progress` record per step."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=not read_only,
      read_only=read_only,
      # Async saves overlap training on one process. With several processes, orbax's background
      # commit barrier was seen to hang (one process waiting in it while the other had already
      # finished its saves and was shutting down); synchronous saves keep every barrier in
      # program order on all processes.
      enable_async_checkpointing=jax.process_count() == 1,
      best_fn=(lambda metrics: float(metrics[best_metric])) if best_metric else None,
      best_mode="max",
      keep_checkpoints_without_metrics=best_metric is None,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "progress"))


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that carry the target shardings, so restore lands arrays in place."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_state, shardings)


def all_finite(tree: Any) -> bool:
  """True when every floating-point leaf of tree is finite (one fused reduction)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  if not leaves:
    return True
  return bool(jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])))


class Checkpointer:
  """Keep-last-N checkpoints plus the best-by-validation-metric one (SDR for TriBERT), for one
  workdir."""

  def __init__(self, workdir: str, keep: int = 2, best_metric: str = "sdr"):
    self.workdir = workdir
    self.best_metric = best_metric
    self.latest = _manager(os.path.join(workdir, LATEST_DIR), max_to_keep=keep)
    self.best = _manager(os.path.join(workdir, BEST_DIR), max_to_keep=1,
                         best_metric=best_metric)

  def latest_step(self) -> int | None:
    """Step of the newest complete checkpoint in this workdir, or None."""
    return self.latest.latest_step()

  def save(self, step: int, state: Any, progress: Mapping[str, Any], *,
           metrics: Mapping[str, float] | None = None, force: bool = False) -> None:
    """Saves asynchronously (and into the best slot when metrics are given); refuses NaN/Inf."""
    if not all_finite(state):
      raise NonFiniteStateError(
          f"state at step {step} holds NaN/Inf values; not saving it (the previous checkpoints "
          f"in {self.workdir} are kept)")
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              progress=ocp.args.JsonSave(dict(progress)))
    if self.latest.latest_step() != step:
      self.latest.save(step, args=args, force=force)
    if metrics is not None:
      if not np.isfinite(metrics[self.best_metric]):
        logging.warning("validation %s at step %d is not finite; not a best candidate",
                        self.best_metric, step)
        return
      self.best.save(step, args=args, metrics={k: float(v) for k, v in metrics.items()},
                     force=True)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """(state, progress) of the latest checkpoint (arrays placed as abstract_state says)."""
    return self.restore(abstract_state)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, dict[str, Any]] | None:
    """(state, progress) of checkpoint `step` (default: latest); None if there is none."""
    step = self.latest.latest_step() if step is None else step
    if step is None:
      return None
    if step not in self.latest.all_steps():
      raise FileNotFoundError(f"no checkpoint of step {step} in {self.workdir}/{LATEST_DIR} "
                              f"(have {sorted(self.latest.all_steps())})")
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["progress"])

  def wait_until_finished(self) -> None:
    """Blocks until pending async saves are on disk."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the managers."""
    self.latest.close()
    self.best.close()


def resolve_checkpoint_dir(path: str, which: str = "latest") -> tuple[str, int]:
  """(manager directory, step) for a workdir or a checkpoints folder; which = latest | best.

  Accepts WORKDIR (uses WORKDIR/checkpoints or WORKDIR/checkpoints_best), the checkpoints folder
  itself, or a step folder inside it (WORKDIR/checkpoints/1000).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  base = os.path.basename(path.rstrip("/"))
  if base.isdigit() and os.path.isdir(os.path.join(path, "state")):
    return os.path.dirname(path), int(base)
  # A "best" request falls back to the latest checkpoint when the run never evaluated (no
  # checkpoints_best/, or an empty one), with a warning.
  subdirs = (BEST_DIR, LATEST_DIR) if which == "best" else (LATEST_DIR,)
  candidates = [os.path.join(path, d) for d in subdirs if os.path.isdir(os.path.join(path, d))]
  candidates.append(path)
  for directory in candidates:
    manager = _manager(directory, max_to_keep=None, read_only=True)
    step = manager.best_step() if which == "best" else manager.latest_step()
    if step is None:
      step = manager.latest_step()
    manager.close()
    if step is not None:
      if which == "best" and os.path.basename(directory) != BEST_DIR:
        logging.warning("%s has no best checkpoint; using the latest one (step %d) of %s", path,
                        step, directory)
      return directory, step
  raise FileNotFoundError(f"no complete checkpoint found under {path} (looked in {candidates})")


def load_state_tree(path: str, which: str = "latest", step: int | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any], int]:
  """Reads another run's checkpoint without a target: (state as nested dicts of numpy arrays,
  progress record, step). Used to initialise one phase from another."""
  directory, found_step = resolve_checkpoint_dir(path, which)
  step = found_step if step is None else step
  step_dir = os.path.join(directory, str(step))
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(os.path.join(step_dir, "state")).item_metadata.tree
  # Every leaf comes back as a host numpy array: the source run's mesh need not exist here.
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  state = checkpointer.restore(os.path.join(step_dir, "state"),
                               args=ocp.args.PyTreeRestore(restore_args=restore_args))
  progress = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(
      os.path.join(step_dir, "progress"))
  return state, dict(progress), step
