"""AMnet's three phases through main.py, one training step each (tiny configs, tiny SynthMUSIC):
AME pre-training and the appearance stage side by side, then the motion stage loading both."""

import json
import math
import re

import pytest

import train_helpers


def _loss(log):
  losses = re.findall(r"step 1/1: loss (\S+),", log)
  assert len(losses) == 1 and math.isfinite(float(losses[0])), log[-3000:]
  return float(losses[0])


@pytest.fixture(scope="module")
def stage_workdirs(synthmusic_tiny, tmp_path_factory):
  """Workdirs of one-step amnet_ame (evaluated once) and amnet stage=appearance runs."""
  workdirs = {name: tmp_path_factory.mktemp(name) for name in ("ame", "appearance")}
  root = f"--config.data.root={synthmusic_tiny}"
  logs = train_helpers.finish_main(
      train_helpers.start_main("--config=configs/amnet_ame.py:tiny",
                               f"--workdir={workdirs['ame']}", root),
      train_helpers.start_main("--config=configs/amnet.py:tiny,stage=appearance",
                               f"--workdir={workdirs['appearance']}", root,
                               "--config.eval.at_end=False"))  # the SoP tests score separation
  return workdirs, dict(zip(workdirs, logs))


def test_ame_and_appearance_stages_train_and_evaluate(stage_workdirs):
  workdirs, logs = stage_workdirs
  for name, phase in (("ame", "amnet_ame"), ("appearance", "amnet")):
    _loss(logs[name])
    assert (workdirs[name] / "checkpoints" / "1").is_dir()
    assert json.loads((workdirs[name] / "config.json").read_text())["phase"] == phase
  assert "AME evaluation at step 1: retrieval accuracy" in logs["ame"], logs["ame"][-3000:]
  config = json.loads((workdirs["ame"] / "config.json").read_text())
  assert config["data"]["num_frames"] == config["model"]["input"]["num_frames"] == 8


def test_motion_stage_loads_both_and_trains(stage_workdirs, synthmusic_tiny, tmp_path):
  workdirs, _ = stage_workdirs
  (log,) = train_helpers.finish_main(train_helpers.start_main(
      "--config=configs/amnet.py:tiny,stage=motion", f"--workdir={tmp_path}",
      f"--config.data.root={synthmusic_tiny}",
      f"--config.init.parts.appearance.checkpoint={workdirs['appearance']}",
      "--config.init.parts.appearance.which=latest",  # that run was not evaluated
      f"--config.init.parts.motion.checkpoint={workdirs['ame']}", "--config.eval.at_end=False",
      "--verbosity=1"))
  _loss(log)
  assert "init part 'appearance'" in log and "init part 'motion'" in log, log[-3000:]
  assert (tmp_path / "checkpoints" / "1").is_dir()
