"""Separation evaluation loop: masks -> waveforms -> BSS-eval (SDR/SIR/SAR) over fixed mixtures.

Protocol (Sound-of-Pixels / TriBERT): the predicted warped masks are un-warped to the 512
linear-frequency bins, thresholded at config.eval.threshold when config.eval.mask_type is
"binary" (kept as ratios when "ratio"), applied to the mixture magnitude with the mixture phase
and inverted by iSTFT. Each mixture's N estimates are scored against its N ground-truth sources
with mir_eval's bss_eval_sources (tribert_jax.evaluation.metrics), metrics averaged over the
sources of a mixture and then over mixtures. Two references on the same mixtures:
  * mixture: the unprocessed mixture offered as every source's estimate (the floor);
  * ideal_mask: the ideal binary mask the model is trained to predict (spectral_features'
    gt_masks) reconstructed exactly like a prediction (the ceiling of this output domain).
Mixtures whose reference or prediction is all zeros cannot be scored (mir_eval raises):
config.eval.silent_policy "skip" counts them by reason, "error" stops with the mixture's row.
Examples with valid == 0 (padding to a full batch) are ignored.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.pool
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from tribert_jax import sharding
from tribert_jax.evaluation import metrics

METRICS = ("sdr", "sir", "sar")
SKIP_REASONS = ("silent reference", "silent prediction")
_STATUS_OK = 0


# ----------------------------------------------------------------------------------------------
# Scoring on the host (all CPU cores).
# ----------------------------------------------------------------------------------------------


def score_all(tasks: Sequence[tuple], num_workers: int = 0, progress: bool = True
              ) -> list[dict[str, Any]]:
  """Scores mixtures in a process pool (num_workers 0 = all cores; 1 = in this process)."""
  if not tasks:
    return []
  workers = num_workers or os.cpu_count() or 1
  workers = min(workers, len(tasks))
  bar = functools.partial(tqdm.tqdm, total=len(tasks), desc="bss_eval", disable=not progress,
                          leave=False)
  if workers <= 1:
    return [metrics.score_mixture(t) for t in bar(tasks)]
  with scoring_pool(workers) as pool:
    return list(bar(pool.imap(metrics.score_mixture, tasks, chunksize=1)))


def scoring_pool(workers: int) -> multiprocessing.pool.Pool:
  """A pool of `workers` scoring processes, each with its share of the cores for BLAS."""
  # forkserver: forking this process (JAX and TF threads running) risks deadlocks, and spawn
  # would re-import the entry script in every worker; the workers need only numpy + mir_eval.
  context = multiprocessing.get_context("forkserver")
  context.set_forkserver_preload(["tribert_jax.evaluation.metrics"])
  # numpy's OpenBLAS otherwise starts one thread per core in every worker: the oversubscribed
  # solves made the pool ~3x slower (0.92 s against 0.33 s per mixture with 2 workers on 2 cores).
  blas_threads = max(1, (os.cpu_count() or 1) // workers)
  return context.Pool(workers, initializer=metrics.limit_blas_threads, initargs=(blas_threads,))


def per_example_arrays(records: Sequence[dict[str, Any]], num_sources: int
                       ) -> dict[str, np.ndarray]:
  """Fixed-shape arrays (NaN where not scored) so hosts can all-gather the scores."""
  size = len(records)
  arrays = {f"{kind}_{m}": np.full((size, num_sources), np.nan, np.float64)
            for kind in ("separated", "mixture", "ideal_mask") for m in METRICS}
  arrays["status"] = np.zeros((size,), np.int32)  # 0 ok, 1 + index into SKIP_REASONS
  arrays["ideal_mask_skipped"] = np.zeros((size,), np.int32)
  for i, record in enumerate(records):
    if record["status"] != "ok":
      reason = record["reason"]
      arrays["status"][i] = 1 + next(k for k, r in enumerate(SKIP_REASONS) if reason.startswith(r))
      continue
    for kind in ("separated", "mixture", "ideal_mask"):
      if record[kind] is not None:
        for m in METRICS:
          arrays[f"{kind}_{m}"][i] = record[kind][m]
    arrays["ideal_mask_skipped"][i] = int(record["ideal_mask_skip"] is not None)
  return arrays


def summarise(scores: Mapping[str, np.ndarray], labels: np.ndarray,
              class_names: Sequence[str]) -> dict[str, Any]:
  """Mean/median metrics over mixtures (each the mean over its sources), per-class SDR, counts.

  scores: per-example arrays of valid mixtures (from per_example_arrays); labels [M, N, C].
  """
  status = scores["status"]
  scored = status == _STATUS_OK
  summary: dict[str, Any] = {"num_mixtures": int(len(status)), "num_scored": int(scored.sum()),
                             "skipped": {r.replace(" ", "_"): int((status == 1 + k).sum())
                                         for k, r in enumerate(SKIP_REASONS)},
                             "ideal_mask_skipped": int(scores["ideal_mask_skipped"][scored].sum())}

  def stats(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
      return float("nan"), float("nan")
    return float(np.mean(values)), float(np.median(values))

  for kind, prefix in (("separated", ""), ("mixture", "mixture_"), ("ideal_mask", "ideal_mask_")):
    for m in METRICS:
      if kind == "mixture" and m != "sdr":
        continue  # SIR/SAR of the unprocessed mixture say little
      per_mixture = scores[f"{kind}_{m}"][scored].mean(axis=-1)
      summary[f"{prefix}{m}"], summary[f"{prefix}{m}_median"] = stats(per_mixture)
  improvement = (scores["separated_sdr"][scored].mean(-1) - scores["mixture_sdr"][scored].mean(-1))
  summary["sdr_improvement"], summary["sdr_improvement_median"] = stats(improvement)

  per_class = {}
  source_sdr = scores["separated_sdr"][scored]  # [M', N]
  source_labels = np.asarray(labels)[scored] > 0.5  # [M', N, C]
  for c, name in enumerate(class_names):
    values = source_sdr[source_labels[..., c]]
    if values.size:
      per_class[name] = {"sdr": float(np.mean(values)), "count": int(values.size)}
  summary["per_class_sdr"] = per_class
  return summary


# ----------------------------------------------------------------------------------------------
# The evaluation loop.
# ----------------------------------------------------------------------------------------------


def evaluate(separate_fn: Callable[..., dict], variables: Any,
             batches: Iterable[Mapping[str, np.ndarray]],
             to_global: Callable[[Mapping[str, np.ndarray]], Mapping[str, jax.Array]],
             mesh: jax.sharding.Mesh, batch_spec: jax.sharding.PartitionSpec,
             config: ml_collections.ConfigDict, class_names: Sequence[str],
             *, max_batches: int = -1, num_examples_to_show: int = 0,
             progress: bool = True) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
  """Separates and scores every valid mixture of `batches` (host-local numpy batches).

  Returns (summary, examples): summary as in `summarise`; examples = the first
  num_examples_to_show valid mixtures with their audio, masks and attention for TensorBoard.
  """
  eval_config = config.eval
  tasks, labels, rows, examples = [], [], [], []
  for index, batch in enumerate(batches):
    if 0 <= max_batches <= index:
      break
    outputs = separate_fn(variables, to_global(batch))
    local = {k: sharding.host_local(v, mesh, batch_spec) for k, v in outputs.items()}
    for b in np.flatnonzero(np.asarray(batch["valid"]) > 0.5):
      ideal = local["ideal"][b] if eval_config.ideal_mask else None
      tasks.append((batch["waveform"][b], local["predictions"][b], batch["mixture"][b], ideal,
                    eval_config.backend))
      labels.append(batch["labels"][b])
      rows.append(int(batch["mixture_index"][b]))
      if len(examples) < num_examples_to_show:
        example = dict(mixture=batch["mixture"][b], sources=batch["waveform"][b],
                       predictions=local["predictions"][b], mix_mag=local["mix_mag"][b],
                       pred_masks=local["mask_probabilities"][b], gt_masks=local["gt_masks"][b])
        if "attention" in local:
          example.update(frames=batch["frames"][b], attention=local["attention"][b])
        examples.append(example)
  records = score_all(tasks, eval_config.num_workers, progress and jax.process_index() == 0)
  if eval_config.silent_policy == "error":
    for row, record in zip(rows, records):
      if record["status"] != "ok":
        raise ValueError(f"mixture row {row} of the {eval_config.split} mixture list cannot be "
                         f"scored: {record['reason']} (config.eval.silent_policy='error')")
  elif eval_config.silent_policy != "skip":
    raise ValueError(f"config.eval.silent_policy={eval_config.silent_policy!r}: expected "
                     "'skip' or 'error'")
  for row, record in zip(rows, records):
    if record["status"] != "ok":
      logging.info("skipping mixture row %d: %s", row, record["reason"])
  num_sources = int(config.data.num_mix)
  scores = per_example_arrays(records, num_sources)
  label_array = (np.stack(labels) if labels
                 else np.zeros((0, num_sources, len(class_names)), np.float32))
  if jax.process_count() > 1:
    # Every host scored its own rows; gather so all hosts summarise (and pick "best") alike.
    # Hosts see the same number of batches, but valid rows differ: pad to the largest count.
    counts = multihost_utils.process_allgather(np.array([len(records)]))
    width = int(np.max(counts))
    pad = lambda a, fill: np.concatenate(  # noqa: E731
        [a, np.full((width - len(a),) + a.shape[1:], fill, a.dtype)])
    scores = {k: pad(v, -1 if v.dtype.kind == "i" else np.nan) for k, v in scores.items()}
    gathered = multihost_utils.process_allgather(
        dict(scores, labels=pad(label_array, 0)))
    keep = np.concatenate([np.arange(int(c)) + i * width for i, c in enumerate(counts.ravel())])
    scores = {k: np.asarray(v).reshape((-1,) + v.shape[2:])[keep] for k, v in gathered.items()}
    label_array = scores.pop("labels")
  summary = summarise(scores, label_array, class_names)
  return summary, examples
