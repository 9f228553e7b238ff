"""End-to-end tests of the training loop (tiny configs, one or two steps each).

Compile time dominates these runs, so this module asks XLA for its cheapest CPU backend
optimisation and shares a persistent compilation cache between the runs of one session (the
pretrain runs below compile the same programs). Multi-device and multi-process runs happen in
subprocesses with a timeout: a hang is a failure, not a stuck test session.
"""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap

# Must precede the first compilation of the session (pytest imports every module first).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tensorboard.backend.event_processing import event_accumulator  # noqa: E402

from configs import finetune  # noqa: E402
from configs import pretrain  # noqa: E402
from tribert_jax import checkpointing  # noqa: E402
from tribert_jax import initialization  # noqa: E402
from tribert_jax import train  # noqa: E402
from tribert_jax.tasks import separation  # noqa: E402

COMPILATION_CACHE = os.environ.setdefault(
    "TRIBERT_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="tribert_test_xla_cache_"))
jax.config.update("jax_compilation_cache_dir", COMPILATION_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBPROCESS_TIMEOUT_S = 420


# The pretrain runs use a global batch of 8 so the 8-device run below can be compared with them
# (and compiles nothing new for the single-device side).
BATCH = 8


def tiny(module, root, **overrides):
  """The tiny config of a phase on the session's tiny SynthMUSIC (pretrain: batch of 8)."""
  config = module.get_config("tiny")
  if module is pretrain:
    config.data.batch_size = BATCH
  if config.class_subset.classes:
    config.class_subset.source_root = str(root)
    config.data.root = str(root) + "_music11"
  else:
    config.data.root = str(root)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


@pytest.fixture(scope="module")
def pretrain_run(synthmusic_tiny, tmp_path_factory):
  """Two pretrain steps with a checkpoint after each and an evaluation at the end."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=2)
  return workdir, train.train_and_evaluate(config, workdir)


def test_pretrain_end_to_end_writes_everything(pretrain_run):
  workdir, result = pretrain_run
  assert result["step"] == 2 and [s for s, _ in result["history"]] == [1, 2]
  assert all(np.isfinite(v) for _, scalars in result["history"] for v in scalars.values())
  for term in ("separation", "visual", "pose", "audio"):
    assert f"train/loss/{term}" in result["train"]
  evaluation = result["eval"]
  assert evaluation["num_scored"] + sum(
      evaluation[k] for k in evaluation if k.startswith("skipped_")) == evaluation["num_mixtures"]
  assert np.isfinite(evaluation["mixture_sdr"]) and np.isfinite(evaluation["ideal_mask_sdr"])
  with open(os.path.join(workdir, "config.json")) as file:
    assert json.load(file)["data"]["batch_size"] == BATCH
  assert os.path.isfile(os.path.join(workdir, "eval", "val_step_2.json"))
  assert os.path.isfile(os.path.join(workdir, "eval", "val_step_2.md"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
  # TensorBoard: loss terms, learning rate, throughput, evaluation metrics, audio and images.
  accumulator = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
  accumulator.Reload()
  plugins = {t: accumulator.SummaryMetadata(t).plugin_data.plugin_name
             for t in accumulator.Tags()["tensors"]}
  for tag in ("train/loss/separation", "train/learning_rate", "train/examples_per_sec",
              "eval/sdr", "eval/mixture_sdr", "eval/ideal_mask_sdr"):
    assert plugins[tag] == "scalars", tag
  assert plugins["examples/mixture_0/source_1_predicted"] == "audio"
  assert plugins["examples/mixture_0/mask_0_predicted"] == "images"
  assert plugins["examples/mixture_0/visual_attention_0"] == "images"


def test_evaluate_mode_scores_the_latest_checkpoint(pretrain_run, synthmusic_tiny):
  workdir, result = pretrain_run
  scalars = train.evaluate_checkpoint(tiny(pretrain, synthmusic_tiny), workdir)
  # Same checkpoint, same mixtures: the numbers of the end-of-training evaluation.
  assert scalars["sdr"] == pytest.approx(result["eval"]["sdr"], abs=1e-6)


def test_resume_reproduces_the_uninterrupted_run(pretrain_run, synthmusic_tiny, tmp_path):
  _, uninterrupted = pretrain_run
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=1)
  config.eval.at_end = False
  first = train.train_and_evaluate(config, str(tmp_path))
  assert first["history"][0][1]["train/loss"] == uninterrupted["history"][0][1]["train/loss"]
  config.num_train_steps = 2
  resumed = train.train_and_evaluate(config, str(tmp_path))  # picks up checkpoint 1
  assert [s for s, _ in resumed["history"]] == [2]
  expected = uninterrupted["history"][1][1]
  for key, value in resumed["history"][0][1].items():
    if "per_sec" not in key:
      assert value == expected[key], key  # bit-identical: same data, rng and state


def test_finetune_starts_from_the_pretrain_checkpoint(pretrain_run, synthmusic_tiny, tmp_path):
  pretrain_workdir, _ = pretrain_run
  config = tiny(finetune, synthmusic_tiny)
  config.init.checkpoint = pretrain_workdir
  config.eval.at_end = False  # the evaluation path is the pretrain test's (saves a compile)
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["step"] == 1 and np.isfinite(result["train"]["train/loss"])
  source, _, _ = checkpointing.load_state_tree(pretrain_workdir, "best")
  tuned, _, _ = checkpointing.load_state_tree(str(tmp_path))
  source_flat = initialization.flatten(source["params"])
  tuned_flat = initialization.flatten(tuned["params"])
  class_layers = [p for p in tuned_flat if any(
      pattern.strip("/") in p for pattern in finetune.CLASS_LAYER_PATTERNS)]
  assert class_layers
  for path, value in tuned_flat.items():
    if path in class_layers:
      assert value.shape[-1] == 11 or value.shape != source_flat[path].shape
    else:  # copied, then one Adam step at learning rate 1e-7
      np.testing.assert_allclose(value, source_flat[path], atol=2e-7, err_msg=path)


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
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=3)
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
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=2)
  assert config.eval.at_end
  with pytest.raises(RuntimeError, match="evaluation failed"):
    train.train_and_evaluate(config, str(tmp_path))
  _, progress, step = checkpointing.load_state_tree(str(tmp_path))
  assert step == 2 and progress["step"] == 2


# ---------------------------------------------------------------------------------------------
# Several devices and several processes (subprocesses: fresh XLA flags, bounded time).
# ---------------------------------------------------------------------------------------------

RUN_ONE_STEP = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {repo!r})
    import jax
    if {coordinator!r}:
      jax.distributed.initialize({coordinator!r}, num_processes={num_processes},
                                 process_id={process_id})
    jax.config.update("jax_compilation_cache_dir", {cache!r})
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from configs import pretrain
    from tribert_jax import train
    config = pretrain.get_config("tiny")
    config.data.root = {root!r}
    config.data.batch_size = {batch_size}
    config.data.eval_batch_size = {batch_size}
    config.eval.at_end = {evaluate}
    config.num_train_steps = 1
    result = train.train_and_evaluate(config, {workdir!r})
    print("RESULT " + json.dumps(dict(loss=result["train"]["train/loss"],
                                      devices=jax.device_count(), eval=result["eval"])))
""")


def _launch(devices, root, workdir, batch_size, evaluate=False, coordinator="",
            num_processes=1, process_id=0):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             "--xla_backend_optimization_level=0", CUDA_VISIBLE_DEVICES="",
             TF_CPP_MIN_LOG_LEVEL="2")
  code = RUN_ONE_STEP.format(repo=REPO, coordinator=coordinator, num_processes=num_processes,
                             process_id=process_id, cache=COMPILATION_CACHE, root=str(root),
                             batch_size=batch_size, evaluate=evaluate, workdir=str(workdir))
  return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=REPO)


def _result(process):
  try:
    output, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    output, _ = process.communicate()
    pytest.fail(f"subprocess hung (> {SUBPROCESS_TIMEOUT_S} s); output tail:\n{output[-3000:]}")
  assert process.returncode == 0, output[-5000:]
  line = [l for l in output.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_one_and_eight_devices_give_the_same_loss(pretrain_run, synthmusic_tiny, tmp_path):
  # The single-device side is the in-process pretrain run (same config, data and rng). The
  # 8-device run blocks on every step (configs/parts/train.py max_steps_in_flight = 1), which
  # keeps XLA's CPU all-reduce from deadlocking on this 2-core machine.
  _, single_device = pretrain_run
  eight = _result(_launch(8, synthmusic_tiny, tmp_path / "eight", batch_size=BATCH))
  assert eight["devices"] == 8
  np.testing.assert_allclose(eight["loss"], single_device["history"][0][1]["train/loss"],
                             rtol=1e-5)


def test_two_processes_train_one_step_together(synthmusic_tiny, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  processes = [_launch(1, synthmusic_tiny, tmp_path / "run", batch_size=2, evaluate=True,
                       coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=i)
               for i in range(2)]
  results = [_result(p) for p in processes]
  assert [r["devices"] for r in results] == [2, 2]
  assert results[0]["loss"] == results[1]["loss"] and np.isfinite(results[0]["loss"])
  # Both hosts gathered every host's scores and agree on the metrics.
  assert results[0]["eval"] == results[1]["eval"]
  assert results[0]["eval"]["num_mixtures"] >= 2
  assert os.path.isdir(tmp_path / "run" / "checkpoints" / "1")


def test_fresh_state_loads_the_configured_imagenet_resnet(tmp_path):
  """config.model.visual.pretrained_path is applied to a scratch state (no compile: zero state)."""
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  from test_models_pretrained import abstract_tribert, torchvision_state, zeros_like_tree
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tribert_jax.train_state import TrainState  # pylint: disable=g-import-not-at-top

  config = pretrain_config.get_config("tiny")
  variables = zeros_like_tree(abstract_tribert(config.model))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                     batch_stats=variables["batch_stats"], opt_state=(), rng=jnp.zeros(2, jnp.uint32))
  # Nothing configured.
  assert initialization.apply_pretrained_weights(state, None, config) is state
  weights = torchvision_state(config.model, np.random.default_rng(0))
  np.savez(tmp_path / "resnet50.npz", **weights)
  config.model.visual.pretrained_path = str(tmp_path / "resnet50.npz")
  loaded = initialization.apply_pretrained_weights(state, None, config)
  # Every ResNet leaf now comes from the file: none is all zero any more.
  resnet = jax.tree.leaves(loaded.params["visual_encoder"]["resnet"])
  assert resnet and all(np.any(np.asarray(leaf) != 0) for leaf in resnet)
  # Everything outside the ResNet is untouched.
  assert not np.any(np.asarray(jax.tree.leaves(loaded.params["audio_encoder"])[0]))


def test_per_module_learning_rates_give_a_state_sharding_tree_that_matches_the_state():
  """optax.multi_transform masks moments inside the logical boxes; restoring and placing the
  state need a sharding tree of the same structure (no compile: abstract state only)."""
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  from tribert_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top

  config = pretrain.get_config("tiny")
  config.optim.lr_multipliers.separation_net = 10.0
  task = separation.separation_task(config, class_names=[f"c{i}" for i in range(21)])
  tx, _ = optimizers.make_optimizer(config.optim, config.num_train_steps)
  mesh = sharding_lib.make_mesh(config.mesh)
  _, abstract, shardings, _ = initialization.make_state_initializer(task, tx, config, mesh)
  assert jax.tree.structure(abstract) == jax.tree.structure(shardings)
  restore_target = checkpointing.abstract_with_shardings(abstract, shardings)
  assert len(jax.tree.leaves(restore_target)) == len(jax.tree.leaves(abstract))
