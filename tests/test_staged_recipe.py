"""The staged recipe: pose and separation pre-training, then TriBERT from both.

Checks that the stages' parameters fit TriBERT at every size and variant (shapes only), and,
on tiny SynthMUSIC, that a one-step separation_pretrain run initialises a `recipe=staged`
TriBERT's visual trunk and U-Net exactly (config.init.parts), that the frozen ST-GCN
features cached from a pose_pretrain run equal what the in-model ST-GCN computes on a pose
window (tribert_jax/pose_feature_cache.py), and that the staged TriBERT trains on them.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import finetune  # noqa: E402
from configs import pose_pretrain  # noqa: E402
from configs import pretrain  # noqa: E402
from configs import separation_pretrain  # noqa: E402
from data_pipeline.layout import reader  # noqa: E402
from data_pipeline.loading import pipeline as loading_pipeline  # noqa: E402
from data_pipeline.loading import pose_features  # noqa: E402
from data_pipeline.loading import sources  # noqa: E402
from tribert_jax import checkpointing  # noqa: E402
from tribert_jax import pose_feature_cache  # noqa: E402
from tribert_jax import initialization  # noqa: E402
from tribert_jax import train  # noqa: E402
from tribert_jax import validation  # noqa: E402
from tribert_jax.models import stgcn  # noqa: E402
from tribert_jax.models import tribert  # noqa: E402
from tribert_jax.tasks import separation  # noqa: E402


def _param_shapes(model_config):
  model = separation.build_model(model_config)
  inputs = tribert.example_inputs(model_config, batch_size=1)
  keys = {k: jax.random.PRNGKey(0) for k in ("params", "dropout", "masking")}
  variables = jax.eval_shape(lambda: model.init(keys, inputs, train=False))
  return initialization.flatten(tribert.unbox(variables["params"]))


@pytest.mark.parametrize("arg", ["tiny", "cpu", "paper", "cpu,variant=release",
                                 "paper,variant=release"])
def test_separation_stage_parameters_fit_tribert(arg):
  stage = _param_shapes(separation_pretrain.get_config(arg).model)
  target = _param_shapes(pretrain.get_config(arg + ",recipe=staged").model)
  for prefix in ("visual_encoder/", "separation_net/"):
    target_part = {p: s.shape for p, s in target.items() if p.startswith(prefix)}
    stage_part = {p: s.shape for p, s in stage.items() if p.startswith(prefix)}
    assert target_part and target_part == stage_part, prefix
  # Only the stage's conditioning layer is left behind.
  assert {p.split("/")[0] for p in stage} == {"visual_encoder", "separation_net", "conditioning"}


def test_staged_recipe_config_is_the_release_way():
  config = pretrain.get_config("paper,recipe=staged")
  assert config.model.pose.freeze_stgcn and config.model.unet.conditioning == "bottleneck"
  assert config.model.pose.stgcn_input == "features"
  assert config.optim.name == "bert_adam" and config.optim.decay == "warmup_linear"
  assert config.optim.learning_rate == 1e-5 and not config.optim.lr_multipliers
  assert config.pose_features.checkpoint == "./runs/pose_pretrain_paper"
  assert not config.init.parts.pose.checkpoint  # no ST-GCN in the model: it reads features
  assert config.init.parts.separation.checkpoint == "./runs/separation_pretrain_paper"
  assert validation.check_config(config) == []
  tuned = finetune.get_config("cpu,recipe=staged")
  assert tuned.init.checkpoint == "./runs/pretrain_staged_cpu"
  assert not any(part.checkpoint for part in tuned.init.parts.values())
  with pytest.raises(ValueError, match="recipe"):
    separation_pretrain.get_config("tiny,recipe=staged")
  with pytest.raises(ValueError, match="recipe"):
    pretrain.get_config("tiny,recipe=fast")


def test_validation_refuses_parts_together_with_a_whole_model_checkpoint():
  config = pretrain.get_config("tiny,recipe=staged")
  config.init.checkpoint = "runs/other"
  problems = validation.check_config(config)
  assert len(problems) == 1 and all("init.parts.separation" in p and "init.checkpoint" in p
                                    for p in problems)


def _tiny(module, root, arg="tiny"):
  config = module.get_config(arg)
  config.data.root = str(root)
  return config


@pytest.fixture(scope="module")
def stage_workdirs(synthmusic_tiny, tmp_path_factory):
  """One-step pose_pretrain (with its evaluation) and separation_pretrain runs."""
  base = tmp_path_factory.mktemp("stages")
  pose_workdir, sep_workdir = str(base / "pose"), str(base / "separation")
  result = train.train_and_evaluate(_tiny(pose_pretrain, synthmusic_tiny), pose_workdir)
  assert 0.0 <= result["eval"]["accuracy"] <= 1.0 and result["eval"]["num_videos"] > 0
  config = _tiny(separation_pretrain, synthmusic_tiny)
  config.eval.at_end = False
  result = train.train_and_evaluate(config, sep_workdir)
  assert result["step"] == 1 and np.isfinite(result["train"]["train/loss"])
  assert {"train/loss/separation", "train/loss/visual_class_scores"} <= set(result["train"])
  return pose_workdir, sep_workdir


def staged_tiny(root, pose_workdir, sep_workdir):
  config = _tiny(pretrain, root, "tiny,recipe=staged")
  config.pose_features.checkpoint = pose_workdir
  config.init.parts.separation.checkpoint = sep_workdir
  config.init.parts.separation.which = "latest"  # no evaluation, hence no best checkpoint
  return config


def test_staged_tribert_trains_on_cached_pose_features(stage_workdirs, synthmusic_tiny,
                                                       tmp_path):
  _, sep_workdir = stage_workdirs
  config = staged_tiny(synthmusic_tiny, *stage_workdirs)
  config.eval.at_end = False
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["step"] == 1 and np.isfinite(result["train"]["train/loss"])
  assert {"train/loss/pose", "train/loss/separation"} <= set(result["train"])
  cache = config.data.pose_features_dir
  assert cache.startswith(str(tmp_path / "pose_features")) and os.path.isfile(
      os.path.join(cache, "manifest.json"))
  # BertAdam's warm-up starts at learning rate 0, so after this first update the parameters are
  # still the initialisation: the separation stage's trunk and U-Net, copied exactly.
  assert result["train"]["train/learning_rate"] == 0.0
  trained, _, _ = checkpointing.load_state_tree(str(tmp_path))
  params = initialization.flatten(trained["params"])
  assert not any(p.startswith("pose_encoder/stgcn/") for p in params)  # features are fed
  sep, _, _ = checkpointing.load_state_tree(sep_workdir, "latest")
  copied = {p: v for p, v in initialization.flatten(sep["params"]).items()
            if not p.startswith("conditioning/")}
  assert {p.split("/")[0] for p in copied} == {"visual_encoder", "separation_net"}
  for path, value in copied.items():
    np.testing.assert_array_equal(params[path], value, err_msg=path)


def test_cached_pose_features_equal_the_in_step_frozen_stgcn(stage_workdirs, synthmusic_tiny,
                                                             tmp_path):
  pose_workdir, _ = stage_workdirs
  config = _tiny(pretrain, synthmusic_tiny)
  config.data.pose_window = 32  # holds the tiny ST-GCN's receptive field at the RGB frames
  config.data.batch_size = 8
  config.model.pose.stgcn_input = "features"
  config.pose_features.checkpoint = pose_workdir
  assert pose_feature_cache.exact_in_window(config.model, 32, config.data.num_frames)
  assert not pose_feature_cache.exact_in_window(config.model, 16, config.data.num_frames)
  directory = pose_feature_cache.ensure_cache(config, str(tmp_path))
  assert config.data.pose_features_dir == directory

  state, _, _ = checkpointing.load_state_tree(pose_workdir, "best")
  variables = {"params": state["params"]["stgcn"], "batch_stats": state["batch_stats"]["stgcn"]}
  net = stgcn.make_stgcn(config.model)
  apply = jax.jit(lambda x: net.apply(variables, x, False))

  def in_step(pose, frame_index):
    """The in-model path: ST-GCN over each window [.., P, W, J, 3], sampled at the frames."""
    lead, (p, w, j) = pose.shape[:-4], pose.shape[-4:-1]
    out = np.asarray(apply(pose.reshape(-1, w, j, 3)))
    index = stgcn.temporal_feature_index(frame_index, net.total_stride, out.shape[1])
    out = out.reshape(-1, p, out.shape[1], j, out.shape[-1])
    index = np.asarray(index).reshape(-1, 1, index.shape[-1], 1, 1)
    picked = np.take_along_axis(out, index, axis=2)  # [-1, P, T, J, C]
    return picked.transpose(0, 2, 1, 3, 4).reshape(*lead, index.shape[2], p, -1)

  batch = next(iter(loading_pipeline.build_train_pipeline(config.data, seed=0)))
  np.testing.assert_allclose(batch["pose_features"],
                             in_step(batch["pose"], batch["pose_frame_index"]),
                             rtol=3e-3, atol=3e-3)  # stored as float16

  # The clip's first frames (the window reaches before the clip) and the mirrored pose.
  _, records, store = sources.open_source(config.data, "train", sources.PipelineStats())
  row = store.prepare([0])[0]
  features = pose_features.FeatureStore(directory, records, 32, config.data.num_frames)
  frame_index = np.arange(config.data.num_frames) + 16 - config.data.num_frames // 2
  for center in (1, records[row].num_frames // 2):
    pose, mask = reader.pose_window(store.pose[row], center, 32)
    for flip, window in ((0, pose), (1, pose_feature_cache.mirror(pose, mask))):
      np.testing.assert_allclose(features.features(row, center, flip),
                                 in_step(window[None], frame_index[None])[0],
                                 rtol=3e-3, atol=3e-3, err_msg=f"center {center} flip {flip}")


def test_pose_feature_cache_key_changes_with_the_weights():
  config = pretrain.get_config("tiny")
  variables = {"params": {"w": np.ones((2, 3), np.float32)}, "batch_stats": {}}
  other = {"params": {"w": np.full((2, 3), 1.0001, np.float32)}, "batch_stats": {}}
  key = pose_feature_cache.cache_key(variables, config.model)
  assert key == pose_feature_cache.cache_key(variables, config.model)
  assert key != pose_feature_cache.cache_key(other, config.model)
  config.model.pose.temporal_kernel = 5
  assert key != pose_feature_cache.cache_key(variables, config.model)


def test_a_frozen_in_model_stgcn_has_no_optimiser_state(synthmusic_tiny):
  config = _tiny(pretrain, synthmusic_tiny)
  config.model.pose.freeze_stgcn = True
  task = train.make_task(config)
  assert task.frozen == ("pose_encoder/stgcn",)
  tx, _ = train.optimizers.make_optimizer(config.optim, 1, frozen=task.frozen)
  mesh = train.sharding.make_mesh(config.mesh)
  _, abstract, _, _ = initialization.make_state_initializer(task, tx, config, mesh)
  leaves = jax.tree_util.tree_flatten_with_path(abstract.opt_state)[0]
  stgcn_moments = [p for p, _ in leaves if "'stgcn'" in jax.tree_util.keystr(p)]
  other_moments = [p for p, _ in leaves if "'visual_encoder'" in jax.tree_util.keystr(p)]
  assert other_moments and not stgcn_moments
  config.model.pose.stgcn_input = "features"  # no ST-GCN in the model: nothing to freeze
  assert train.make_task(config).frozen == ()
