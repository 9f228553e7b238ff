"""tribert_jax.summary: parameter table, FLOPs and config resolution."""

import ml_collections
import pytest

from configs.parts.model import get_model_config
from tribert_jax import summary


def test_summary_of_tiny_config_counts_params_and_flops():
  cfg = get_model_config("tiny")
  variables, inputs = summary.abstract_variables(cfg)
  params = summary.parameter_table(variables)
  assert sum(params.values()) == summary.count(variables["params"])
  assert {"visual_encoder", "pose_encoder", "audio_encoder", "encoder", "separation_net"} <= set(
      params)
  total, per_module = summary.flops_table(cfg, variables, inputs)
  assert total > 0 and per_module["separation_net"] > 0 and per_module["visual_encoder"] > 0
  # The top-level modules account for (about) the whole forward pass.
  assert 0.9 * total < sum(per_module.values()) < 1.1 * total
  text = summary.summarize(cfg, flops=False)
  assert "total" in text and f"{sum(params.values()):,}" in text


def test_resolve_config_reads_model_and_data_sizes():
  cfg = ml_collections.ConfigDict()
  cfg.model = get_model_config("tiny", "release")
  cfg.data = ml_collections.ConfigDict(dict(num_mix=3, num_frames=2, image_size=32,
                                            pose_window=16))
  model = summary.resolve_config(cfg)
  assert model.input.num_mix == 3 and model.input.image_size == 32
  assert model.variant == "release"
  assert summary.resolve_config(get_model_config("tiny")).size == "tiny"
  with pytest.raises(ValueError, match="no .model"):
    summary.resolve_config(ml_collections.ConfigDict(dict(data=1)))


@pytest.mark.parametrize("module, arg, example, modules", [
    ("amnet", "tiny,stage=motion", "one mixture of N = 2 videos",
     {"motion_network", "appearance_network", "spectrogram_network", "refinement_network",
      "synthesizer"}),
    ("amnet_ame", "tiny", "one clip", {"motion_network", "sound_network"}),
    ("sound_of_pixels", "tiny", "one mixture", {"video_network", "audio_network", "synthesizer"}),
])
def test_summary_counts_every_model_the_trainer_builds(module, arg, example, modules):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  text = summary.run(config, flops=True)
  model = summary.resolve_config(config)
  variables, inputs = summary.abstract_variables(model)
  params = summary.parameter_table(variables)
  assert set(params) == modules
  assert f"{sum(params.values()):,}" in text and example in text
  total, per_module = summary.flops_table(model, variables, inputs)
  assert total > 0 and set(per_module) == modules
  if module == "amnet":  # the motion stage trains only the refinement network
    assert f"trained: {params['refinement_network']:,} (frozen:" in text


def test_summary_refuses_a_model_it_cannot_build():
  cfg = get_model_config("tiny")
  cfg.name = "no_such_model"
  with pytest.raises(ValueError, match="config.model.name='no_such_model'"):
    summary.run(cfg, flops=False)
