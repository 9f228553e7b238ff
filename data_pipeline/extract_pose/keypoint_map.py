"""COCO-WholeBody-133 (what RTMW / DWPose predict) -> Halpe-136 (what AlphaPose writes and the
project reads; data_pipeline/layout/skeleton.py).

COCO-WholeBody-133                    Halpe-136
  0-16   COCO body (nose .. r_ankle)     0-16   the same 17 points, same order
  17-19  l_big_toe, l_small_toe, l_heel  20 l_big_toe, 22 l_small_toe, 24 l_heel
  20-22  r_big_toe, r_small_toe, r_heel  21 r_big_toe, 23 r_small_toe, 25 r_heel
  23-90  face, 68 points                 26-93  face, 68 points, same (300-W) order
  91-111 left hand, 21 points            94-114 left hand, same order (wrist, thumb .. little)
  112-132 right hand, 21 points          115-135 right hand, same order
  --                                     17 head (top), 18 neck, 19 hip: derived, below

Halpe's head top, neck and hip centre have no COCO-WholeBody counterpart; they are derived:
  neck (18) = midpoint of the shoulders (5, 6), confidence = the lower of the two
  hip  (19) = midpoint of the hips (11, 12), confidence = the lower of the two
  head (17) = eye midpoint + (eye midpoint - chin): the eyes sit about halfway between chin and
              crown, so the crown lies as far above the eyes as the chin lies below them, along
              the face's own axis (tilted heads stay right). Eyes = COCO 1, 2; chin = COCO-WB 31
              (face point 8, the tip of the jaw line). Confidence = the lowest of the three.
numpy only.
"""

from __future__ import annotations

import numpy as np

from data_pipeline.layout.skeleton import (HALPE_FACE, HALPE_LEFT_HAND, HALPE_NUM_KEYPOINTS,
                                           HALPE_RIGHT_HAND)

COCO_WHOLEBODY_NUM_KEYPOINTS = 133
COCO_WB_FACE, COCO_WB_LEFT_HAND, COCO_WB_RIGHT_HAND = 23, 91, 112
NUM_FACE, NUM_HAND = 68, 21

# Halpe indices of the derived joints.
HALPE_HEAD, HALPE_NECK, HALPE_HIP = 17, 18, 19
# COCO-WholeBody indices the derived joints are computed from.
COCO_LEFT_EYE, COCO_RIGHT_EYE = 1, 2
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
COCO_LEFT_HIP, COCO_RIGHT_HIP = 11, 12
COCO_WB_CHIN = COCO_WB_FACE + 8


def _direct_pairs() -> list[tuple[int, int]]:
  """(Halpe index, COCO-WholeBody index) of every point the two formats share."""
  pairs = [(k, k) for k in range(17)]  # COCO body
  # Feet: COCO-WB lists the left foot then the right; Halpe alternates left / right.
  pairs += [(20, 17), (22, 18), (24, 19), (21, 20), (23, 21), (25, 22)]
  pairs += [(HALPE_FACE + j, COCO_WB_FACE + j) for j in range(NUM_FACE)]
  pairs += [(HALPE_LEFT_HAND + j, COCO_WB_LEFT_HAND + j) for j in range(NUM_HAND)]
  pairs += [(HALPE_RIGHT_HAND + j, COCO_WB_RIGHT_HAND + j) for j in range(NUM_HAND)]
  return pairs


DIRECT_PAIRS = tuple(_direct_pairs())
# HALPE_FROM_COCO[h] = the COCO-WholeBody index copied to Halpe index h; -1 for derived joints.
HALPE_FROM_COCO = np.full(HALPE_NUM_KEYPOINTS, -1, np.int64)
for _halpe, _coco in DIRECT_PAIRS:
  HALPE_FROM_COCO[_halpe] = _coco
DERIVED = (HALPE_HEAD, HALPE_NECK, HALPE_HIP)
assert sorted(np.flatnonzero(HALPE_FROM_COCO < 0).tolist()) == sorted(DERIVED)
assert len(set(HALPE_FROM_COCO[HALPE_FROM_COCO >= 0].tolist())) == COCO_WHOLEBODY_NUM_KEYPOINTS


def to_halpe(keypoints: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """COCO-WholeBody keypoints [..., 133, 2] (pixels) and scores [..., 133] -> Halpe-136
  [..., 136, 3] (x, y, confidence), float64."""
  keypoints = np.asarray(keypoints, np.float64)
  scores = np.asarray(scores, np.float64)
  if keypoints.shape[-2:] != (COCO_WHOLEBODY_NUM_KEYPOINTS, 2) or \
      scores.shape != keypoints.shape[:-1]:
    raise ValueError(f"expected COCO-WholeBody keypoints [..., 133, 2] and scores [..., 133], "
                     f"got {keypoints.shape} and {scores.shape}")
  coco = np.concatenate([keypoints, scores[..., None]], axis=-1)
  out = np.zeros(keypoints.shape[:-2] + (HALPE_NUM_KEYPOINTS, 3), np.float64)
  direct = HALPE_FROM_COCO >= 0
  out[..., direct, :] = coco[..., HALPE_FROM_COCO[direct], :]

  def midpoint(a: int, b: int) -> np.ndarray:
    point = np.empty(coco.shape[:-2] + (3,))
    point[..., :2] = 0.5 * (coco[..., a, :2] + coco[..., b, :2])
    point[..., 2] = np.minimum(coco[..., a, 2], coco[..., b, 2])
    return point

  out[..., HALPE_NECK, :] = midpoint(COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER)
  out[..., HALPE_HIP, :] = midpoint(COCO_LEFT_HIP, COCO_RIGHT_HIP)
  eyes = midpoint(COCO_LEFT_EYE, COCO_RIGHT_EYE)
  chin = coco[..., COCO_WB_CHIN, :]
  out[..., HALPE_HEAD, :2] = 2.0 * eyes[..., :2] - chin[..., :2]
  out[..., HALPE_HEAD, 2] = np.minimum(eyes[..., 2], chin[..., 2])
  return out
