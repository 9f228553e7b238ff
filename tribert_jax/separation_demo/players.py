"""Mode (b): the players of one real multi-player video, each a region and a pose track.

  found = players.find_players(video, num_players=2, max_persons=2, boxes=None)

From the video's AlphaPose JSON (tracked output, `idx`): the `num_players` tracks with the most
detected frames, in reader.track_order (the person-slot order of reader.load_pose). A player's
region is the median of its per-frame AlphaPose boxes ([x, y, width, height] in pixels), widened
by MARGIN on every side and made square inside the frame: the model's visual input for that
source is this crop (resized like the evaluation's central square). Its pose input is that track
alone in person slot 0 (the other slots masked), parsed by reader.load_pose, so keypoints stay in
full-frame coordinates as in training (crops are an appearance change only).

With `boxes` (one "x,y,w,h" in pixels per player, e.g. from `--boxes`), those are the regions;
each takes the pose of the JSON track whose median box overlaps it most (none: masked
throughout). No JSON, or no person detected in it, and no boxes: PlayerError naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

import numpy as np

from data_pipeline.layout import reader
from data_pipeline.layout import schema
from tribert_jax.separation_demo import media

MARGIN = 0.1  # region = median box widened by this fraction of its size on every side


class PlayerError(ValueError):
  """Mode (b) cannot find the players; the message names the file or the flag."""


@dataclasses.dataclass
class Player:
  """One player of the video."""
  name: str
  box: tuple[int, int, int, int]  # crop (offset_y, offset_x, height, width), as plans' boxes
  track: schema.PoseTrack  # [P, F, J, 3]: this person in slot 0, other slots masked
  origin: str  # where the region came from, for the page


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
  """"x,y,w,h;x,y,w,h" -> boxes in pixels; ValueError naming the bad one."""
  boxes = []
  for part in filter(None, (p.strip() for p in text.split(";"))):
    try:
      x, y, w, h = (float(v) for v in part.split(","))
    except ValueError as error:
      raise PlayerError(f"--boxes: {part!r} is not x,y,w,h (pixels)") from error
    if w <= 0 or h <= 0:
      raise PlayerError(f"--boxes: {part!r} has no area")
    boxes.append((x, y, w, h))
  return boxes


def track_boxes(path, num_frames: int) -> dict[object, np.ndarray]:
  """Per tracked person (reader.track_key), its boxes [frames detected, 4] (x, y, w, h) in the
  frames of the clip (the highest-scoring record per frame); {} for untracked output."""
  try:
    records = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
    raise PlayerError(f"{path}: unreadable pose JSON ({error})") from error
  if not isinstance(records, list):
    raise PlayerError(f"{path}: pose JSON must be a list of AlphaPose records")
  best: dict[tuple[int, object], tuple[float, list]] = {}
  for number, record in enumerate(records):
    try:
      if "idx" not in record or "box" not in record:
        continue
      frame = int(pathlib.Path(str(record["image_id"])).stem) - 1  # as reader.load_pose
      box = [float(v) for v in record["box"]]
      score = float(record.get("score", 1.0))
    except (KeyError, TypeError, ValueError) as error:
      raise PlayerError(f"{path}: record {number}: malformed ({error!r})") from error
    if len(box) != 4 or not 0 <= frame < num_frames or not np.all(np.isfinite(box)):
      continue
    key = (frame, reader.track_key(record["idx"]))
    if key not in best or best[key][0] < score:
      best[key] = (score, box)
  out: dict[object, list] = {}
  for (_, track), (_, box) in sorted(best.items(), key=lambda item: item[0][0]):
    out.setdefault(track, []).append(box)
  return {track: np.asarray(boxes, np.float64) for track, boxes in out.items()}


def square_region(box, width: int, height: int) -> tuple[int, int, int, int]:
  """(offset_y, offset_x, side, side): box (x, y, w, h) widened by MARGIN, made square around
  its centre and shifted / shrunk to fit the frame."""
  x, y, w, h = box
  side = max(w, h) * (1.0 + 2.0 * MARGIN)
  side = int(round(min(side, width, height)))
  side = max(side, 1)
  cx, cy = x + w / 2.0, y + h / 2.0
  left = int(round(min(max(cx - side / 2.0, 0.0), width - side)))
  top = int(round(min(max(cy - side / 2.0, 0.0), height - side)))
  return top, left, side, side


def _iou(a, b) -> float:
  """Intersection over union of two (x, y, w, h) boxes."""
  ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = a[2] * a[3] + b[2] * b[3] - inter
  return inter / union if union > 0 else 0.0


def _track(video: media.Video, track, max_persons: int) -> schema.PoseTrack:
  """The pose of one tracked person in slot 0 (reader.load_pose), or all masked (None)."""
  if track is None or video.pose is None:
    return reader.no_pose_track(video.num_frames, max_persons)
  try:
    return reader.load_pose(video.pose, video.num_frames, video.frame_width, video.frame_height,
                            max_persons, tracks=[track])
  except schema.BadClipError as error:
    raise PlayerError(str(error)) from error


def find_players(video: media.Video, num_players: int, max_persons: int,
                 boxes: Sequence[tuple[float, float, float, float]] | None = None
                 ) -> list[Player]:
  """The players of `video` (see the module docstring)."""
  tracks = track_boxes(video.pose, video.num_frames) if video.pose is not None else {}
  counts = {track: len(b) for track, b in tracks.items()}
  order = reader.track_order(counts)
  medians = {track: np.median(tracks[track], axis=0) for track in order}
  width, height = video.frame_width, video.frame_height
  players = []
  if boxes:
    for k, box in enumerate(boxes):
      overlaps = {track: _iou(box, medians[track]) for track in order}
      track = max(overlaps, key=overlaps.get) if overlaps else None
      if track is not None and overlaps[track] <= 0.0:
        track = None
      origin = (f"--boxes {','.join(f'{v:g}' for v in box)}" +
                (f", pose track {track}" if track is not None else ", no pose"))
      players.append(Player(name=f"player_{k + 1}", box=square_region(box, width, height),
                            track=_track(video, track, max_persons), origin=origin))
    return players
  if video.pose is None:
    raise PlayerError(f"{video.path}: no AlphaPose JSON for mode (b) (pass --pose, or give the "
                      "players' regions with --boxes)")
  if not order:
    raise PlayerError(f"{video.pose}: no person detected (no tracked record with a box); give "
                      "the players' regions with --boxes x,y,w,h;x,y,w,h")
  if len(order) < num_players:
    raise PlayerError(f"{video.pose}: {len(order)} tracked person(s) detected, --num_players "
                      f"{num_players} asked; lower --num_players or pass --boxes")
  for k, track in enumerate(order[:num_players]):
    box = tuple(float(v) for v in medians[track])
    players.append(Player(
        name=f"player_{k + 1}", box=square_region(box, width, height),
        track=_track(video, track, max_persons),
        origin=f"pose track {track} ({counts[track]} of {video.num_frames} frames detected)"))
  return players
