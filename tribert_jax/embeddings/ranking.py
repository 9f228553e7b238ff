"""Ranking metrics shared by retrieval and the probe: top-k accuracy with a tie rule, chance
level, and per-feature standardisation of embeddings."""

from __future__ import annotations

from typing import Sequence

import numpy as np

TIE_POLICIES = ("pessimistic", "expected")


def standardizer(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and std (1 where a feature is constant) of training embeddings."""
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  return mean, np.where(std > 1e-6, std, 1.0)



def topk_accuracy(scores: np.ndarray, targets: np.ndarray, ks: Sequence[int],
                  tie_policy: str = "pessimistic") -> dict[int, float]:
  """Top-k accuracy in percent of scores [Q, P] (higher = better) with answer targets[q].

  Ties never help: "pessimistic" puts the answer after every other item with the same score;
  "expected" credits (k - #better) / (#tied incl. the answer), clipped to [0, 1], the mean over
  random orderings of the ties.
  """
  scores = np.asarray(scores, np.float64)
  targets = np.asarray(targets, np.int64)
  if scores.ndim != 2 or targets.shape != (scores.shape[0],):
    raise ValueError(f"scores {scores.shape} and targets {targets.shape} do not match")
  if not np.all(np.isfinite(scores)):
    raise FloatingPointError("topk_accuracy: non-finite scores")
  answer = scores[np.arange(len(targets)), targets][:, None]  # [Q, 1]
  better = np.sum(scores > answer, axis=1)
  tied = np.sum(scores == answer, axis=1) - 1  # other items scoring exactly like the answer
  out = {}
  for k in ks:
    if tie_policy == "pessimistic":
      hits = (better + tied < k).astype(np.float64)
    elif tie_policy == "expected":
      hits = np.clip((k - better) / (tied + 1.0), 0.0, 1.0)
    else:
      raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    out[int(k)] = 100.0 * float(np.mean(hits))
  return out


def random_accuracy(k: int, pool_size: int) -> float:
  """Top-k accuracy in percent of picking k pool items at random."""
  return 100.0 * min(k, pool_size) / pool_size
