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


def silent_sources(sources: np.ndarray, threshold: float = 0.0) -> np.ndarray:
  """Boolean [N]: which rows of sources [N, L] are silent. threshold 0.0 (the project's
  policy): exactly zero, mir_eval's own test; threshold > 0: sum(|x|) <= threshold (the
  Sound-of-Pixels / TriBERT release test, with 1e-5)."""
  if threshold > 0:
    return np.sum(np.abs(np.asarray(sources, np.float64)), axis=-1) <= threshold
  return np.all(np.asarray(sources) == 0, axis=-1)


def check_not_silent(reference: np.ndarray, estimate: np.ndarray,
                     threshold: float = 0.0) -> None:
  """Raises SilentSourceError naming which sources are silent (mir_eval would refuse them)."""
  what = f"have sum(|x|) <= {threshold:g}" if threshold > 0 else "are all zeros"
  silent_reference = silent_sources(reference, threshold)
  silent_estimate = silent_sources(estimate, threshold)
  if silent_reference.any():
    raise SilentSourceError(
        f"silent reference: source(s) {np.flatnonzero(silent_reference).tolist()} {what}")
  if silent_estimate.any():
    raise SilentSourceError(
        f"silent prediction: source(s) {np.flatnonzero(silent_estimate).tolist()} {what}")


_BLAS_LIMITS = []  # keeps the worker's threadpool limit alive


def limit_blas_threads(num_threads: int) -> None:
  """Process-pool initializer: at most num_threads BLAS threads in this (worker) process."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  _BLAS_LIMITS.append(threadpoolctl.threadpool_limits(limits=num_threads, user_api="blas"))


def blas_threads(_: object = None) -> int:
  """The most threads any BLAS library loaded in this process will use."""
  import threadpoolctl  # pylint: disable=g-import-not-at-top
  return max((p["num_threads"] for p in threadpoolctl.threadpool_info()
              if p["user_api"] == "blas"), default=1)


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


def score_mixture(task: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, str]
                  ) -> dict[str, object]:
  """Scores one mixture; runs in a worker process (only numpy and mir_eval needed there).

  task = (reference [N, L], estimate [N, L], mixture [L] or None (no floor: "mixture" None),
  ideal-mask estimate [N, L] or None, backend). Returns {"status": "ok", "separated":
  {sdr, sir, sar}, "mixture": {...},
  "ideal_mask": {...} or None, "ideal_mask_skip": reason or None} with per-source lists, or
  {"status": "skipped", "reason": "silent reference: ..." | "silent prediction: ..."}.
  """
  reference, estimate, mixture, ideal, backend = task
  try:
    separated = bss_eval_sources(reference, estimate, backend)
  except SilentSourceError as error:
    return {"status": "skipped", "reason": str(error)}
  # The unprocessed mixture offered as the estimate of every source: the SDR floor. The mixture
  # lies exactly in the span of the references, so its artefact term is zero: fast_bss_eval then
  # takes log10(0) (SAR infinite, a numpy divide warning per call; mir_eval's epsilon gives ~138
  # dB instead). Expected, and the floor's SDR stays finite: keep the warning out of the logs.
  if mixture is None:
    floor = None
  else:
    with np.errstate(divide="ignore"):
      floor = _as_lists(bss_eval_sources(reference, np.broadcast_to(mixture, reference.shape),
                                         backend))
  result = {"status": "ok", "separated": _as_lists(separated), "mixture": floor,
            "ideal_mask": None, "ideal_mask_skip": None}
  if ideal is not None:
    try:
      result["ideal_mask"] = _as_lists(bss_eval_sources(reference, ideal, backend))
    except SilentSourceError as error:
      result["ideal_mask_skip"] = str(error)
  return result


def _as_lists(result: BssEvalResult) -> dict[str, list[float]]:
  """JSON-friendly per-source metrics."""
  return {"sdr": result.sdr.tolist(), "sir": result.sir.tolist(), "sar": result.sar.tolist()}
