"""The training loop shared by every phase (pose pre-training, TriBERT pre-training, fine-tuning,
Sound-of-Pixels); model-specific pieces come from the phase's Task (tribert_jax/tasks/).

train_and_evaluate(config, workdir) is what main.py calls. Phases:
  1. dataset: data_pipeline.prepare.prepare_dataset (SynthMUSIC on first use, class subsets);
  2. mesh, task (tasks.registry.get_task), optimiser;
  3. state: tribert_jax.initialization.restore_or_initialize (resume -> config.init.checkpoint
     -> pretrained weights / pose init -> scratch), sharded from the logical axis rules;
  4. loop: one jitted train step (donated state, per-step rng = fold_in(rng, step), gradient
     accumulation over micro-batches with lax.scan), NaN/Inf check every step, one console line
     and TensorBoard scalars per log interval, periodic evaluation (best checkpoint by the task's
     best_metric) and async checkpoints. A step that is saved is saved BEFORE it is evaluated
     (an evaluation that fails never costs the checkpoint); the best slot follows the evaluation.
     The step is compiled ahead of time on the first batch; the training clock
     (tribert_jax/train_clock.py) starts after it and is paused for evaluations and saves. The
     run ends at config.num_train_steps or at the first step after config.max_train_seconds of
     training, and writes WORKDIR/train_end.json.

Failures: NonFiniteError names the loss terms, the gradients and the clips of the batch
(training batches carry host-only "clip_ids", popped before the batch goes to the devices);
checkpoints are finished and closed on every exit path. main.py turns any exception into an
exit code (never a hang).
"""

from __future__ import annotations

import collections
import datetime
import os
import time
from typing import Any, Iterator, Mapping

from absl import logging
import jax
import ml_collections
import numpy as np

from data_pipeline.layout import reader
from data_pipeline import prepare
from tribert_jax import checkpointing
from tribert_jax import initialization
from tribert_jax import monitoring
from tribert_jax import optimizers
from tribert_jax import pose_feature_cache
from tribert_jax import sharding
from tribert_jax import train_clock
from tribert_jax.train_step import make_train_step
from tribert_jax import validation
from tribert_jax.tasks import registry
from tribert_jax.tasks.base import Task


class NonFiniteError(FloatingPointError):
  """A loss term or gradient became NaN/Inf; training stops without saving that state."""


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The task of config.phase, with the class names of the dataset at config.data.root."""
  return registry.get_task(config, reader.read_labels(config.data.root).classes)


def check_finite(step: int, metrics: Mapping[str, np.ndarray],
                 clip_ids: np.ndarray | None = None) -> None:
  """Raises NonFiniteError naming the loss terms / gradient norms that are NaN or Inf, and the
  clips of the batch (clip_ids [B, N], this process's rows) when given."""
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    clips = ""
    if clip_ids is not None:
      examples = ["+".join(str(c) for c in np.atleast_1d(row)) for row in np.asarray(clip_ids)]
      clips = (f"; the batch's clips (this process, one mixture each): {', '.join(examples)} "
               "(check their audio and pose files)")
    terms = [k for k in bad if k.startswith("loss")]
    grads = [k.removeprefix("grad_norm/") for k in bad if k.startswith("grad_norm/")]
    raise NonFiniteError(
        f"non-finite values at training step {step}: loss terms {terms or 'all finite'}, "
        f"gradients of {grads or ('(global norm only)' if 'grad_norm' in bad else 'none')}; "
        f"values {{{', '.join(f'{k}: {float(np.mean(metrics[k]))}' for k in bad)}}}{clips}. "
        "Stopping without saving this state; the last good checkpoint is kept.")


# ----------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------


def train_batches(config: ml_collections.ConfigDict, start_batch: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Host training batches from batch number start_batch on: the same data an uninterrupted run
  with the same seed sees there (the pipeline indexes its plans by seed/epoch/position). Each
  carries the host-only "clip_ids" (for the NonFiniteError message)."""
  data = config.data
  if "with_clip_ids" in data and not data.with_clip_ids:
    data = ml_collections.ConfigDict(data.to_dict())
    data.with_clip_ids = True
  # Imported here: TensorFlow (~0.5 GiB resident) only where a pipeline is built.
  from data_pipeline.loading import pipeline as loading_pipeline
  return iter(loading_pipeline.build_train_pipeline(data, seed=config.seed,
                                                    start_batch=start_batch))


def set_validation_cache(config: ml_collections.ConfigDict, workdir: str) -> None:
  """config.data.validation_cache "" -> $TRIBERT_VALIDATION_CACHE or WORKDIR/clip_validation.json
  (clip validations are cached there, by file size and mtime, so a resumed run does not decode
  every frame again)."""
  if "validation_cache" in config.data and not config.data.validation_cache:
    config.data.validation_cache = validation.default_validation_cache(workdir)


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Records the final config (command-line overrides applied) as WORKDIR/config.json."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as file:
      file.write(config.to_json_best_effort(indent=2, sort_keys=True))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config.phase in workdir (resuming if it holds a checkpoint) and evaluates.

  Returns {"step", "train": last logged train scalars, "eval": last evaluation scalars,
  "history": [(step, train scalars) for every logged step]}.
  """
  set_validation_cache(config, workdir)
  prepare.prepare_dataset(config, jax.process_index())
  if pose_feature_cache.enabled(config):
    pose_feature_cache.ensure_cache(config, workdir)  # sets config.data.pose_features_dir
  write_config(config, workdir)
  writer = monitoring.create_writer(workdir)
  writer.write_hparams(monitoring.flat_hparams(config))
  mesh = sharding.make_mesh(config.mesh)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())
  task = make_task(config)
  total_steps = int(config.num_train_steps)
  # Parameter names for the per-module learning-rate check, from the abstract init.
  param_names = list(jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))["params"])
  tx, schedule = optimizers.make_optimizer(config.optim, total_steps, param_names,
                                           frozen=task.frozen)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric)
  state, shardings, progress = initialization.restore_or_initialize(task, tx, config, mesh,
                                                                     checkpointer)
  start_step = int(state.step)
  data_position = progress.get("data", {})
  if data_position and data_position.get("process_count") != jax.process_count():
    logging.warning("checkpoint was written by %s processes, now %d: the data order differs "
                    "from an uninterrupted run", data_position.get("process_count"),
                    jax.process_count())

  batch_sharding = sharding.data_sharding(mesh)
  train_step = jax.jit(make_train_step(task, tx, schedule, config, mesh),
                       in_shardings=(shardings, batch_sharding),
                       out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  batches = train_batches(config, start_step)
  global_batch = int(config.data.batch_size)

  clock = train_clock.TrainClock(train_clock.restored_seconds(progress),
                                 train_clock.budget_seconds(config))
  compiled_step = None  # train_step compiled on the first batch, before the clock starts

  def progress_record(step: int) -> dict[str, Any]:
    return {"step": step, "phase": config.phase, train_clock.PROGRESS_KEY: clock.seconds,
            "data": {"seed": int(config.seed), "batches_consumed": step,
                     "global_batch": global_batch, "process_count": jax.process_count()}}

  pending: collections.deque = collections.deque()
  logged: list[dict[str, np.ndarray]] = []
  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  history: list[tuple[int, dict[str, float]]] = []
  log_start = (time.monotonic(), start_step)

  def drain(limit: int) -> None:
    """Waits for finished steps until at most `limit` are in flight; NaN/Inf check each."""
    while len(pending) > limit:
      step, metrics, clip_ids = pending.popleft()
      host = jax.device_get(metrics)
      check_finite(step, host, clip_ids)
      logged.append(host)

  quick_every = int(config.eval.get("quick_every_steps", 0) or 0)
  quick_split = config.eval.get("quick_split", "val")
  quick_history: list[tuple[int, dict[str, float]]] = []
  run_start = time.monotonic()

  def quick_evaluation(step: int) -> None:
    """The cheap periodic evaluation (config.eval.quick_*): TensorBoard + one JSON line with the
    training clock's seconds (compilation, evaluations and saves excluded; across resumes)."""
    with clock.paused():
      scalars = task.quick_evaluate(state, mesh)
    writer.write_scalars(step, {f"quick_eval/{k}": v for k, v in scalars.items()})
    quick_history.append((step, scalars))
    monitoring.append_json_line(
        os.path.join(workdir, "eval", f"quick_{quick_split}.jsonl"),
        {"step": step, "wall_seconds": time.monotonic() - run_start,
         "train_seconds": clock.seconds, **scalars})
    logging.info("quick evaluation at step %d: SDR %.2f (median %.2f, mixture %.2f) dB on %d "
                 "mixtures", step, scalars["sdr"], scalars["sdr_median"],
                 scalars["mixture_sdr"], int(scalars["num_scored"]))

  logging.info("training %s from step %d to %d (global batch %d, %d micro-batches; training "
               "budget %s s, %.1f s spent)", config.phase, start_step, total_steps, global_batch,
               config.grad_accum_steps, clock.budget, clock.seconds)
  # A resumed run whose budget was already spent makes no step. Otherwise the budget is checked
  # once per step, after it (is_last): with several processes that check is a collective.
  last_step = start_step if train_clock.expired_everywhere(clock) else total_steps
  try:
    for step in range(start_step + 1, last_step + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        host_batch = next(batches)
        clip_ids = host_batch.pop("clip_ids", None)  # host-only strings
        batch = sharding.host_to_global(host_batch, mesh)
        if compiled_step is None:
          compile_start = time.monotonic()
          compiled_step = train_step.lower(state, batch).compile()
          logging.info("train step compiled in %.1f s", time.monotonic() - compile_start)
          clock.start()
        state, metrics = compiled_step(state, batch)
      pending.append((step, metrics, clip_ids))
      # Bounding the steps in flight avoids the CPU all-reduce deadlock (see config comment).
      drain(int(config.max_steps_in_flight) - 1)
      is_last = step == total_steps or train_clock.expired_everywhere(clock)
      if is_last:
        drain(0)
        clock.stop()  # training is over: the saves and evaluations below are not
      if step % config.log_every_steps == 0 or is_last:
        drain(0)
        now = time.monotonic()
        last_train = {f"train/{k}": float(np.mean([m[k] for m in logged])) for k in logged[0]}
        seconds = now - log_start[0]
        steps_done = step - log_start[1]
        last_train["train/steps_per_sec"] = steps_done / max(seconds, 1e-9)
        last_train["train/examples_per_sec"] = steps_done * global_batch / max(seconds, 1e-9)
        writer.write_scalars(step, last_train)
        history.append((step, last_train))
        # The one console line per log interval (clu's LoggingWriter is not used: see
        # monitoring.create_writer).
        eta = (total_steps - step) / max(last_train["train/steps_per_sec"], 1e-9)
        if clock.budget is not None:
          eta = min(eta, max(clock.budget - clock.seconds, 0.0))
        logging.info("step %d/%d: loss %.4f, %.2f steps/s, %.1f examples/s, ETA %s", step,
                     total_steps, last_train["train/loss"], last_train["train/steps_per_sec"],
                     last_train["train/examples_per_sec"],
                     datetime.timedelta(seconds=round(min(eta, 1e8))))
        logged.clear()
        log_start = (now, step)
      evaluate_now = step % config.eval_every_steps == 0 or (is_last and config.eval.at_end)
      if evaluate_now or step % config.checkpoint_every_steps == 0 or is_last:
        # Saved before the evaluation: a failing evaluation does not lose this step.
        drain(0)
        with clock.paused():
          checkpointer.save(step, state, progress_record(step))
      if (task.quick_evaluate is not None and quick_every
          and (step % quick_every == 0 or is_last)):
        drain(0)
        quick_evaluation(step)
      if evaluate_now:
        with clock.paused():
          last_eval = task.evaluate(state, mesh, workdir, step, writer)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in last_eval.items()})
          checkpointer.save(step, state, progress_record(step), metrics=last_eval)  # best slot
      if is_last:
        log_start = (time.monotonic(), step)  # evaluation time is not training throughput
        break
    drain(0)
    clock.stop()
    end = {"step": int(state.step), "train_seconds": clock.seconds,
           "reason": "steps" if int(state.step) >= total_steps else "seconds",
           "num_train_steps": total_steps, "max_train_seconds": clock.budget}
  finally:
    # Pending async saves complete (never with a non-finite state: save() checks); an I/O error
    # here is a CheckpointSaveError naming the step and the folder.
    try:
      writer.flush()
    finally:
      checkpointer.close()
  if jax.process_index() == 0:  # after the last save is complete: a finished run
    train_clock.write_end(workdir, end)
  logging.info("training ended at step %d after %.1f s of training (%s budget)", end["step"],
               end["train_seconds"], end["reason"])
  return {"step": int(state.step), "train": last_train, "eval": last_eval, "history": history,
          "quick_eval": quick_history, "end": end}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, float]:
  """Scores the latest (or the given step's) checkpoint of workdir on config.data.eval_split.
  Read-only until a checkpoint is restored (then the report and scalars are written)."""
  prepare.prepare_dataset(config, jax.process_index())
  if pose_feature_cache.enabled(config):
    pose_feature_cache.ensure_cache(config, workdir)
  mesh = sharding.make_mesh(config.mesh)
  task = make_task(config)
  tx, _ = optimizers.make_optimizer(config.optim, int(config.num_train_steps),
                                    frozen=task.frozen)
  _, abstract, shardings, _ = initialization.make_state_initializer(task, tx, config, mesh)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric, read_only=True)
  try:
    restored = checkpointer.restore(checkpointing.abstract_with_shardings(abstract, shardings),
                                    step)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/{checkpointing.LATEST_DIR}")
  state, _ = restored
  writer = monitoring.create_writer(workdir)
  scalars = task.evaluate(state, mesh, workdir, int(state.step), writer)
  writer.write_scalars(int(state.step), {f"eval_{config.data.eval_split}/{k}": v
                                         for k, v in scalars.items()})
  writer.flush()
  return scalars
