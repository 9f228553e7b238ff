"""Representation probe: top-k on a separable synthetic task, the report with missing features."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import probe as probe_config  # noqa: E402
from tribert_jax.embeddings import probe  # noqa: E402


def tiny_cfg(**overrides):
  """config.probe of the tiny config with overrides."""
  cfg = probe_config.get_config("tiny").probe
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def separable(rng, n, num_classes=12, dim=20, spread=0.3):
  """Clips around well-separated class centres: (features [n, dim], classes [n])."""
  centres = np.random.default_rng(100).normal(size=(num_classes, dim)) * 3.0
  classes = rng.integers(0, num_classes, n)
  return (centres[classes] + spread * rng.normal(size=(n, dim))).astype(np.float32), classes


def test_probe_is_perfect_on_a_separable_task():
  rng = np.random.default_rng(0)
  train_x, train_y = separable(rng, 240)
  test_x, test_y = separable(rng, 120)
  cfg = tiny_cfg(hidden_widths=(32,), num_epochs=30, learning_rate=3e-3, batch_size=32)
  model, params, stats, history = probe.train_probe(train_x, train_y, 12, cfg)
  assert history[-1] < 0.2 * history[0]
  accuracy = probe.evaluate_probe(model, params, stats, test_x, test_y, (1, 5, 10), "pessimistic")
  assert accuracy == {1: 100.0, 5: 100.0, 10: 100.0}


def test_probe_on_uninformative_features_is_near_chance():
  rng = np.random.default_rng(1)
  num_classes = 10
  x = rng.normal(size=(2000, 8)).astype(np.float32)
  y = rng.integers(0, num_classes, 2000)
  cfg = tiny_cfg(hidden_widths=(8,), num_epochs=1)
  model, params, stats, _ = probe.train_probe(x[:200], y[:200], num_classes, cfg)
  accuracy = probe.evaluate_probe(model, params, stats, x[200:], y[200:], (1, 5), "pessimistic")
  for k, value in accuracy.items():
    chance = 100.0 * k / num_classes
    sigma = 100 * np.sqrt(chance / 100 * (1 - chance / 100) / 1800)
    assert abs(value - chance) < 5 * sigma, (k, value)


def test_report_uses_solos_and_marks_missing_features(tmp_path, capsys):
  rng = np.random.default_rng(2)
  num_classes = 6

  def split(n, duets):
    x, classes = separable(rng, n, num_classes=num_classes)
    labels = np.eye(num_classes, dtype=np.float32)[classes]
    labels[:duets, (classes[:duets] + 1) % num_classes] = 1.0  # the first clips are duets
    return {"tribert_audio": x, "input_audio": rng.normal(size=x.shape).astype(np.float32),
            "labels": labels}

  config = probe_config.get_config("tiny")
  config.probe.features = ("input_audio", "tribert_audio", "tribert_pose")
  config.probe.num_epochs = 30
  config.probe.hidden_widths = (32,)
  report = probe.run_on_embeddings(config, {"train": split(120, 5), "test": split(60, 3)},
                                   str(tmp_path), checkpoint_step=7)
  assert report["train_size"] == 115 and report["test_size"] == 57
  assert report["duets_left_out"] == 8
  assert report["features"]["tribert_pose"] is None  # erased modality: n/a, not zeros
  assert report["features"]["tribert_audio"]["1"] == 100.0
  assert report["features"]["input_audio"]["1"] < 60.0  # noise features
  printed = capsys.readouterr().out
  assert "| TriBERT audio feature | 100.00 | 100.00 | 100.00 |" in printed
  assert "| Audio feature w/o audio BERT stream |" in printed
  assert "| TriBERT pose feature | n/a | n/a | n/a |" in printed
  assert (tmp_path / "probe.json").is_file() and (tmp_path / "probe.md").is_file()


def test_unknown_feature_is_rejected(tmp_path):
  config = probe_config.get_config("tiny")
  config.probe.features = ("tribert_smell",)
  arrays = {"labels": np.eye(3, dtype=np.float32)}
  with pytest.raises(ValueError, match="config.probe.features"):
    probe.run_on_embeddings(config, {"train": arrays, "test": arrays}, str(tmp_path))
