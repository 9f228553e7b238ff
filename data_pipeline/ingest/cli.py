"""Real-data ingestion: downloaded MUSIC21 / MUSIC videos -> the on-disk dataset layout.

Writes the same layout as data_pipeline.synthmusic (data_pipeline/layout/schema.py), so one
reader (data_pipeline.layout.reader) serves both:

  ROOT/frames/<category>/<id>/000001.jpg ...  8 fps JPEG
  ROOT/audio/<category>/<id>.wav              mono 11025 Hz PCM16
  ROOT/pose/<category>/<id>.json              AlphaPose results, copied from --pose_dir
  ROOT/labels.json, ROOT/index/{train,val,test}.csv, ROOT/index/{val,test}_mixtures_n{2,3}.csv
  ROOT/preprocess_report.json                 what was processed, skipped and why

Usage:
  python -m data_pipeline.ingest --videos ~/MUSIC/videos --out ~/data/music21 \
      --solo_json MUSIC21_solo_videos.json --duet_json MUSIC_duet_videos.json \
      --split_dir splits/ --pose_dir ~/MUSIC/alphapose --dataset music21

Pose usually comes second: run once without --pose_dir (frames and audio only; the index gets
an empty pose column, which the reader rejects unless config.data.require_pose=False), run
AlphaPose (Halpe-136 full-body model, with tracking) on each ROOT/frames/<category>/<id>/ folder,
then rerun with --pose_dir: decoded videos are skipped and only the pose files and the index are
written. A video without AlphaPose JSON in --pose_dir is a `no_pose` failure (left out with
--allow_missing); --keep_without_pose keeps it in the index with an empty pose column instead
(for models that do not read pose: config.data.require_pose=False), counted as `without_pose`.

Choices worth knowing:
- Frames keep the source resolution (--short_side 0, the default) so AlphaPose pixel coordinates
  computed on the original video (or on ROOT/frames) stay valid as they are; videos whose short
  side is below 224 px are rejected (`too_small`) unless --short_side N (N >= 224) rescales every
  video. Then the pose keypoints and boxes, taken to be in source-video pixels, are rescaled by
  the same factors; pass --pose_on_frames when AlphaPose ran on the rescaled ROOT/frames instead
  (copied as they are).
- Real duets have no per-player stems: their `sources` column is empty and `duet` is 1. They can
  serve as one component of a mixture (the whole duet is that component's ground truth) but
  cannot be scored per player.
- If split_dir has no val.txt, a seeded `--val_fraction` of the train ids becomes val.
- Resumable: each finished video gets a marker in ROOT/.preprocess/done/<id>.json, written after
  its frames and wav were moved into place from a temporary folder; a rerun skips videos whose
  marker and outputs agree and redoes the rest. Do not run two jobs on one ROOT at once.
- --out must be new, empty or the --out of an earlier ingest run (it holds .preprocess/); any
  other folder is an error naming it, and nothing there is changed.
- Nothing is ever zero-filled: a video that fails any check leaves no clip behind and is counted.
  Without --allow_missing any failure (or a missing pose) makes the run exit non-zero, after
  all other videos were processed, naming every failed file.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import os
import pathlib
import shutil
import sys
from typing import Any, Sequence

import tqdm

from data_pipeline.ingest.decode import MIN_FRAME_SIDE, Options, VideoError, find_videos
from data_pipeline.ingest.decode import process_video
from data_pipeline.ingest.labels import CLASSES, Clip, PreprocessError, load_labels, load_splits
from data_pipeline.ingest.pose_import import copy_pose, find_poses
from data_pipeline.ingest.report import FAILURE_KINDS, format_report
from data_pipeline.layout import ownership, schema, writer
from data_pipeline.layout.schema import SPLITS


def preprocess(videos: str | os.PathLike, out: str | os.PathLike, *,
               split_dir: str | os.PathLike,
               solo_json: str | os.PathLike | None = None,
               duet_json: str | os.PathLike | None = None,
               pose_dir: str | os.PathLike | None = None,
               dataset: str = "music21", fps: int = 8, sample_rate: int = 11025,
               short_side: int = 0, min_seconds: float = 6.0, val_fraction: float = 0.1,
               pose_on_frames: bool = False, num_mixtures: int = 500,
               workers: int | None = None, seed: int = 0,
               allow_missing: bool = False, keep_without_pose: bool = False,
               progress: bool = True) -> dict[str, Any]:
  """Builds ROOT=`out` from downloaded videos; returns the report (also in preprocess_report.json).

  Raises PreprocessError for bad inputs (before any decoding), and after processing everything
  else when any video failed and allow_missing is False. keep_without_pose: a video without
  AlphaPose JSON in pose_dir stays in the index with an empty pose column (not a failure).
  """
  # ---- Validate inputs before touching any video.
  # Only a new / empty folder or an earlier ingest run's (its .preprocess/ folder) is written.
  ownership.check_writable(
      out, (".preprocess", "preprocess_report.json"), "python -m data_pipeline.ingest", "--out",
      "Pass --out a new or empty folder, or the --out of an earlier ingest run to resume it.")
  if dataset not in CLASSES:
    raise PreprocessError(f"--dataset must be one of {sorted(CLASSES)}, got {dataset!r}")
  if short_side and short_side < MIN_FRAME_SIDE:
    raise PreprocessError(f"--short_side must be 0 (keep) or >= {MIN_FRAME_SIDE}")
  if solo_json is None and duet_json is None:
    raise PreprocessError("give at least one of --solo_json and --duet_json")
  videos_dir = pathlib.Path(videos)
  if not videos_dir.is_dir():
    raise PreprocessError(f"--videos {videos_dir} is not a directory")
  if pose_dir is not None and not pathlib.Path(pose_dir).is_dir():
    raise PreprocessError(f"--pose_dir {pose_dir} is not a directory")
  classes = CLASSES[dataset]
  label_files = [(pathlib.Path(p), duet) for p, duet in ((solo_json, False), (duet_json, True))
                 if p is not None]
  for path, _ in label_files:
    if not path.is_file():
      raise PreprocessError(f"label file {path} not found")
  labels = load_labels(label_files, classes)
  splits, split_files = load_splits(pathlib.Path(split_dir), seed, val_fraction)
  options = Options(fps=fps, sample_rate=sample_rate, short_side=short_side,
                    min_seconds=min_seconds)
  root = pathlib.Path(out)
  (root / ".preprocess").mkdir(parents=True, exist_ok=True)  # marks the root as ingest's
  shutil.rmtree(root / ".preprocess" / "tmp", ignore_errors=True)  # leftovers of a killed run

  failures: dict[str, list[dict[str, str]]] = {kind: [] for kind in FAILURE_KINDS}
  warnings: list[str] = []
  unlabelled = [(split, i) for split in SPLITS for i in splits[split] if i not in labels]
  for split, video_id in unlabelled:
    failures["unlabelled"].append({"id": video_id, "file": str(split_files[split]),
                                   "reason": f"{video_id!r} listed in {split_files[split]} is "
                                             "in no label JSON"})
  if unlabelled and not allow_missing:
    names = "; ".join(f["reason"] for f in failures["unlabelled"][:20])
    raise PreprocessError(f"{len(unlabelled)} split id(s) have no label: {names}"
                          + (" ..." if len(unlabelled) > 20 else "")
                          + " (fix the split or label files, or pass --allow_missing)")

  video_paths, find_warnings = find_videos(videos_dir)
  warnings.extend(find_warnings)
  pose_paths = find_poses(pathlib.Path(pose_dir)) if pose_dir is not None else {}
  if pose_dir is None:
    warnings.append("no --pose_dir: the index has an empty pose column; run AlphaPose on "
                    f"{root / 'frames'} and rerun with --pose_dir")

  # ---- Decode every listed, labelled video.
  jobs = [(split, labels[i]) for split in SPLITS for i in splits[split] if i in labels]
  for split, clip in jobs:
    if clip.id not in video_paths:
      failures["missing_video"].append({"id": clip.id, "file": str(videos_dir),
                                        "reason": f"no video file for {clip.id!r} "
                                                  f"({clip.category}) under {videos_dir}"})
  jobs = [(split, clip) for split, clip in jobs if clip.id in video_paths]
  counts = collections.Counter()
  done: dict[str, tuple[str, Clip, dict[str, Any]]] = {}
  without_pose: set[str] = set()  # kept in the index without pose file (keep_without_pose)

  def run_one(split: str, clip: Clip) -> tuple[str, Clip, dict[str, Any] | None, bool, Any]:
    video = video_paths[clip.id]
    try:
      marker, skipped = process_video(clip, video, root, options)
    except VideoError as error:
      return split, clip, None, False, error
    if pose_dir is None:
      return split, clip, marker, skipped, None
    pose = pose_paths.get(clip.id)
    if pose is None:
      return split, clip, marker, skipped, VideoError(
          "no_pose", pathlib.Path(pose_dir) / f"{clip.id}.json",
          f"no AlphaPose JSON for {clip.id!r} ({video}) under {pose_dir}")
    try:
      return split, clip, marker, skipped, copy_pose(clip, pose, root, marker, pose_on_frames)
    except VideoError as error:
      return split, clip, marker, skipped, error

  workers = workers or min(4, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(run_one, split, clip) for split, clip in jobs]
    for future in tqdm.tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                            desc="videos", unit="video", disable=not progress):
      split, clip, marker, skipped, outcome = future.result()
      if marker is not None:
        counts["skipped_done" if skipped else "processed"] += 1
      if (isinstance(outcome, VideoError) and outcome.kind == "no_pose" and keep_without_pose):
        without_pose.add(clip.id)  # kept, with an empty pose column
        outcome = None
      if isinstance(outcome, VideoError):
        failures[outcome.kind].append({"id": clip.id, "file": outcome.path,
                                       "reason": str(outcome)})
        continue
      warnings.extend(outcome or [])
      done[clip.id] = (split, clip, marker)
      if abs(marker["audio_seconds"] - marker["video_seconds"]) > 1.0:
        warnings.append(f"{marker['source']}: audio lasts {marker['audio_seconds']:.1f} s but "
                        f"video {marker['video_seconds']:.1f} s")

  shutil.rmtree(root / ".preprocess" / "tmp", ignore_errors=True)

  # ---- Index, labels and mixtures (only when nothing failed, or failures are allowed).
  failed = sum(len(v) for v in failures.values())
  index_written = False
  split_rows: dict[str, list[list[Any]]] = {}
  mixture_counts: dict[str, int] = {}
  if not failed or allow_missing:
    for split in SPLITS:
      rows = []
      for video_id in splits[split]:
        if video_id not in done:
          continue
        _, clip, marker = done[video_id]
        paths = schema.clip_paths(clip.category, clip.id)
        rows.append([clip.id, clip.category, ";".join(clip.labels), int(clip.duet),
                     paths["audio"], paths["frames"], marker["num_frames"],
                     paths["pose"] if pose_dir is not None and video_id not in without_pose
                     else "",
                     ""])  # real duets have no per-player stems
      rows.sort(key=lambda row: (row[1], row[0]))
      split_rows[split] = rows
      writer.write_index(root, split, rows)
    for split in schema.EVAL_SPLITS:
      pool_clips = [(row[0], frozenset(row[2].split(";"))) for row in split_rows[split]]
      for num_sources in schema.MIXTURE_SIZES:
        mixtures = writer.make_mixtures(pool_clips, num_sources, num_mixtures,
                                        f"{seed}-{split}-n{num_sources}")
        name = schema.mixture_list_name(split, num_sources)
        mixture_counts[name] = len(mixtures)
        if not mixtures:
          warnings.append(f"index/{name}.csv is empty: {split} has too few clips with "
                          f"disjoint labels for {num_sources}-source mixtures")
        writer.write_mixture_list(root, split, num_sources, mixtures)
    writer.write_labels(root, dataset, classes, sample_rate, fps)
    index_written = True

  listed = sorted({i for split in SPLITS for i in splits[split]})
  report = {
      "dataset": dataset,
      "out": str(root),
      "options": {**dataclasses.asdict(options), "pose_on_frames": pose_on_frames,
                  "keep_without_pose": keep_without_pose},
      "counts": {
          "listed": len(listed),
          "processed": counts["processed"],
          "skipped_done": counts["skipped_done"],
          **{kind: len(failures[kind]) for kind in FAILURE_KINDS},
          "in_index": sum(len(rows) for rows in split_rows.values()),
          # rows with an empty pose column (no --pose_dir, or --keep_without_pose)
          "without_pose": sum(1 for rows in split_rows.values() for row in rows if not row[7]),
          "labelled_not_in_split": len(set(labels) - set(listed)),
      },
      "splits": {split: len(split_rows.get(split, [])) for split in SPLITS},
      "val_carved_from_train": split_files["val"] == split_files["train"],
      "mixtures": mixture_counts,
      "index_written": index_written,
      "failures": {kind: sorted(items, key=lambda f: f["id"])
                   for kind, items in failures.items() if items},
      "warnings": sorted(warnings),
  }
  writer.write_json(root / "preprocess_report.json", report)
  if failed and not allow_missing:
    lines = [f"{failed} video(s) failed; nothing was written to {root / 'index'} "
             "(fix them, or pass --allow_missing to skip and count them):"]
    for kind in FAILURE_KINDS:
      for failure in report["failures"].get(kind, []):
        lines.append(f"  [{kind}] {failure['reason']}")
    lines.append(f"full report: {root / 'preprocess_report.json'}")
    raise PreprocessError("\n".join(lines), report)
  return report


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipeline.ingest",
      description="Turn downloaded MUSIC21/MUSIC videos into the tribert-jax dataset layout.")
  parser.add_argument("--videos", required=True,
                      help="folder of downloaded videos, <youtube_id>.mp4 (or .webm/.mkv...), "
                           "nested folders allowed")
  parser.add_argument("--out", required=True, help="dataset root to write (ROOT)")
  parser.add_argument("--solo_json", help="e.g. MUSIC21_solo_videos.json / MUSIC_solo_videos.json")
  parser.add_argument("--duet_json", help="e.g. MUSIC_duet_videos.json")
  parser.add_argument("--split_dir", required=True,
                      help="folder with train.txt, test.txt and optionally val.txt (one id a line)")
  parser.add_argument("--pose_dir", help="AlphaPose results: <id>.json (or "
                      "<id>/alphapose-results.json), Halpe-136, run on 8 fps frames")
  parser.add_argument("--dataset", choices=sorted(CLASSES), default="music21")
  parser.add_argument("--fps", type=int, default=8)
  parser.add_argument("--sample_rate", type=int, default=11025)
  parser.add_argument("--short_side", type=int, default=0,
                      help="rescale frames so the short side is this many pixels (>= 224); "
                           "0 keeps the source resolution")
  parser.add_argument("--pose_on_frames", action="store_true",
                      help="with --short_side: AlphaPose ran on the rescaled ROOT/frames, so copy "
                           "its pixel coordinates unchanged (default: rescale from source pixels)")
  parser.add_argument("--min_seconds", type=float, default=6.0,
                      help="shorter videos are skipped as too_short (training crops 65535 "
                           "samples = 5.94 s)")
  parser.add_argument("--val_fraction", type=float, default=0.1,
                      help="share of train ids moved to val when split_dir has no val.txt")
  parser.add_argument("--num_mixtures", type=int, default=500,
                      help="evaluation mixtures per split and source count (fewer if the split "
                           "is too small)")
  parser.add_argument("--workers", type=int, default=None, help="parallel ffmpeg jobs")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--allow_missing", action="store_true",
                      help="skip and count failed or missing videos instead of failing")
  parser.add_argument("--keep_without_pose", action="store_true",
                      help="keep videos that have no AlphaPose JSON in --pose_dir in the index, "
                           "with an empty pose column (usable with config.data.require_pose="
                           "False by models that do not read pose), instead of failing them")
  parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the process exit status."""
  args = _parse_args(argv)
  try:
    report = preprocess(
        args.videos, args.out, split_dir=args.split_dir, solo_json=args.solo_json,
        duet_json=args.duet_json, pose_dir=args.pose_dir, dataset=args.dataset, fps=args.fps,
        sample_rate=args.sample_rate, short_side=args.short_side, min_seconds=args.min_seconds,
        pose_on_frames=args.pose_on_frames,
        val_fraction=args.val_fraction, num_mixtures=args.num_mixtures, workers=args.workers,
        seed=args.seed, allow_missing=args.allow_missing,
        keep_without_pose=args.keep_without_pose, progress=not args.no_progress)
  except ownership.DatasetRootError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  except PreprocessError as error:
    if error.report is not None:
      # The error message below lists every failure; the table only adds the counts.
      print(format_report(error.report, list_failures=False), file=sys.stderr)
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(format_report(report))
  return 0
