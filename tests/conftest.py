"""Shared pytest fixtures: a tiny SynthMUSIC dataset generated once per test session."""

import os

# TensorFlow must not grab accelerators or flood the log; JAX tests run on the host CPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# Tiny test programs compile ~3x faster at XLA's lowest CPU backend optimisation level; XLA reads
# the flag once, at backend start, so it is set before any test module imports jax.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import tempfile  # noqa: E402

# One persistent XLA compilation cache for the whole run: both xdist workers and every
# subprocess (main.py runs, multi-device and two-process runs) inherit it through the
# environment, so the tiny programs that several test files compile are compiled once.
# The cache key includes the XLA flags, so -O0 and default-flag programs never mix.
os.environ.setdefault("TRIBERT_TEST_XLA_CACHE", tempfile.mkdtemp(prefix="tribert_test_xla_cache_"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.environ["TRIBERT_TEST_XLA_CACHE"])
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# One clip-validation cache for every run of the session that does not name its own (entries are
# keyed by path, size and mtime): each tiny run would otherwise decode every frame again.
os.environ.setdefault("TRIBERT_VALIDATION_CACHE",
                      os.path.join(os.environ["TRIBERT_TEST_XLA_CACHE"], "clip_validation.json"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthmusic_tiny(tmp_path_factory):
  """Path of a tiny SynthMUSIC dataset (all 21 classes, solos and duets), generated once."""
  from data_pipeline import synthmusic

  out = tmp_path_factory.mktemp("synthmusic") / "tiny"
  return synthmusic.generate(out, size="tiny", seed=0, progress=False)


def pytest_configure(config):
  """Keep third-party deprecation noise out of the test report; keep SLOW_FILES_FIRST's order
  under `--dist loadfile` (no reordering of the files by their number of tests)."""
  config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


# The slowest test files, longest first (summed test durations of one `-n 2 --dist loadfile`
# run on the 2-core VM, 2026-12-07: test_benchmarks 220 s, test_train 182 s, test_staged_recipe
# 134 s, ...), handed to the two xdist workers first: scheduling the longest jobs first keeps
# one worker from running a long file alone at the end of the session. The rest keep their
# order. pytest-xdist (3.x) would otherwise reorder the files by their number of tests
# (--loadscope-reorder, its default), which put the many quick tests first and the trainings
# last; pytest_configure above turns that off.
SLOW_FILES_FIRST = ("test_benchmarks.py", "test_train.py", "test_staged_recipe.py",
                    "test_models_tribert.py", "test_separate.py", "test_retrieval.py",
                    "test_ablations.py", "test_models_amnet.py", "test_visual_pretraining.py",
                    "test_failure_behaviour.py", "test_amnet_training.py", "test_configs.py",
                    "test_train_hosts.py", "test_models_sound_of_pixels.py",
                    "test_loading_pipeline.py", "test_train_time_budget.py", "test_spectral.py",
                    "test_train_faults.py", "test_models_unet.py", "test_tfds_builders.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within files
