"""Tests of tribert_jax.evaluation.metrics: the single mir_eval call site."""

import warnings

import mir_eval.separation
import numpy as np
import pytest

from tribert_jax.evaluation import metrics


def _sources(seed=0, length=8000):
  rng = np.random.default_rng(seed)
  reference = rng.standard_normal((2, length))
  estimate = reference + 0.3 * rng.standard_normal((2, length))
  return reference, estimate


def test_matches_direct_mir_eval_call():
  reference, estimate = _sources()
  result = metrics.bss_eval_sources(reference, estimate)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(reference, estimate,
                                                            compute_permutation=False)
  np.testing.assert_array_equal(result.sdr, sdr)
  np.testing.assert_array_equal(result.sir, sir)
  np.testing.assert_array_equal(result.sar, sar)


def test_fixed_pairing_is_not_permuted():
  reference, estimate = _sources()
  swapped = metrics.bss_eval_sources(reference, estimate[::-1])
  assert np.all(swapped.sdr < 0)  # scored against the wrong source, no permutation search


def test_fast_backend_agrees_including_swapped_sources():
  reference, estimate = _sources(1)
  for est in (estimate, estimate[::-1]):
    slow = metrics.bss_eval_sources(reference, est, "mir_eval")
    fast = metrics.bss_eval_sources(reference, est, "fast_bss_eval")
    np.testing.assert_allclose(fast.sdr, slow.sdr, atol=1e-6)
    np.testing.assert_allclose(fast.sir, slow.sir, atol=1e-6)
    np.testing.assert_allclose(fast.sar, slow.sar, atol=1e-6)


def test_silent_sources_are_named():
  reference, estimate = _sources()
  silent = reference.copy()
  silent[1] = 0.0
  with pytest.raises(metrics.SilentSourceError, match=r"silent reference.*\[1\]"):
    metrics.bss_eval_sources(silent, estimate)
  estimate[0] = 0.0
  with pytest.raises(metrics.SilentSourceError, match=r"silent prediction.*\[0\]"):
    metrics.bss_eval_sources(reference, estimate)


def test_bad_shapes_and_backend_rejected():
  reference, estimate = _sources()
  with pytest.raises(ValueError, match="must both be"):
    metrics.bss_eval_sources(reference, estimate[:, :-1])
  with pytest.raises(ValueError, match="unknown BSS-eval backend"):
    metrics.bss_eval_sources(reference, estimate, "nope")


def test_score_mixture_floor_ceiling_and_skips():
  reference, estimate = _sources()
  mixture = reference.sum(0)
  result = metrics.score_mixture((reference, estimate, mixture, reference * 0.5,
                                             "mir_eval"))
  assert result["status"] == "ok"
  floor = metrics.bss_eval_sources(reference, np.stack([mixture, mixture]))
  np.testing.assert_allclose(result["mixture"]["sdr"], floor.sdr)
  assert min(result["ideal_mask"]["sdr"]) > 100  # a scaled reference is perfect
  assert np.mean(result["separated"]["sdr"]) > np.mean(result["mixture"]["sdr"])
  silent_ideal = metrics.score_mixture(
      (reference, estimate, mixture, np.zeros_like(reference), "mir_eval"))
  assert silent_ideal["ideal_mask"] is None and "silent prediction" in silent_ideal["ideal_mask_skip"]
  skipped = metrics.score_mixture(
      (reference, np.zeros_like(estimate), mixture, None, "mir_eval"))
  assert skipped == {"status": "skipped", "reason": "silent prediction: source(s) [0, 1] are all zeros"}


def test_mixture_floor_scores_quietly_with_fast_bss_eval():
  # The floor's artefact term is exactly zero; fast_bss_eval must not flood the log with numpy
  # divide warnings for it, and its SDR is mir_eval's (a length at which the warning fires).
  reference, estimate = _sources(length=22050)
  mixture = reference.sum(0)
  with warnings.catch_warnings():
    warnings.simplefilter("error", RuntimeWarning)
    result = metrics.score_mixture((reference, estimate, mixture, None, "fast_bss_eval"))
  assert result["status"] == "ok"
  floor = metrics.bss_eval_sources(reference, np.stack([mixture, mixture]), "mir_eval")
  np.testing.assert_allclose(result["mixture"]["sdr"], floor.sdr, atol=1e-3)
