"""Ablation variants: each config changes exactly its switches; the runner trains one step per
variant at tiny size and prints the table."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from configs import ablations as ablations_config  # noqa: E402
from configs import pretrain  # noqa: E402
from tribert_jax import ablations  # noqa: E402
from tribert_jax.models import tribert  # noqa: E402

# Variants whose programs differ compile separately; a session cache lets identical programs
# (e.g. "default" here and the tiny pretrain of test_retrieval) compile once.
jax.config.update("jax_compilation_cache_dir", os.environ.setdefault(
    "TRIBERT_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="tribert_test_xla_cache_")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def flat(config):
  """{dotted key: value} of a config."""
  out = {}
  def walk(node, prefix):
    for key, value in node.items():
      path = f"{prefix}.{key}" if prefix else key
      if hasattr(value, "items"):
        walk(value, path)
      else:
        out[path] = value
  walk(config.to_dict(), "")
  return out


@pytest.mark.parametrize("variant", list(ablations_config.VARIANTS))
def test_each_variant_changes_only_its_switches(variant):
  base = flat(pretrain.get_config("tiny"))
  config = ablations_config.get_config(f"tiny,{variant}")
  assert config.phase == "pretrain" and config.ablation == variant
  changed = {k: v for k, v in flat(config).items() if base.get(k, object()) != v}
  expected = dict(ablations_config.VARIANTS[variant][1], ablation=variant)
  assert changed == expected
  # The model builds (erased streams, product fusion).
  inputs = tribert.example_inputs(config.model, batch_size=1)
  model = tribert.TriBERT(config=config.model)
  (outputs, _), _ = jax.eval_shape(lambda r: model.init_with_output(
      {"params": r, "dropout": r, "masking": r}, inputs), jax.random.PRNGKey(0))
  assert ("visual_scores" in outputs) == config.model.visual.enabled
  assert ("pose_scores" in outputs) == config.model.pose.enabled


def test_bad_variant_and_size_are_rejected():
  with pytest.raises(ValueError, match="unknown variant"):
    ablations_config.get_config("tiny,erase_audio")
  with pytest.raises(ValueError, match="config argument"):
    ablations_config.get_config("huge,erase_pose")
  runner = ablations_config.get_config("tiny")
  runner.ablations.variants = "erase_smell"
  with pytest.raises(ValueError, match="unknown ablation variants"):
    ablations.run(runner, "/nonexistent")


def test_runner_trains_one_step_per_variant_and_prints_the_table(synthmusic_tiny, tmp_path,
                                                                 capsys):
  # multi_source trains the same programs as default on other data (solos + duets): two full
  # runs for the compile cost of one. The other variants' models are built above.
  variants = ["default", "multi_source"]
  runner = ablations_config.get_config("tiny")
  runner.ablations.variants = ",".join(variants)
  runner.data.root = str(synthmusic_tiny)
  runner.num_train_steps = 1
  report = ablations.run(runner, str(tmp_path))
  assert list(report["variants"]) == variants
  for name in variants:
    row = report["variants"][name]
    assert row["step"] == 1 and row["num_scored"] >= 1
    assert all(isinstance(row[k], float) for k in ("sdr", "sir", "sar"))
    assert os.path.isdir(tmp_path / name / "checkpoints")
    assert os.path.isfile(tmp_path / name / "eval" / "test_step_1.json")
  printed = capsys.readouterr().out
  assert "| default | paper defaults" in printed
  assert "| multi_source | solos + duets training" in printed
  assert (tmp_path / "ablations.md").read_text() in printed
