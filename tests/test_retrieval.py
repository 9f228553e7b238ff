"""Cross-modal retrieval: ranking and ties, hard negatives, training, export from a checkpoint."""

import os
import tempfile

# Cheapest XLA CPU optimisation: these tests are dominated by compile time.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import pretrain  # noqa: E402
from configs import retrieval as retrieval_config  # noqa: E402
from data_pipeline.layout import reader  # noqa: E402
from tribert_jax.embeddings import export  # noqa: E402
from tribert_jax.embeddings import ranking  # noqa: E402
from tribert_jax.embeddings import retrieval  # noqa: E402

# A session compilation cache: the tiny pretrain below is the same program as the "default"
# ablation of tests/test_ablations.py, compiled once per session.
jax.config.update("jax_compilation_cache_dir", os.environ.setdefault(
    "TRIBERT_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="tribert_test_xla_cache_")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def tiny_cfg(**overrides):
  """config.retrieval of the tiny config with overrides."""
  cfg = retrieval_config.get_config("tiny").retrieval
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


# ---- ranking -----------------------------------------------------------------------------------


def test_exact_match_embeddings_give_top1_100():
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(50, 32))
  scores = embeddings @ embeddings.T  # query i matches answer i exactly: |x|^2 > x . y
  accuracy = ranking.topk_accuracy(scores, np.arange(50), (1, 5, 10))
  assert accuracy == {1: 100.0, 5: 100.0, 10: 100.0}


def test_random_scores_are_at_chance():
  rng = np.random.default_rng(1)
  queries, pool = 4000, 100
  accuracy = ranking.topk_accuracy(rng.normal(size=(queries, pool)),
                                     rng.integers(0, pool, queries), (1, 5, 10))
  for k, value in accuracy.items():
    chance = ranking.random_accuracy(k, pool)
    sigma = 100 * np.sqrt(chance / 100 * (1 - chance / 100) / queries)
    assert abs(value - chance) < 4 * sigma, (k, value, chance)


@pytest.mark.parametrize("policy", ranking.TIE_POLICIES)
def test_all_equal_scores_never_inflate_accuracy(policy):
  pool = 20
  scores = np.zeros((pool, pool))
  accuracy = ranking.topk_accuracy(scores, np.arange(pool), (1, 5, 10, 20), policy)
  if policy == "pessimistic":
    assert accuracy == {1: 0.0, 5: 0.0, 10: 0.0, 20: 100.0}
  else:  # mean over random orders of the ties = random selection
    assert accuracy == pytest.approx({k: ranking.random_accuracy(k, pool)
                                      for k in (1, 5, 10, 20)})
  # Deterministic: the same scores give the same numbers.
  assert accuracy == ranking.topk_accuracy(scores, np.arange(pool), (1, 5, 10, 20), policy)


def test_partial_ties():
  # Answer (index 0) ties with two items, one item scores higher.
  scores = np.array([[1.0, 1.0, 1.0, 2.0, 0.0]])
  pessimistic = ranking.topk_accuracy(scores, np.array([0]), (1, 2, 3, 4))
  assert pessimistic == {1: 0.0, 2: 0.0, 3: 0.0, 4: 100.0}
  expected = ranking.topk_accuracy(scores, np.array([0]), (1, 2, 3, 4), "expected")
  assert expected == pytest.approx({1: 0.0, 2: 100 / 3, 3: 200 / 3, 4: 100.0})


def test_constant_network_scores_zero_not_hundred():
  """A network whose output ignores its input (zeroed weights) ties every item."""
  rng = np.random.default_rng(2)
  variant = retrieval.VARIANTS["audio_to_vision"]
  x = rng.normal(size=(16, 8)).astype(np.float32)
  trained = retrieval.train_variant(variant, {"audio": x}, x, np.eye(16), tiny_cfg(num_epochs=0))
  trained.params = jax.tree.map(np.zeros_like, trained.params)
  accuracy = retrieval.evaluate_variant(trained, {"audio": x}, x, (1, 5, 10), "pessimistic")
  assert accuracy == {1: 0.0, 5: 0.0, 10: 0.0}


def test_untrained_network_on_random_embeddings_is_at_chance():
  rng = np.random.default_rng(3)
  pool = 400
  variant = retrieval.VARIANTS["vision_audio_to_pose"]
  train = {m: rng.normal(size=(64, 12)).astype(np.float32) for m in ("visual", "audio", "pose")}
  trained = retrieval.train_variant(variant, {m: train[m] for m in ("visual", "audio")},
                                    train["pose"], np.eye(64), tiny_cfg(num_epochs=1))
  test = {m: rng.normal(size=(pool, 12)).astype(np.float32) for m in ("visual", "audio", "pose")}
  accuracy = retrieval.evaluate_variant(trained, {m: test[m] for m in ("visual", "audio")},
                                        test["pose"], (10, 50), "pessimistic")
  for k, value in accuracy.items():
    chance = ranking.random_accuracy(k, pool)
    sigma = 100 * np.sqrt(chance / 100 * (1 - chance / 100) / pool)
    assert abs(value - chance) < 4 * sigma, (k, value, chance)


# ---- distractors --------------------------------------------------------------------------------


def test_nearest_neighbours_match_brute_force_and_exclude_self():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(40, 6))
  x[7] = x[3]  # an exact duplicate of another clip
  neighbours = retrieval.nearest_neighbours(x, 25)
  for i in range(len(x)):
    distances = np.linalg.norm(x - x[i], axis=1)
    distances[i] = np.inf
    expected = np.argsort(distances, kind="stable")[:25]
    assert i not in neighbours[i]
    assert set(neighbours[i]) == set(expected)
  assert neighbours[3][0] == 7 and neighbours[7][0] == 3


def test_hard_negatives_are_nearest_neighbours_and_never_the_positive():
  rng = np.random.default_rng(5)
  n = 60
  labels = np.eye(6)[rng.integers(0, 6, n)]
  x = rng.normal(size=(n, 5))
  for exclude_same_class in (False, True):
    allowed = retrieval._allowed(labels, exclude_same_class)  # pylint: disable=protected-access
    neighbours = retrieval.nearest_neighbours(x, 25, allowed)
    for _ in range(20):
      anchors = rng.integers(0, n, 16)
      choices = retrieval.sample_choices(rng, anchors, neighbours, allowed, 1, 2)
      assert choices.shape == (16, 4)
      assert np.all(choices[:, 0] == anchors)
      for a, row in zip(anchors, choices):
        assert len(set(row)) == 4 and a not in row[1:]
        assert row[1] in neighbours[a]
        distances = np.linalg.norm(x - x[a], axis=1)
        distances[~allowed[a]] = np.inf
        assert distances[row[1]] <= np.sort(distances)[24]  # among the 25 nearest
        if exclude_same_class:
          assert not np.any(np.all(labels[row[1:]] == labels[a], axis=1))
  two_hard = retrieval.sample_choices(rng, np.arange(n), neighbours, allowed, 2, 0)
  assert two_hard.shape == (n, 3)
  assert all(set(row[1:]) <= set(neighbours[a]) for a, row in enumerate(two_hard))


# ---- training -----------------------------------------------------------------------------------


def test_training_learns_a_synthetic_alignment():
  """Result = fixed linear map of the query plus noise: loss falls, retrieval beats chance."""
  rng = np.random.default_rng(6)
  mixing = rng.normal(size=(16, 24))
  def clips(n):
    q = rng.normal(size=(n, 16)).astype(np.float32)
    return q, (q @ mixing + 0.1 * rng.normal(size=(n, 24))).astype(np.float32)
  train_q, train_r = clips(256)
  variant = retrieval.VARIANTS["pose_to_audio"]
  cfg = tiny_cfg(num_epochs=40, width=32, hidden_width=32, batch_size=64, learning_rate=3e-3)
  trained = retrieval.train_variant(variant, {"pose": train_q}, train_r, np.eye(256), cfg)
  assert trained.history[-1] < 0.5 * trained.history[0]
  test_q, test_r = clips(50)
  accuracy = retrieval.evaluate_variant(trained, {"pose": test_q}, test_r, (1, 5), "pessimistic")
  assert accuracy[1] > 10 * ranking.random_accuracy(1, 50)
  assert accuracy[5] > 50.0


# ---- export from a trained checkpoint and the full run --------------------------------------------


@pytest.fixture(scope="module")
def tiny_pretrain_workdir(synthmusic_tiny, tmp_path_factory):
  """One tiny pretrain step via the trainer's library function (no evaluation)."""
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("pretrain"))
  config = pretrain.get_config("tiny")
  config.data.root = str(synthmusic_tiny)
  config.eval.at_end = False
  train.train_and_evaluate(config, workdir)
  return workdir


def test_export_and_retrieval_run_on_a_tiny_checkpoint(synthmusic_tiny, tiny_pretrain_workdir,
                                                       tmp_path, capsys):
  config = retrieval_config.get_config("tiny")
  config.data.root = str(synthmusic_tiny)
  config.init.checkpoint = tiny_pretrain_workdir
  workdir = str(tmp_path / "retrieval")
  report = retrieval.run(config, workdir)

  embeddings, step = export.ensure_embeddings(config, workdir)  # reused, not re-exported
  assert step == 1
  for split in ("train", "test"):
    records = reader.read_index(synthmusic_tiny, split)
    arrays = embeddings[split]
    assert list(arrays["ids"]) == [r.id for r in records]  # every clip once, in index order
    assert arrays["labels"].shape == (len(records), config.data.num_classes)
    assert np.all(arrays["labels"].sum(axis=1) == [len(r.labels) for r in records])
    t = config.model.transformer
    for kind, widths in (("tribert", {"visual": t.visual_width, "pose": t.pose_width,
                                      "audio": t.audio_width}),
                         ("input", {"visual": t.visual_width, "pose": t.pose_width,
                                    "audio": t.audio_width})):
      for m, width in widths.items():
        value = arrays[f"{kind}_{m}"]
        # learned <SOS> + T frames x 2 slots, flattened
        assert value.shape == (len(records), (1 + config.data.num_frames * 2) * width)
        assert np.all(np.isfinite(value))
        assert np.std(value, axis=0).max() > 0  # clips differ
    assert not np.allclose(arrays["tribert_audio"], arrays["input_audio"])

  assert report["pool_size"] == 22 and set(report["variants"]) == set(retrieval.VARIANTS)
  for entry in report["variants"].values():
    for kind in ("tribert", "input"):
      assert set(entry[kind]) == {"1", "5", "10"}
      assert all(0.0 <= v <= 100.0 for v in entry[kind].values())
  assert report["random"]["1"] == pytest.approx(100 / 22)
  printed = capsys.readouterr().out
  assert "| Audio → Vision |" in printed and "| Vision + Audio → Pose |" in printed
  assert "| Random selection |" in printed
  assert os.path.isfile(os.path.join(workdir, "retrieval.json"))
  with open(os.path.join(workdir, "retrieval.md")) as handle:
    assert handle.read() in printed


def test_checkpoint_of_another_size_is_rejected(synthmusic_tiny, tiny_pretrain_workdir):
  config = retrieval_config.get_config("tiny")
  config.model.transformer.audio_width = 24  # not the pretrain run's model
  config.init.checkpoint = tiny_pretrain_workdir
  with pytest.raises(ValueError, match="does not fit config.model"):
    export.load_tribert_variables(config)
