"""Person tracking across the frames of one video: each detection gets a stable track id (the
AlphaPose `idx` field), so data_pipeline.layout.reader.load_pose can follow a player.

Greedy IoU association: every frame, the (track, detection) pairs are taken in decreasing order
of the IoU between the detection box and the box where the track was last seen; a pair is
accepted while its IoU is at least `min_iou` and neither side is taken yet. Unmatched detections
start new tracks (ids 1, 2, ... in order of first appearance, as AlphaPose numbers them); a track
missed for more than `max_lost` consecutive frames is dropped, so a player hidden for a moment
(or missed by the detector) keeps the id, and a newcomer at the same place after a long gap gets
a new one. numpy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU [len(a), len(b)] of xyxy boxes a [N, 4] and b [M, 4]."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  x1 = np.maximum(a[:, None, 0], b[None, :, 0])
  y1 = np.maximum(a[:, None, 1], b[None, :, 1])
  x2 = np.minimum(a[:, None, 2], b[None, :, 2])
  y2 = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
  area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
  union = area_a[:, None] + area_b[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclasses.dataclass
class _Track:
  id: int
  box: np.ndarray  # xyxy where it was last seen
  lost: int = 0  # consecutive frames without a match


class IoUTracker:
  """Assigns track ids to the detections of consecutive frames of one video."""

  def __init__(self, min_iou: float = 0.3, max_lost: int = 8):
    self.min_iou = min_iou
    self.max_lost = max_lost
    self._tracks: list[_Track] = []
    self._next_id = 1

  def update(self, boxes: np.ndarray) -> list[int]:
    """Track ids of this frame's boxes [N, 4] (xyxy), in the order given."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    ids = [0] * len(boxes)
    matched_tracks: set[int] = set()
    if self._tracks and len(boxes):
      overlap = iou_matrix(np.stack([t.box for t in self._tracks]), boxes)
      # Stable order for ties: by IoU, then track order, then detection order.
      order = sorted(((-overlap[t, d], t, d) for t in range(len(self._tracks))
                      for d in range(len(boxes))))
      for negative_iou, t, d in order:
        if -negative_iou < self.min_iou:
          break
        if t in matched_tracks or ids[d]:
          continue
        matched_tracks.add(t)
        ids[d] = self._tracks[t].id
        self._tracks[t].box = boxes[d]
        self._tracks[t].lost = 0
    for t, track in enumerate(self._tracks):
      if t not in matched_tracks:
        track.lost += 1
    self._tracks = [t for t in self._tracks if t.lost <= self.max_lost]
    for d, box in enumerate(boxes):
      if not ids[d]:
        ids[d] = self._next_id
        self._tracks.append(_Track(id=self._next_id, box=box))
        self._next_id += 1
    return ids
