"""The staged recipe: pose and separation pre-training, then TriBERT from both (config.init.parts).

Checks that the stages' parameters fit TriBERT at every size and variant (shapes only), and,
on tiny SynthMUSIC, that a one-step pose_pretrain and separation_pretrain run initialise a
`recipe=staged` TriBERT exactly where they should and nowhere else.
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
from tribert_jax import checkpointing  # noqa: E402
from tribert_jax import initialization  # noqa: E402
from tribert_jax import train  # noqa: E402
from tribert_jax import validation  # noqa: E402
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
  assert config.optim.name == "bert_adam" and config.optim.decay == "warmup_linear"
  assert config.optim.learning_rate == 1e-5 and not config.optim.lr_multipliers
  assert config.init.parts.pose.checkpoint == "./runs/pose_pretrain_paper"
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
  assert len(problems) == 2 and all("init.parts." in p and "init.checkpoint" in p
                                    for p in problems)


def _tiny(module, root, arg="tiny"):
  config = module.get_config(arg)
  config.data.root = str(root)
  return config


def test_stages_initialise_staged_tribert(synthmusic_tiny, tmp_path):
  pose_workdir, sep_workdir = str(tmp_path / "pose"), str(tmp_path / "separation")
  result = train.train_and_evaluate(_tiny(pose_pretrain, synthmusic_tiny), pose_workdir)
  assert 0.0 <= result["eval"]["accuracy"] <= 1.0 and result["eval"]["num_videos"] > 0
  config = _tiny(separation_pretrain, synthmusic_tiny)
  config.eval.at_end = False
  result = train.train_and_evaluate(config, sep_workdir)
  assert result["step"] == 1 and np.isfinite(result["train"]["train/loss"])
  assert {"train/loss/separation", "train/loss/visual_class_scores"} <= set(result["train"])

  config = _tiny(pretrain, synthmusic_tiny, "tiny,recipe=staged")
  config.init.parts.pose.checkpoint = pose_workdir
  config.init.parts.separation.checkpoint = sep_workdir
  config.init.parts.separation.which = "latest"  # no evaluation, hence no best checkpoint
  task = train.make_task(config)
  tx, _ = train.optimizers.make_optimizer(config.optim, 1)
  mesh = train.sharding.make_mesh(config.mesh)
  checkpointer = checkpointing.Checkpointer(str(tmp_path / "staged"))
  state, _, progress = initialization.restore_or_initialize(task, tx, config, mesh, checkpointer)
  assert progress == {}
  params = initialization.flatten(jax.device_get(state.params))
  stats = initialization.flatten(jax.device_get(state.batch_stats))
  pose, _, _ = checkpointing.load_state_tree(pose_workdir, "best")
  sep, _, _ = checkpointing.load_state_tree(sep_workdir, "latest")
  expected = {f"pose_encoder/{p}": v for p, v in
              initialization.flatten({"stgcn": pose["params"]["stgcn"]}).items()}
  expected.update({p: v for p, v in initialization.flatten(sep["params"]).items()
                   if not p.startswith("conditioning/")})
  for path, value in expected.items():
    np.testing.assert_array_equal(params[path], value, err_msg=path)
  expected_stats = initialization.flatten(
      {k: v for k, v in sep["batch_stats"].items() if k in ("visual_encoder", "separation_net")})
  expected_stats.update({f"pose_encoder/{p}": v for p, v in initialization.flatten(
      {"stgcn": pose["batch_stats"]["stgcn"]}).items()})
  assert expected_stats
  for path, value in expected_stats.items():
    np.testing.assert_array_equal(stats[path], value, err_msg=path)
  # Everything else keeps its fresh initialisation: the transformer streams, heads, audio VGG.
  init_fn, _, _, init_rng = initialization.make_state_initializer(task, tx, config, mesh)
  fresh = initialization.flatten(jax.device_get(init_fn(init_rng).params))
  others = [p for p in params if p not in expected]
  assert any(p.startswith("encoder/") for p in others)
  for path in others:
    np.testing.assert_array_equal(params[path], fresh[path], err_msg=path)
