"""Ingestion of AlphaPose results: find each video's Halpe-136 JSON, check it, and copy it into
ROOT/pose (rescaled to the stored frames when --short_side changed their size)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import threading
from typing import Any

from data_pipeline.ingest.decode import VideoError
from data_pipeline.ingest.labels import Clip
from data_pipeline.layout import schema, writer
from data_pipeline.layout.skeleton import HALPE_NUM_KEYPOINTS


def find_poses(pose_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Maps video id -> AlphaPose JSON: <id>.json anywhere below, or <id>/alphapose-results.json."""
  found: dict[str, pathlib.Path] = {}
  for directory, _, names in os.walk(pose_dir, followlinks=True):
    for name in sorted(names):
      path = pathlib.Path(directory) / name
      if name == "alphapose-results.json":
        found.setdefault(path.parent.name, path)
      elif name.endswith(".json"):
        found.setdefault(name[:-len(".json")], path)
  return found


def _check_pose(records: Any, path: pathlib.Path) -> None:
  """Raises bad_pose unless records look like AlphaPose Halpe-136 results."""
  if not isinstance(records, list):
    raise VideoError("bad_pose", path, "expected a JSON list of AlphaPose records")
  for number, record in enumerate(records):
    if not isinstance(record, dict) or not isinstance(record.get("image_id"), str):
      raise VideoError("bad_pose", path, f"record {number} has no image_id string")
    keypoints = record.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) != 3 * HALPE_NUM_KEYPOINTS:
      got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
      raise VideoError(
          "bad_pose", path, f"record {number}: expected {3 * HALPE_NUM_KEYPOINTS} keypoint values "
          f"(AlphaPose Halpe-136 full-body model), got {got}")


def copy_pose(clip: Clip, pose: pathlib.Path, root: pathlib.Path, marker: dict[str, Any],
              pose_on_frames: bool = False) -> list[str]:
  """Copies the AlphaPose JSON, rescaled to the stored frames unless pose_on_frames; -> warnings.

  pose_on_frames: the JSON was computed on ROOT/frames themselves, so its pixels already match.
  """
  destination = root / schema.clip_paths(clip.category, clip.id)["pose"]
  # Parsing a long video's AlphaPose JSON takes a while: skip it when nothing changed.
  stat = pose.stat()
  key = {"source": str(pose), "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
         "frame_size": marker["frame_size"], "source_size": marker["source_size"],
         "num_frames": marker["num_frames"], "pose_on_frames": pose_on_frames}
  pose_marker = root / ".preprocess" / "pose" / f"{clip.id}.json"
  try:
    previous = json.loads(pose_marker.read_text())
    if (previous["key"] == key and destination.is_file() and
        destination.stat().st_size == previous["destination_bytes"]):
      return previous["warnings"]
  except (OSError, json.JSONDecodeError, KeyError, TypeError):
    pass
  pose_marker.unlink(missing_ok=True)

  try:
    records = json.loads(pose.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise VideoError("bad_pose", pose, f"not valid JSON ({error})") from error
  _check_pose(records, pose)
  warnings = []
  frame_numbers = [int(m.group(1)) for r in records
                   if (m := re.match(r"^(\d+)\.\w+$", r["image_id"]))]
  # AlphaPose run on frames extracted some other way can number them differently.
  if frame_numbers and max(frame_numbers) > marker["num_frames"] + marker["fps"]:
    warnings.append(f"{pose}: pose refers to frame {max(frame_numbers)} but {clip.id} has "
                    f"{marker['num_frames']} frames at {marker['fps']} fps")
  destination.parent.mkdir(parents=True, exist_ok=True)
  temporary = destination.with_name(f".{destination.name}.{threading.get_ident()}.tmp")
  (scale_x, scale_y) = (marker["frame_size"][0] / marker["source_size"][0],
                        marker["frame_size"][1] / marker["source_size"][1])
  if pose_on_frames or (scale_x == 1.0 and scale_y == 1.0):
    shutil.copyfile(pose, temporary)  # as-is, byte for byte
  else:
    # Frames were rescaled (--short_side): keypoints and boxes are in source-video pixels.
    for record in records:
      keypoints = record["keypoints"]
      for joint in range(HALPE_NUM_KEYPOINTS):
        keypoints[3 * joint] *= scale_x
        keypoints[3 * joint + 1] *= scale_y
      box = record.get("box")
      if isinstance(box, list) and len(box) == 4:
        record["box"] = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
    temporary.write_text(json.dumps(records))
  os.replace(temporary, destination)
  writer.write_json(pose_marker, {"key": key, "warnings": warnings,
                                   "destination_bytes": destination.stat().st_size})
  return warnings
