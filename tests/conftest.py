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

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def synthmusic_tiny(tmp_path_factory):
  """Path of a tiny SynthMUSIC dataset (all 21 classes, solos and duets), generated once."""
  from data_pipeline import synthmusic

  out = tmp_path_factory.mktemp("synthmusic") / "tiny"
  return synthmusic.generate(out, size="tiny", seed=0, progress=False)


def pytest_configure(config):
  """Keep third-party deprecation noise out of the test report."""
  config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
