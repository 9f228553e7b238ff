"""Pose extraction over a dataset root: find the videos' frame folders, run the estimator on
every frame, track the people, write one AlphaPose-format (Halpe-136) JSON per video, resume,
and keep the report.

  ROOT/frames/<category>/<id>/000001.jpg ...   input (data_pipeline/layout/schema.py)
  OUT/<category>/<id>.json                     output; OUT = ROOT/pose unless --out is given
  OUT/extract_pose_report.json                 per video: frames, frames with a person, tracks,
                                               seconds, status; videos where nobody was ever
                                               detected ("no_person") and failures, named

Record format (what AlphaPose writes with tracking; data_pipeline.layout.reader.load_pose reads
it): {"image_id": "000001.jpg", "category_id": 1, "keypoints": [x, y, confidence] * 136 (frame
pixels), "score": mean keypoint confidence, "box": [x, y, w, h] of the detection, "idx": track}.
Per frame the `max_persons` largest detected boxes are kept (the players are usually the
largest people in a music video).

Resumable: files are written atomically (temporary name, then rename), so an existing output
JSON is complete and its video is skipped (an existing file that is not a pose list is a
failure, never overwritten); a video without a person gets no file and is remembered in the
report, so a rerun skips it too unless its frame count changed. Delete a video's output to redo it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image
import tqdm

from data_pipeline.extract_pose.keypoint_map import to_halpe
from data_pipeline.extract_pose.tracking import IoUTracker
from data_pipeline.layout import ownership, writer
from data_pipeline.layout.skeleton import HALPE_NUM_KEYPOINTS

REPORT_FILE = "extract_pose_report.json"
FAILURE_HELP = {
    "no_frames": "the frame folder holds no .jpg file",
    "unreadable_frame": "a frame does not decode (the video was skipped)",
    "bad_existing_pose": "an existing output file is not a pose list (left as it is)",
}
REPORT_WRITE_INTERVAL_S = 10.0


class ExtractError(Exception):
  """A usage error (bad root, unknown id, foreign --out) found before any work; names the path."""


class FrameError(Exception):
  """A frame that does not decode; `path` names it."""

  def __init__(self, path: pathlib.Path, reason: str):
    super().__init__(f"{path}: unreadable frame ({reason})")
    self.path = path


@dataclasses.dataclass(frozen=True)
class Video:
  """One video's frame folder."""
  category: str
  id: str
  frames: pathlib.Path
  names: tuple[str, ...]  # sorted .jpg file names


def find_videos(root: pathlib.Path, ids: Sequence[str] | None = None,
                categories: Sequence[str] | None = None) -> list[Video]:
  """Every ROOT/frames/<category>/<id>/ folder (sorted by category, id), optionally filtered."""
  frames_root = root / "frames"
  if not frames_root.is_dir():
    raise ExtractError(f"{frames_root}: no frames folder (extract frames first with "
                       "`python -m data_pipeline.ingest`)")
  present = sorted(p.name for p in frames_root.iterdir() if p.is_dir())
  if categories:
    unknown = sorted(set(categories) - set(present))
    if unknown:
      raise ExtractError(f"--categories {unknown}: no such folder under {frames_root} "
                         f"(it has {present[:10]}{' ...' if len(present) > 10 else ''})")
    present = [c for c in present if c in set(categories)]
  videos = []
  for category in present:
    for folder in sorted(p for p in (frames_root / category).iterdir() if p.is_dir()):
      if ids and folder.name not in set(ids):
        continue
      names = tuple(sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg")))
      videos.append(Video(category, folder.name, folder, names))
  if ids:
    unknown = sorted(set(ids) - {v.id for v in videos})
    if unknown:
      raise ExtractError(f"--ids {unknown}: no frame folder under {frames_root}/<category>/")
  return videos


def read_frame(path: pathlib.Path) -> np.ndarray:
  """A frame as a BGR uint8 array [H, W, 3] (rtmlib's convention); FrameError if unreadable."""
  try:
    with Image.open(path) as image:
      rgb = np.asarray(image.convert("RGB"))
  except (OSError, ValueError, Image.UnidentifiedImageError) as error:
    raise FrameError(path, str(error) or type(error).__name__) from error
  return np.ascontiguousarray(rgb[..., ::-1])


def _round(values: Iterable[float], digits: int) -> list[float]:
  return [round(float(v), digits) for v in values]


def extract_video(video: Video, estimator, *, max_persons: int = 2,
                  tracker: IoUTracker | None = None,
                  on_frame: Callable[[], None] | None = None) -> tuple[list[dict], dict]:
  """Runs the estimator on every frame; -> (AlphaPose records, stats). Raises FrameError."""
  tracker = tracker or IoUTracker()
  records: list[dict] = []
  with_person = 0
  started = time.perf_counter()
  for name in video.names:
    image = read_frame(video.frames / name)
    boxes, _ = estimator.detect(image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes):
      areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
      boxes = boxes[np.argsort(-areas, kind="stable")[:max_persons]]
      keypoints, scores = estimator.estimate(image, boxes)
      halpe = to_halpe(keypoints, scores)
      with_person += 1
      for box, track, points in zip(boxes, tracker.update(boxes), halpe):
        records.append({
            "image_id": name, "category_id": 1,
            "keypoints": [v for x, y, c in points for v in (round(float(x), 2), round(float(y), 2),
                                                              round(float(c), 4))],
            "score": round(float(points[:, 2].mean()), 4),
            "box": _round((box[0], box[1], box[2] - box[0], box[3] - box[1]), 2),
            "idx": int(track)})
    else:
      tracker.update(boxes)
    if on_frame is not None:
      on_frame()
  stats = {"category": video.category, "frames": len(video.names),
           "frames_with_person": with_person, "tracks": len({r["idx"] for r in records}),
           "seconds": round(time.perf_counter() - started, 3)}
  return records, stats


def _existing_stats(path: pathlib.Path) -> dict | None:
  """Stats of an existing output file, None when it is not a Halpe-136 record list."""
  try:
    records = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError):
    return None
  if not isinstance(records, list) or not all(
      isinstance(r, dict) and isinstance(r.get("image_id"), str) and
      isinstance(r.get("keypoints"), list) and len(r["keypoints"]) == 3 * HALPE_NUM_KEYPOINTS
      for r in records):
    return None
  return {"frames_with_person": len({r["image_id"] for r in records}),
          "tracks": len({json.dumps(r.get("idx")) for r in records if "idx" in r})}


def output_folder(root: pathlib.Path, out: pathlib.Path | None) -> pathlib.Path:
  """ROOT/pose, or --out when that is new, empty or an earlier extract_pose output."""
  default = root / "pose"
  if out is None or pathlib.Path(out).resolve() == default.resolve():
    return default
  ownership.check_writable(
      out, (REPORT_FILE,), "python -m data_pipeline.extract_pose", "--out",
      "Pass a new or empty folder (or an earlier --out of this command), or leave --out out to "
      "write ROOT/pose.")
  return pathlib.Path(out)


def _load_report(path: pathlib.Path) -> dict[str, Any]:
  try:
    previous = json.loads(path.read_text())
    return previous["videos"] if isinstance(previous.get("videos"), dict) else {}
  except (OSError, json.JSONDecodeError, AttributeError, KeyError, TypeError):
    return {}


def build_report(root: pathlib.Path, out: pathlib.Path, entries: dict[str, dict],
                 run: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
  """The report: settings, counts over every video the folder knows, this run, the lists."""
  ordered = dict(sorted(entries.items(), key=lambda item: (item[1].get("category", ""),
                                                           item[0])))
  statuses = [e.get("status") for e in ordered.values()]
  return {
      "root": str(root), "out": str(out), "settings": settings,
      "counts": {"videos": len(ordered), "written": statuses.count("written"),
                 "no_person": statuses.count("no_person"), "failed": statuses.count("failed")},
      "this_run": run,
      "no_person": [i for i, e in ordered.items() if e.get("status") == "no_person"],
      "failures": [{"id": i, "kind": e["kind"], "file": e["file"], "reason": e["reason"]}
                   for i, e in ordered.items() if e.get("status") == "failed"],
      "videos": ordered,
  }


def run(root: os.PathLike | str, make_estimator: Callable[[], Any], *,
        out: os.PathLike | str | None = None, ids: Sequence[str] | None = None,
        categories: Sequence[str] | None = None, max_persons: int = 2,
        settings: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
  """Extracts pose for every selected video of ROOT; returns the report (also written to
  OUT/extract_pose_report.json). Raises ExtractError / DatasetRootError before any work."""
  root = pathlib.Path(root)
  out_dir = output_folder(root, pathlib.Path(out) if out is not None else None)
  videos = find_videos(root, ids, categories)
  report_path = out_dir / REPORT_FILE
  entries = _load_report(report_path)
  estimator = make_estimator()
  describe = getattr(estimator, "description", None)
  settings = {"max_persons": max_persons, **(settings or {}), **(describe() if describe else {})}
  counts = {"selected": len(videos), "processed": 0, "skipped_done": 0, "failed": 0}
  started = time.perf_counter()
  last_write = [time.perf_counter()]

  def save(force: bool = False) -> dict[str, Any]:
    if not force and time.perf_counter() - last_write[0] < REPORT_WRITE_INTERVAL_S:
      return {}
    run_info = {**counts, "seconds": round(time.perf_counter() - started, 3)}
    report = build_report(root, out_dir, entries, run_info, settings)
    writer.write_json(report_path, report)
    last_write[0] = time.perf_counter()
    return report

  bar = tqdm.tqdm(total=sum(len(v.names) for v in videos), unit="frame", desc="pose",
                  disable=not progress)
  try:
    for video in videos:
      bar.set_postfix_str(f"{video.category}/{video.id}")
      target = out_dir / video.category / f"{video.id}.json"
      previous = entries.get(video.id, {})
      same = previous.get("frames") == len(video.names) and \
          previous.get("category") == video.category
      if target.is_file():
        if not (same and previous.get("status") == "written"):
          stats = _existing_stats(target)
          if stats is None:
            entries[video.id] = {"category": video.category, "frames": len(video.names),
                                 "status": "failed", "kind": "bad_existing_pose",
                                 "file": str(target), "reason": f"{target}: exists but is not an "
                                 "AlphaPose Halpe-136 list; delete it to extract again"}
            counts["failed"] += 1
            bar.update(len(video.names))
            continue
          entries[video.id] = {"category": video.category, "frames": len(video.names), **stats,
                               "seconds": None, "status": "written", "file": str(target)}
        counts["skipped_done"] += 1
        bar.update(len(video.names))
        continue
      if same and previous.get("status") == "no_person":
        counts["skipped_done"] += 1
        bar.update(len(video.names))
        continue
      counts["processed"] += 1
      if not video.names:
        entries[video.id] = {"category": video.category, "frames": 0, "status": "failed",
                             "kind": "no_frames", "file": str(video.frames),
                             "reason": f"{video.frames}: no .jpg frames"}
        counts["failed"] += 1
        save(force=True)
        continue
      done_frames = [0]

      def step():
        done_frames[0] += 1
        bar.update(1)

      try:
        records, stats = extract_video(video, estimator, max_persons=max_persons, on_frame=step)
      except FrameError as error:
        bar.update(len(video.names) - done_frames[0])
        entries[video.id] = {"category": video.category, "frames": len(video.names),
                             "status": "failed", "kind": "unreadable_frame",
                             "file": str(error.path), "reason": str(error)}
        counts["failed"] += 1
        save(force=True)
        continue
      if records:
        writer.write_text_atomic(target, json.dumps(records, separators=(",", ":")))
        entries[video.id] = {**stats, "status": "written", "file": str(target)}
        save()
      else:
        entries[video.id] = {**stats, "status": "no_person"}
        save(force=True)
  finally:
    bar.close()
    report = save(force=True)
  return report


def format_report(report: dict[str, Any]) -> str:
  """Human-readable closing summary."""
  counts, this_run = report["counts"], report["this_run"]
  lines = [f"pose extraction report for {report['root']} -> {report['out']}",
           f"  this run: {this_run['selected']} video(s) selected, {this_run['processed']} "
           f"processed, {this_run['skipped_done']} already done, {this_run['failed']} failed, "
           f"{this_run['seconds']:.1f} s"]
  for key in ("videos", "written", "no_person", "failed"):
    lines.append(f"  {key:<12}{counts[key]:>7}")
  if report["no_person"]:
    shown = ", ".join(report["no_person"][:10])
    more = f" ... and {len(report['no_person']) - 10} more" if len(report["no_person"]) > 10 \
        else ""
    lines.append(f"  nobody detected (no pose file; usable only by pose-free models): "
                 f"{shown}{more}")
  for failure in report["failures"][:10]:
    lines.append(f"  [{failure['kind']}] {failure['reason']}")
  if len(report["failures"]) > 10:
    lines.append(f"  ... and {len(report['failures']) - 10} more failures")
  lines.append(f"  full report: {pathlib.Path(report['out']) / REPORT_FILE}")
  return "\n".join(lines)
