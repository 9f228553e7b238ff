"""The 68-joint TriBERT skeleton: which Halpe-136 keypoints it keeps, its bones (the ST-GCN
graph) and the joint permutation of a horizontal flip. numpy only (the models import it)."""

from __future__ import annotations

import numpy as np

# Halpe-136 (AlphaPose full body): body 0..25, face 26..93, left hand 94..114, right 115..135.
HALPE_NUM_KEYPOINTS = 136
HALPE_FACE = 26
HALPE_LEFT_HAND = 94
HALPE_RIGHT_HAND = 115

# TriBERT keeps body 0..25, left hand 94..114 and right hand 115..135.
HALPE_TO_TRIBERT = np.concatenate([np.arange(0, 26), np.arange(94, 136)]).astype(np.int64)
NUM_BODY_JOINTS = 26
NUM_HAND_JOINTS = 21
NUM_JOINTS = NUM_BODY_JOINTS + 2 * NUM_HAND_JOINTS  # 68
assert NUM_JOINTS == len(HALPE_TO_TRIBERT)
LEFT_HAND_OFFSET = NUM_BODY_JOINTS  # joints 26..46 (Halpe 94..114)
RIGHT_HAND_OFFSET = NUM_BODY_JOINTS + NUM_HAND_JOINTS  # joints 47..67 (Halpe 115..135)
LEFT_WRIST, RIGHT_WRIST = 9, 10
NECK = 18  # Halpe "neck": the centre of the spatial partitioning (ST-GCN uses the neck too)

# Halpe-26 body skeleton as drawn by AlphaPose (24 bones) plus nose-neck (0, 18): AlphaPose draws
# the face (0-4) disconnected from the body; a graph convolution needs one connected tree.
BODY_EDGES = (
    (0, 1), (0, 2), (1, 3), (2, 4), (0, NECK),  # head
    (5, 18), (6, 18), (5, 7), (7, 9), (6, 8), (8, 10),  # shoulders, arms
    (17, 18), (18, 19), (19, 11), (19, 12),  # head top, neck, hip
    (11, 13), (12, 14), (13, 15), (14, 16),  # legs
    (20, 24), (21, 25), (23, 25), (22, 24), (15, 24), (16, 25),  # feet
)
# 21-point hand: 0 wrist, then 4 joints per finger (thumb .. little), 20 bones.
HAND_EDGES = tuple((0 if j % 4 == 1 else j - 1, j) for j in range(1, NUM_HAND_JOINTS))


def graph_edges() -> list[tuple[int, int]]:
  """The 67 undirected edges of the 68-joint graph: body, both hands, hand roots to wrists."""
  edges = list(BODY_EDGES)
  for offset in (LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET):
    edges += [(offset + i, offset + j) for i, j in HAND_EDGES]
  edges += [(LEFT_WRIST, LEFT_HAND_OFFSET), (RIGHT_WRIST, RIGHT_HAND_OFFSET)]
  return edges


# Horizontal flip of a person: the left/right joints trade names (as a pose estimator run on the
# mirrored image would report them). Indices are into the 68-joint TriBERT order.
_BODY_LEFT_RIGHT = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
                    (20, 21), (22, 23), (24, 25))


def _flip_permutation() -> np.ndarray:
  """Joint permutation applied on a horizontal flip (68-joint order)."""
  perm = np.arange(NUM_JOINTS)
  for left, right in _BODY_LEFT_RIGHT:
    perm[left], perm[right] = right, left
  left_hand = np.arange(LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET)
  right_hand = np.arange(RIGHT_HAND_OFFSET, NUM_JOINTS)
  perm[left_hand], perm[right_hand] = right_hand, left_hand
  return perm


FLIP_PERMUTATION = _flip_permutation()
