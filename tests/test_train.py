"""End-to-end tests of the training loop (tiny configs, one or two steps each).

Compile time dominates these runs, so this module asks XLA for its cheapest CPU backend
optimisation and shares a persistent compilation cache between the runs of one session (the
pretrain runs below compile the same programs). The multi-device run happens in a subprocess
with a timeout (tests/train_helpers.py): a hang is a failure, not a stuck test session. Faults:
test_train_faults.py; two processes: test_train_hosts.py.
"""

import json
import os
import shutil

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
from train_helpers import BATCH, launch_one_step, one_step_result, tiny  # noqa: E402


@pytest.fixture(scope="module")
def pretrain_run(synthmusic_tiny, tmp_path_factory):
  """Two pretrain steps with a checkpoint after each and an evaluation at the end."""
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=2)
  config.eval.quick_every_steps = 1  # the cheap periodic evaluation after each step
  config.eval.quick_batches = 1
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
  # The cheap periodic evaluation: SDR over training in TensorBoard and one JSON line per point.
  for tag in ("quick_eval/sdr", "quick_eval/sdr_median", "quick_eval/sir", "quick_eval/sar",
              "quick_eval/mixture_sdr"):
    assert plugins[tag] == "scalars", tag
    assert [event.step for event in accumulator.Tensors(tag)] == [1, 2], tag
  with open(os.path.join(workdir, "eval", "quick_val.jsonl")) as file:
    points = [json.loads(line) for line in file]
  assert [p["step"] for p in points] == [1, 2] == [s for s, _ in result["quick_eval"]]
  assert all(np.isfinite(p["sdr"]) and p["num_scored"] >= 1 and "ideal_mask_sdr" not in p
             and 0 < p["train_seconds"] <= p["wall_seconds"] for p in points)
  assert points[1]["wall_seconds"] > points[0]["wall_seconds"]
  assert plugins["examples/mixture_0/source_1_predicted"] == "audio"
  assert plugins["examples/mixture_0/mask_0_predicted"] == "images"
  assert plugins["examples/mixture_0/visual_attention_0"] == "images"


def test_evaluate_mode_scores_the_latest_checkpoint(pretrain_run, synthmusic_tiny):
  workdir, result = pretrain_run
  scalars = train.evaluate_checkpoint(tiny(pretrain, synthmusic_tiny), workdir)
  # Same checkpoint, same mixtures: the numbers of the end-of-training evaluation.
  assert scalars["sdr"] == pytest.approx(result["eval"]["sdr"], abs=1e-6)


def test_resume_reproduces_the_uninterrupted_run(pretrain_run, synthmusic_tiny, tmp_path):
  workdir, uninterrupted = pretrain_run
  # What an interruption after step 1 leaves: the uninterrupted run's own checkpoint 1 (state,
  # data position, rng, training clock). The first step's determinism across two fresh runs is
  # README's "Reproducibility" measurement; here the question is the restore.
  shutil.copytree(os.path.join(workdir, "checkpoints", "1"), tmp_path / "checkpoints" / "1")
  config = tiny(pretrain, synthmusic_tiny, num_train_steps=2)
  config.eval.at_end = False
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


def test_one_and_two_devices_give_the_same_loss(synthmusic_tiny, tmp_path):
  # The batch is split over the devices, the gradients are all-reduced, BatchNorm sees the global
  # batch: the loss of one step must not depend on the device count. Two devices exercise that
  # as eight would. The model is tiny Sound-of-Pixels (ResNet + U-Net, BatchNorm in both): the
  # data-parallel path is the trainer's and the same for every model, and Sound-of-Pixels
  # compiles in a fraction of TriBERT's time; both runs start at once (one core each). The run
  # blocks on every step (configs/parts/train.py max_steps_in_flight = 1), which keeps XLA's CPU
  # all-reduce from deadlocking on 2 cores.
  runs = [launch_one_step(devices, synthmusic_tiny, tmp_path / str(devices), batch_size=BATCH,
                          config_module="sound_of_pixels") for devices in (1, 2)]
  one, two = [one_step_result(run) for run in runs]
  assert (one["devices"], two["devices"]) == (1, 2)
  np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)


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
