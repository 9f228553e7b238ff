"""Training loop shared by every phase (pose pre-training, TriBERT pre-training, fine-tuning).

train_and_evaluate(config, workdir) is what main.py calls. Phases:
  1. dataset: SynthMUSIC generated on first use; class-subset view for fine-tuning on MUSIC;
  2. mesh + abstract init (jax.eval_shape) -> shardings from the logical axis rules -> sharded
     init (jax.jit with out_shardings);
  3. state: resume from WORKDIR/checkpoints, else config.init.checkpoint (another phase), else
     scratch (+ config.pose_init_checkpoint for the ST-GCN);
  4. loop: one jitted train step (donated state, per-step rng = fold_in(rng, step), gradient
     accumulation over micro-batches with lax.scan), NaN/Inf check every step, scalars,
     periodic evaluation (best checkpoint by validation SDR) and async checkpoints.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Iterator, Mapping

from absl import logging
from clu import periodic_actions
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipeline import dataset_index
from data_pipeline import input_pipeline
from tribert_jax import audio
from tribert_jax import checkpointing
from tribert_jax import evaluate
from tribert_jax import losses
from tribert_jax import monitoring
from tribert_jax import optimizers
from tribert_jax import sharding
from tribert_jax.models import pretrained
from tribert_jax.models import tribert
from tribert_jax.train_state import TrainState


class NonFiniteError(FloatingPointError):
  """A loss term or gradient became NaN/Inf; training stops without saving that state."""


# ----------------------------------------------------------------------------------------------
# Dataset preparation (what `python main.py` does before training, so no extra step is needed).
# ----------------------------------------------------------------------------------------------


def prepare_dataset(config: ml_collections.ConfigDict) -> pathlib.Path:
  """Makes config.data.root exist: generates SynthMUSIC there (config.dataset == "synthmusic")
  or, with config.class_subset.classes, writes a class-subset view of its source root."""
  root = pathlib.Path(config.data.root)
  subset = config.class_subset
  source = pathlib.Path(subset.source_root) if subset.classes else root
  if config.dataset == "synthmusic":
    from data_pipeline import synthmusic  # pylint: disable=g-import-not-at-top
    if jax.process_index() == 0:
      # A no-op when a complete copy with the same parameters is there already.
      synthmusic.generate(source, size=config.synthmusic_size, seed=config.synthmusic_seed,
                          progress=True)
    _wait_for_file(source / synthmusic.COMPLETE_MARKER)
  elif not (source / "labels.json").is_file():
    raise FileNotFoundError(
        f"config.data.root={source} has no labels.json; preprocess the {config.dataset} videos "
        "with data_pipeline/preprocess.py first (or use --config.dataset=synthmusic)")
  if subset.classes and not (root / "labels.json").is_file():
    if jax.process_index() == 0:
      write_class_subset(source, root, tuple(subset.classes), subset.dataset_name)
    _wait_for_file(root / "labels.json")
  return root


def _wait_for_file(path: pathlib.Path, timeout_s: float = 3600.0) -> None:
  """Other processes wait while process 0 writes the dataset (shared filesystem)."""
  start = time.monotonic()
  while not path.is_file():
    if time.monotonic() - start > timeout_s:
      raise TimeoutError(f"{path} did not appear within {timeout_s} s")
    time.sleep(2.0)


def write_class_subset(source: pathlib.Path, target: pathlib.Path, classes: tuple[str, ...],
                       dataset_name: str) -> None:
  """A dataset root holding only clips whose labels are all in `classes` (e.g. MUSIC's 11 of
  MUSIC21's 21): filtered index and mixture CSVs, labels.json with the subset, and symbolic
  links to the source's media folders (nothing is copied)."""
  info = dataset_index.read_labels(source)
  unknown = sorted(set(classes) - set(info.classes))
  if unknown:
    raise ValueError(f"config.class_subset.classes names {unknown}, not classes of "
                     f"{source}/labels.json")
  keep = set(classes)
  staging = target.with_name(target.name + ".partial")
  (staging / "index").mkdir(parents=True, exist_ok=True)
  for folder in ("frames", "audio", "audio_sources", "pose"):
    link = staging / folder
    if (source / folder).exists() and not link.exists():
      link.symlink_to((source / folder).resolve(), target_is_directory=True)
  for index_file in sorted((source / "index").glob("*.csv")):
    with index_file.open(newline="") as handle:
      reader = csv.DictReader(handle)
      fields, rows = reader.fieldnames, list(reader)
    if "labels" in fields:  # a split index: keep clips within the subset
      kept = [r for r in rows if set(filter(None, r["labels"].split(";"))) <= keep]
    else:  # a mixture list: keep mixtures whose clips all survive
      split = index_file.name.split("_mixtures_")[0]
      with (source / "index" / f"{split}.csv").open(newline="") as handle:
        ids = {r["id"] for r in csv.DictReader(handle)
               if set(filter(None, r["labels"].split(";"))) <= keep}
      kept = [r for r in rows if set(filter(None, r["clips"].split(";"))) <= ids]
    with (staging / "index" / index_file.name).open("w", newline="") as handle:
      writer = csv.DictWriter(handle, fieldnames=fields)
      writer.writeheader()
      writer.writerows(kept)
    logging.info("class subset %s: kept %d of %d rows", index_file.name, len(kept), len(rows))
  labels = {"dataset": dataset_name, "classes": sorted(classes), "sample_rate": info.sample_rate,
            "fps": info.fps}
  (staging / "labels.json").write_text(json.dumps(labels, indent=2))
  staging.rename(target)  # atomic: a half-written view is never mistaken for a dataset


# ----------------------------------------------------------------------------------------------
# Tasks: what differs between TriBERT and the pose classifier.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
  """Model-specific pieces of a training phase."""
  model: nn.Module
  # rng -> variables (boxed with logical axis names), built from example inputs.
  init_variables: Callable[[jax.Array], dict[str, Any]]
  # (params, batch_stats, batch, rng) -> (total loss, (named loss terms, new batch_stats)).
  loss_fn: Callable[..., tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]
  # (state, mesh, workdir, step, writer) -> scalar metrics: evaluates on config.data.eval_split,
  # writes its report into the workdir and its examples to TensorBoard.
  evaluate: Callable[..., dict[str, float]]
  best_metric: str  # summary key that picks the best checkpoint (higher is better)


def build_model(model_config: ml_collections.ConfigDict) -> nn.Module:
  """The separation model named by model_config.name: TriBERT (default) or Sound-of-Pixels."""
  name = model_config.get("name", "tribert")
  if name == "tribert":
    return tribert.TriBERT(config=model_config)
  if name == "sound_of_pixels":
    from tribert_jax.models import sound_of_pixels  # pylint: disable=g-import-not-at-top
    return sound_of_pixels.SoundOfPixels(config=model_config)
  raise ValueError(f"config.model.name={name!r}: expected tribert or sound_of_pixels")


def tribert_task(config: ml_collections.ConfigDict, class_names: list[str]) -> Task:
  """Separation phases: mask loss (+ TriBERT's classification losses), separation evaluation."""
  model = build_model(config.model)

  def init_variables(rng):
    params_rng, dropout_rng, masking_rng = jax.random.split(rng, 3)
    inputs = tribert.example_inputs(config.model, batch_size=1)
    return model.init({"params": params_rng, "dropout": dropout_rng, "masking": masking_rng},
                      inputs, train=False)

  def loss_fn(params, batch_stats, batch, rng):
    features = audio.spectral_features(batch["waveform"], batch["mixture"], config.data)
    inputs = evaluate.model_inputs(batch, features)
    dropout_rng, masking_rng = jax.random.split(rng)
    (outputs, _), mutated = model.apply(
        {"params": params, "batch_stats": batch_stats}, inputs, train=True,
        rngs={"dropout": dropout_rng, "masking": masking_rng}, mutable=["batch_stats"])
    targets = dict(gt_masks=features["gt_masks"], weight=features["weight"],
                   labels=batch["labels"], valid=batch["valid"])
    total, terms = losses.tribert_loss(outputs, targets, config.model.loss_weights)
    return total, (terms, mutated["batch_stats"])

  separate = evaluate.make_separate_fn(model, config)
  eval_pipeline = None

  def run_evaluation(state, mesh, workdir, step, writer):
    nonlocal eval_pipeline
    if eval_pipeline is None:
      eval_pipeline = input_pipeline.build_eval_pipeline(config.data)
    batch_sharding = sharding.data_sharding(mesh)
    separate_jit = jax.jit(separate, out_shardings=batch_sharding)
    summary, examples = evaluate.evaluate(
        separate_jit, state.variables(), eval_pipeline,
        lambda batch: sharding.host_to_global(batch, mesh), mesh, batch_sharding.spec, config,
        class_names, max_batches=config.eval.max_batches,
        num_examples_to_show=config.eval.num_examples)
    json_path, _ = evaluate.write_report(summary, workdir, f"{config.data.eval_split}_step_{step}")
    evaluate.write_examples(writer, step, examples, config.data.sample_rate)
    logging.info("evaluation at step %d: SDR %.2f (mixture %.2f, ideal mask %.2f) dB on %d "
                 "mixtures, skipped %s; report %s", step, summary["sdr"], summary["mixture_sdr"],
                 summary["ideal_mask_sdr"], summary["num_scored"], summary["skipped"], json_path)
    return evaluate.scalar_metrics(summary)

  return Task(model=model, init_variables=init_variables, loss_fn=loss_fn,
              evaluate=run_evaluation, best_metric="sdr")


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The task of config.phase, with the dataset's class names."""
  class_names = list(dataset_index.read_labels(config.data.root).classes)
  if config.phase == "pose_pretrain":
    from tribert_jax import pose_pretrain  # pylint: disable=g-import-not-at-top
    return pose_pretrain.pose_task(config, class_names)
  if config.phase in ("pretrain", "finetune", "sound_of_pixels"):
    return tribert_task(config, class_names)
  raise ValueError(f"config.phase={config.phase!r}: expected pose_pretrain, pretrain, finetune "
                   "or sound_of_pixels")


# ----------------------------------------------------------------------------------------------
# State: abstract init, shardings, sharded init, initialisation from other phases.
# ----------------------------------------------------------------------------------------------


def sharding_rules(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
  """Logical axis rules of config.model as a list of (logical, mesh axis) pairs."""
  return [tuple(rule) for rule in config.model.sharding_rules]


def logical_to_mesh_sharding(specs: Any, mesh: jax.sharding.Mesh,
                             rules: list[tuple[str, Any]]) -> Any:
  """Logical PartitionSpecs -> NamedShardings: each logical name takes the mesh axis of its
  first rule (unknown names: replicated); a mesh axis already used by an earlier dimension of
  the same array is dropped. Unlike flax's version this accepts a logical name repeated within
  one array (e.g. a joints x joints adjacency), which then simply maps to the same axis once."""
  table: dict[str, Any] = {}
  for logical, mesh_axis in rules:
    table.setdefault(logical, mesh_axis)

  def convert(spec):
    used, axes = set(), []
    for name in spec:
      mesh_axis = table.get(name) if isinstance(name, str) else name
      parts = mesh_axis if isinstance(mesh_axis, tuple) else (mesh_axis,)
      parts = tuple(p for p in parts if p is not None and p not in used
                    and p in mesh.axis_names)
      used.update(parts)
      axes.append(None if not parts else parts[0] if len(parts) == 1 else parts)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*axes))

  return jax.tree.map(convert, specs,
                      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def make_state_initializer(task: Task, tx: optax.GradientTransformation,
                           config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Returns (init_fn jitted with sharded outputs, abstract state, state shardings, init rng)."""
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(config.seed))

  def boxed_init(rng):
    variables = task.init_variables(rng)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=run_rng)

  # Abstract init: shapes and logical axis names only, no FLOPs and no memory.
  boxed = jax.eval_shape(boxed_init, init_rng)
  # optax.multi_transform (per-module learning rates) masks each group's moments by putting
  # MaskedNode() inside the parameter's logical box; unboxing leaves a bare MaskedNode there, so
  # the sharding tree must hold one too (not the box's PartitionSpec).
  boxed = jax.tree.map(
      lambda x: x.value if isinstance(getattr(x, "value", None), optax.MaskedNode) else x,
      boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  specs = nn.get_partition_spec(boxed)
  shardings = logical_to_mesh_sharding(specs, mesh, sharding_rules(config))
  init = lambda rng: nn.meta.unbox(boxed_init(rng))  # noqa: E731
  abstract = jax.eval_shape(init, init_rng)
  return jax.jit(init, out_shardings=shardings), abstract, shardings, init_rng


def _place(tree: Any, shardings: Any) -> Any:
  """Host numpy tree -> global arrays with the given shardings (works on every process)."""
  def put(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
  return jax.tree.map(put, tree, shardings)


def _map_collection(state_collection: Any, source: Mapping[str, Any], shardings: Any,
                    prefix_map, reinit_patterns, what: str) -> Any:
  """Maps one variable collection (params or batch_stats) from a source checkpoint."""
  target = jax.tree.map(np.asarray, jax.device_get(state_collection))
  merged, report = checkpointing.map_parameters(
      target, source, prefix_map=prefix_map, reinit_patterns=reinit_patterns)
  logging.info("%s: %s", what, report.summary())
  merged = jax.tree.unflatten(jax.tree.structure(state_collection),
                              jax.tree.leaves(merged))  # same container types as the state
  return _place(merged, shardings)


def init_from_checkpoint(state: TrainState, shardings: TrainState, path: str, which: str,
                         prefix_map, reinit_patterns, copy_batch_stats: bool) -> TrainState:
  """Copies another phase's parameters into a freshly initialised state (optimiser state,
  step and rng stay fresh). See checkpointing.map_parameters for the mapping rules."""
  source, _, step = checkpointing.load_state_tree(path, which)
  logging.info("initialising from %s (step %d)", path, step)
  prefix_map = [tuple(p) for p in prefix_map]
  params = _map_collection(state.params, source["params"], shardings.params, prefix_map,
                           reinit_patterns, "params")
  batch_stats = state.batch_stats
  if copy_batch_stats and state.batch_stats and source.get("batch_stats"):
    batch_stats = _map_collection(state.batch_stats, source["batch_stats"],
                                  shardings.batch_stats, prefix_map, reinit_patterns,
                                  "batch_stats")
  return state.replace(params=params, batch_stats=batch_stats)


# ----------------------------------------------------------------------------------------------
# Train step.
# ----------------------------------------------------------------------------------------------


def _split_microbatches(x: jax.Array, num: int, mesh: jax.sharding.Mesh) -> jax.Array:
  """[B, ...] -> [num, B / num, ...], micro-batch m = rows m, num + m, ...: each device keeps
  its own rows (the batch axis stays sharded on the second dimension)."""
  b = x.shape[0]
  x = x.reshape((b // num, num) + x.shape[1:]).swapaxes(0, 1)
  spec = jax.sharding.PartitionSpec(None, sharding.batch_axes(mesh))
  return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, spec))


def _top_level_grad_norms(grads: Mapping[str, Any]) -> dict[str, jax.Array]:
  """Global norm of the gradient of every top-level module (names which one went non-finite)."""
  return {f"grad_norm/{name}": optax.global_norm(g) for name, g in grads.items()}


def make_train_step(task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """Returns train_step(state, batch) -> (state, metrics), to be jitted with donated state."""
  num_micro = int(config.grad_accum_steps)
  grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    rng = jax.random.fold_in(state.rng, state.step)
    if num_micro == 1:
      (loss, (terms, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch, rng)
    else:
      micro = jax.tree.map(lambda x: _split_microbatches(x, num_micro, mesh), batch)

      def accumulate(carry, inputs):
        grads_sum, batch_stats = carry
        index, micro_batch = inputs
        (loss, (terms, batch_stats)), grads = grad_fn(
            state.params, batch_stats, micro_batch, jax.random.fold_in(rng, index))
        return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), (loss, terms)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, batch_stats), (losses_, terms) = jax.lax.scan(
          accumulate, (zeros, state.batch_stats), (jnp.arange(num_micro), micro))
      grads = jax.tree.map(lambda g: g / num_micro, grads)
      loss = jnp.mean(losses_)
      terms = jax.tree.map(jnp.mean, terms)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **{f"loss/{k}": v for k, v in terms.items()},
               "grad_norm": optax.global_norm(grads), **_top_level_grad_norms(grads),
               "learning_rate": schedule(state.step)}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  return train_step


def check_finite(step: int, metrics: Mapping[str, np.ndarray]) -> None:
  """Raises NonFiniteError naming the loss terms / gradient norms that are NaN or Inf."""
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    terms = [k for k in bad if k.startswith("loss")]
    grads = [k.removeprefix("grad_norm/") for k in bad if k.startswith("grad_norm/")]
    raise NonFiniteError(
        f"non-finite values at training step {step}: loss terms {terms or 'all finite'}, "
        f"gradients of {grads or ('(global norm only)' if 'grad_norm' in bad else 'none')}; "
        f"values {{{', '.join(f'{k}: {float(np.mean(metrics[k]))}' for k in bad)}}}. "
        "Stopping without saving this state; the last good checkpoint is kept.")


# ----------------------------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------------------------


def train_batches(config: ml_collections.ConfigDict, start_batch: int
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Host training batches from batch number start_batch on: the same data an uninterrupted run
  with the same seed sees there (the pipeline indexes its plans by seed/epoch/position)."""
  return iter(input_pipeline.build_train_pipeline(config.data, seed=config.seed,
                                                  start_batch=start_batch))


# ----------------------------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------------------------


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Records the final config (command-line overrides applied) as WORKDIR/config.json."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as file:
      file.write(config.to_json_best_effort(indent=2, sort_keys=True))


def restore_or_initialize(task: Task, tx: optax.GradientTransformation,
                          config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                          checkpointer: checkpointing.Checkpointer
                          ) -> tuple[TrainState, TrainState, dict[str, Any]]:
  """Resume order: WORKDIR checkpoint -> config.init.checkpoint -> scratch (+ pose init).

  Returns (state, state shardings, progress record of the restored checkpoint or {}).
  """
  init_fn, abstract, shardings, init_rng = make_state_initializer(task, tx, config, mesh)
  restored = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(abstract, shardings))
  if restored is not None:
    state, progress = restored
    logging.info("resumed from %s at step %d", checkpointer.workdir, int(state.step))
    return state, shardings, progress
  state = init_fn(init_rng)
  state = apply_pretrained_weights(state, shardings, config)
  if config.init.checkpoint:
    state = init_from_checkpoint(state, shardings, config.init.checkpoint, config.init.which,
                                 config.init.prefix_map, config.init.reinit_patterns,
                                 config.init.copy_batch_stats)
  elif config.get("pose_init_checkpoint"):
    state = init_from_checkpoint(state, shardings, config.pose_init_checkpoint, "best",
                                 POSE_ENCODER_PREFIX_MAP, (), True)
  return state, shardings, {}


def apply_pretrained_weights(state: TrainState, shardings: TrainState | None,
                             config: ml_collections.ConfigDict) -> TrainState:
  """A fresh state with the weights config.model names loaded (ImageNet ResNet-50 .npz at
  config.model.visual.pretrained_path); unchanged when it names none. Another phase's checkpoint
  (config.init.checkpoint), applied afterwards, takes precedence over these."""
  model_config = config.model
  if (model_config.get("name", "tribert") != "tribert" or "visual" not in model_config
      or not (model_config.visual.enabled and model_config.visual.pretrained_path)):
    return state
  variables = pretrained.load_pretrained(
      {"params": state.params, "batch_stats": state.batch_stats}, model_config)
  params, batch_stats = variables["params"], variables["batch_stats"]
  if shardings is not None:
    params = jax.device_put(params, shardings.params)
    batch_stats = jax.device_put(batch_stats, shardings.batch_stats)
  return state.replace(params=params, batch_stats=batch_stats)


# PoseClassifier's ST-GCN ("stgcn/...") is TriBERT's pose encoder's ST-GCN.
POSE_ENCODER_PREFIX_MAP = (("stgcn", "pose_encoder/stgcn"),)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains config.phase in workdir (resuming if it holds a checkpoint) and evaluates.

  Returns {"step", "train": last logged train scalars, "eval": last evaluation scalars,
  "history": [(step, train scalars) for every logged step]}.
  """
  write_config(config, workdir)
  prepare_dataset(config)
  writer = monitoring.create_writer(workdir)
  writer.write_hparams(monitoring.flat_hparams(config))
  mesh = sharding.make_mesh(config.mesh)
  logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
               jax.process_count())
  task = make_task(config)
  total_steps = int(config.num_train_steps)
  # Parameter names for the per-module learning-rate check, from the abstract init.
  param_names = list(jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))["params"])
  tx, schedule = optimizers.make_optimizer(config.optim, total_steps, param_names)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric)
  state, shardings, progress = restore_or_initialize(task, tx, config, mesh, checkpointer)
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

  def progress_record(step: int) -> dict[str, Any]:
    return {"step": step, "phase": config.phase,
            "data": {"seed": int(config.seed), "batches_consumed": step,
                     "global_batch": global_batch, "process_count": jax.process_count()}}

  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps,
      every_secs=None)
  pending: collections.deque = collections.deque()
  logged: list[dict[str, np.ndarray]] = []
  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  history: list[tuple[int, dict[str, float]]] = []
  log_start = (time.monotonic(), start_step)

  def drain(limit: int) -> None:
    """Waits for finished steps until at most `limit` are in flight; NaN/Inf check each."""
    while len(pending) > limit:
      step, metrics = pending.popleft()
      host = jax.device_get(metrics)
      check_finite(step, host)
      logged.append(host)

  logging.info("training %s from step %d to %d (global batch %d, %d micro-batches)",
               config.phase, start_step, total_steps, global_batch, config.grad_accum_steps)
  try:
    for step in range(start_step + 1, total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = sharding.host_to_global(next(batches), mesh)
        state, metrics = train_step(state, batch)
      pending.append((step, metrics))
      # Bounding the steps in flight avoids the CPU all-reduce deadlock (see config comment).
      drain(int(config.max_steps_in_flight) - 1)
      report_progress(step)
      is_last = step == total_steps
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
        eta = (total_steps - step) / max(last_train["train/steps_per_sec"], 1e-9)
        logging.info("step %d/%d: loss %.4f, %.2f steps/s, %.1f examples/s, ETA %.0f s", step,
                     total_steps, last_train["train/loss"], last_train["train/steps_per_sec"],
                     last_train["train/examples_per_sec"], eta)
        logged.clear()
        log_start = (now, step)
      evaluate_now = step % config.eval_every_steps == 0 or (is_last and config.eval.at_end)
      if evaluate_now:
        drain(0)
        last_eval = task.evaluate(state, mesh, workdir, step, writer)
        writer.write_scalars(step, {f"eval/{k}": v for k, v in last_eval.items()})
      if evaluate_now or step % config.checkpoint_every_steps == 0 or is_last:
        drain(0)
        checkpointer.save(step, state, progress_record(step),
                          metrics=last_eval if evaluate_now else None)
      if is_last:
        log_start = (time.monotonic(), step)  # evaluation time is not training throughput
    drain(0)
  finally:
    # Pending async saves complete (never with a non-finite state: save() checks).
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.flush()
  return {"step": int(state.step), "train": last_train, "eval": last_eval, "history": history}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: int | None = None) -> dict[str, float]:
  """Scores the latest (or the given step's) checkpoint of workdir on config.data.eval_split."""
  prepare_dataset(config)
  writer = monitoring.create_writer(workdir)
  mesh = sharding.make_mesh(config.mesh)
  task = make_task(config)
  tx, _ = optimizers.make_optimizer(config.optim, int(config.num_train_steps))
  _, abstract, shardings, _ = make_state_initializer(task, tx, config, mesh)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric)
  restored = checkpointer.restore(checkpointing.abstract_with_shardings(abstract, shardings),
                                  step)
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/{checkpointing.LATEST_DIR}")
  state, _ = restored
  scalars = task.evaluate(state, mesh, workdir, int(state.step), writer)
  writer.write_scalars(int(state.step), {f"eval_{config.data.eval_split}/{k}": v
                                         for k, v in scalars.items()})
  writer.flush()
  return scalars
