"""BSS-eval separation metrics (SDR, SIR, SAR): the one place that calls mir_eval.

`mir_eval.separation.bss_eval_sources` is deprecated in mir_eval 0.8 and removed in 0.9, so
requirements.txt pins mir_eval==0.8.2 and every caller in the project goes through
`bss_eval_sources` below. `fast_bss_eval` (same maths, exact solve, ~7x faster) is an opt-in
backend; mir_eval stays the default because it is what the field reports.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

BACKENDS = ("mir_eval", "fast_bss_eval")


class SilentSourceError(ValueError):
  """A reference or estimated source is all zeros, so BSS-eval is undefined for it."""


@dataclasses.dataclass(frozen=True)
class BssEvalResult:
  """Per-source metrics in dB, each of shape [N]."""
  sdr: np.ndarray
  sir: np.ndarray
  sar: np.ndarray


def silent_sources(sources: np.ndarray) -> np.ndarray:
  """Boolean [N]: which rows of sources [N, L] are exactly zero (mir_eval's own test)."""
  return np.all(np.asarray(sources) == 0, axis=-1)


def check_not_silent(reference: np.ndarray, estimate: np.ndarray) -> None:
  """Raises SilentSourceError naming which sources are silent (mir_eval would refuse them)."""
  silent_reference = silent_sources(reference)
  silent_estimate = silent_sources(estimate)
  if silent_reference.any():
    raise SilentSourceError(
        f"silent reference: source(s) {np.flatnonzero(silent_reference).tolist()} are all zeros")
  if silent_estimate.any():
    raise SilentSourceError(
        f"silent prediction: source(s) {np.flatnonzero(silent_estimate).tolist()} are all zeros")


def bss_eval_sources(reference: np.ndarray, estimate: np.ndarray,
                     backend: str = "mir_eval") -> BssEvalResult:
  """SDR/SIR/SAR of estimate [N, L] against reference [N, L], sources in the given order.

  No permutation search: source n is the one separated for video n, so the pairing is known
  (the Sound-of-Pixels protocol calls bss_eval_sources with compute_permutation=False too).
  """
  reference = np.asarray(reference, np.float64)
  estimate = np.asarray(estimate, np.float64)
  if reference.ndim != 2 or reference.shape != estimate.shape:
    raise ValueError(f"reference and estimate must both be [N, L]; got {reference.shape} and "
                     f"{estimate.shape}")
  check_not_silent(reference, estimate)
  if backend == "mir_eval":
    import mir_eval.separation  # pylint: disable=g-import-not-at-top
    with warnings.catch_warnings():
      # Deprecated in 0.8 (FutureWarning); version pinned in requirements.txt.
      warnings.simplefilter("ignore", FutureWarning)
      sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(
          reference, estimate, compute_permutation=False)
  elif backend == "fast_bss_eval":
    import fast_bss_eval  # pylint: disable=g-import-not-at-top
    # fast_bss_eval 0.1.4's compute_permutation=False path fails under numpy 2 (a batched
    # np.linalg.solve with a 1-D right-hand side), so ask for the best permutation and fall back
    # to mir_eval when that permutation is not the identity (the pairing is fixed here).
    sdr, sir, sar, permutation = fast_bss_eval.bss_eval_sources(
        reference, estimate, compute_permutation=True)
    if not np.array_equal(permutation, np.arange(reference.shape[0])):
      return bss_eval_sources(reference, estimate, backend="mir_eval")
  else:
    raise ValueError(f"unknown BSS-eval backend {backend!r}; choose one of {BACKENDS}")
  return BssEvalResult(np.asarray(sdr, np.float64), np.asarray(sir, np.float64),
                       np.asarray(sar, np.float64))
