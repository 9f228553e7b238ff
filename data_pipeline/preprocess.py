"""Real-data ingestion: downloaded MUSIC21 / MUSIC videos -> the on-disk dataset layout.

Writes the same layout as data_pipeline.synthmusic (see the spec in the project README), so one
reader (data_pipeline.dataset_index) serves both:

  ROOT/frames/<category>/<id>/000001.jpg ...  8 fps JPEG
  ROOT/audio/<category>/<id>.wav              mono 11025 Hz PCM16
  ROOT/pose/<category>/<id>.json              AlphaPose results, copied from --pose_dir
  ROOT/labels.json, ROOT/index/{train,val,test}.csv, ROOT/index/{val,test}_mixtures_n{2,3}.csv
  ROOT/preprocess_report.json                 what was processed, skipped and why

Usage:
  python -m data_pipeline.preprocess --videos ~/MUSIC/videos --out ~/data/music21 \
      --solo_json MUSIC21_solo_videos.json --duet_json MUSIC_duet_videos.json \
      --split_dir splits/ --pose_dir ~/MUSIC/alphapose --dataset music21

Pose usually comes second: run once without --pose_dir (frames and audio only; the index gets
an empty pose column, which the reader rejects), run AlphaPose (Halpe-136 full-body model, with
tracking) on each ROOT/frames/<category>/<id>/ folder, then rerun with --pose_dir: decoded videos
are skipped and only the pose files and the index are written.

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
- Nothing is ever zero-filled: a video that fails any check leaves no clip behind and is counted.
  Without --allow_missing any failure (or a missing pose) makes the run exit non-zero, after
  all other videos were processed, naming every failed file.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import csv
import dataclasses
import itertools
import json
import math
import os
import pathlib
import random
import re
import shutil
import sys
import threading
import wave
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image
import tqdm

from data_pipeline import video_io

MUSIC21_CLASSES = (
    "accordion", "acoustic_guitar", "bagpipe", "banjo", "bassoon", "cello", "clarinet", "congas",
    "drum", "electric_bass", "erhu", "flute", "guzheng", "piano", "pipa", "saxophone", "trumpet",
    "tuba", "ukulele", "violin", "xylophone")
MUSIC_CLASSES = (
    "accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute", "saxophone", "trumpet",
    "tuba", "violin", "xylophone")
CLASSES = {"music21": MUSIC21_CLASSES, "music": MUSIC_CLASSES}

SPLITS = ("train", "val", "test")
INDEX_HEADER = ("id", "category", "labels", "duet", "audio", "frames", "num_frames", "pose",
                "sources")
MIXTURE_HEADER = ("mixture_id", "clips")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi", ".flv")  # preference order
MIN_FRAME_SIDE = 224  # the models crop 224x224 frames
HALPE_KEYPOINTS = 136  # AlphaPose full-body model
MARKER_VERSION = 1

# Every failed clip lands in exactly one of these report counters.
FAILURE_KINDS = ("unlabelled", "missing_video", "unreadable", "no_video", "no_audio",
                 "too_small", "too_short", "silent_audio", "no_pose", "bad_pose")
FAILURE_HELP = {
    "unlabelled": "id listed in a split file but in no label JSON",
    "missing_video": "in the label JSON and a split file, but no video file was found",
    "unreadable": "ffmpeg cannot decode it (corrupt or truncated)",
    "no_video": "no video stream",
    "no_audio": "no audio stream",
    "too_small": f"frame short side below {MIN_FRAME_SIDE} px (pass --short_side 256)",
    "too_short": "shorter than --min_seconds",
    "silent_audio": "the audio track is digital silence",
    "no_pose": "no AlphaPose JSON in --pose_dir",
    "bad_pose": "the AlphaPose JSON is malformed",
}
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class PreprocessError(Exception):
  """Bad input or failed videos; the message names the offending files or ids."""

  def __init__(self, message: str, report: dict[str, Any] | None = None):
    super().__init__(message)
    self.report = report  # the run's report when videos failed, None for bad inputs


@dataclasses.dataclass(frozen=True)
class Clip:
  """One labelled video of the label JSON."""

  id: str
  labels: tuple[str, ...]  # sorted class names: one for a solo, two for a duet

  @property
  def duet(self) -> bool:
    """True for a duet (two players in one video)."""
    return len(self.labels) > 1

  @property
  def category(self) -> str:
    """Folder name in the layout: the class, or the two classes joined by '+'."""
    return "+".join(self.labels)


@dataclasses.dataclass(frozen=True)
class Options:
  """Decoding settings; all of them are recorded in each done marker."""

  fps: int = 8
  sample_rate: int = 11025
  short_side: int = 0
  min_seconds: float = 6.0


# ----------------------------------------------------------------------------------------------
# Label files and split files
# ----------------------------------------------------------------------------------------------


def normalise_class_name(name: str) -> str:
  """'Acoustic Guitar' / 'acoustic-guitar' -> 'acoustic_guitar'."""
  return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def parse_category(key: str, classes: Sequence[str], duet: bool,
                   source: pathlib.Path | str) -> tuple[str, ...]:
  """Class names of a label-file category key; duet keys hold two classes separated by spaces."""
  if not duet:
    name = normalise_class_name(key)
    if name not in classes:
      raise PreprocessError(f"{source}: category {key!r} is not one of the {len(classes)} "
                            f"classes of this dataset ({', '.join(classes)})")
    return (name,)
  # Spaces both separate the two players and may sit inside a name ("acoustic guitar violin"),
  # so match the longest known class name at each position.
  words = normalise_class_name(key).split("_")
  found, start = [], 0
  while start < len(words):
    for stop in range(len(words), start, -1):
      name = "_".join(words[start:stop])
      if name in classes:
        found.append(name)
        start = stop
        break
    else:
      raise PreprocessError(f"{source}: duet category {key!r}: {words[start]!r} does not start "
                            f"any class name of this dataset ({', '.join(classes)})")
  if len(found) != 2 or found[0] == found[1]:
    raise PreprocessError(f"{source}: duet category {key!r} must name two different classes, "
                          f"found {found}")
  return tuple(sorted(found))


def load_label_file(path: pathlib.Path, classes: Sequence[str], duet: bool) -> dict[str, Clip]:
  """Reads a {"videos": {category: [ids]}} label file into clips keyed by id."""
  try:
    data = json.loads(pathlib.Path(path).read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise PreprocessError(f"malformed label JSON {path}: {error}") from error
  videos = data.get("videos") if isinstance(data, dict) else None
  if not isinstance(videos, dict):
    raise PreprocessError(f"malformed label JSON {path}: expected an object with a \"videos\" "
                          "object mapping category -> list of video ids")
  clips: dict[str, Clip] = {}
  for key, ids in videos.items():
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
      raise PreprocessError(f"malformed label JSON {path}: category {key!r} must map to a "
                            "list of video id strings")
    labels = parse_category(key, classes, duet, path)
    for video_id in ids:
      video_id = video_id.strip()
      previous = clips.get(video_id)
      if previous is not None and previous.labels != labels:
        raise PreprocessError(f"{path}: video {video_id!r} is listed under two categories, "
                              f"{previous.category!r} and {'+'.join(labels)!r}")
      clips[video_id] = Clip(video_id, labels)
  return clips


def load_labels(label_files: Iterable[tuple[pathlib.Path, bool]],
                classes: Sequence[str]) -> dict[str, Clip]:
  """Merges solo and duet label files; an id labelled differently by two files is an error."""
  merged: dict[str, Clip] = {}
  origin: dict[str, pathlib.Path] = {}
  for path, duet in label_files:
    for video_id, clip in load_label_file(path, classes, duet).items():
      if video_id in merged and merged[video_id] != clip:
        raise PreprocessError(f"video {video_id!r} is {merged[video_id].category!r} in "
                              f"{origin[video_id]} but {clip.category!r} in {path}")
      merged[video_id] = clip
      origin[video_id] = path
  return merged


def read_split_file(path: pathlib.Path) -> list[str]:
  """Video ids of a split file: one per line; blank lines and '#' comments are ignored."""
  ids: list[str] = []
  for line_number, line in enumerate(pathlib.Path(path).read_text().splitlines(), start=1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    # Tolerate file names ("videos/abc.mp4") where an id is expected.
    name = line.replace("\\", "/").rsplit("/", 1)[-1]
    for extension in VIDEO_EXTENSIONS:
      if name.lower().endswith(extension):
        name = name[:-len(extension)]
    if not _ID_RE.match(name) or name in (".", ".."):
      raise PreprocessError(f"{path}:{line_number}: {line!r} is not a video id")
    if name not in ids:
      ids.append(name)
  return ids


def load_splits(split_dir: pathlib.Path, seed: int,
                val_fraction: float) -> tuple[dict[str, list[str]], dict[str, pathlib.Path]]:
  """Reads train/val/test.txt; without val.txt a seeded fraction of train becomes val."""
  split_dir = pathlib.Path(split_dir)
  files = {split: split_dir / f"{split}.txt" for split in SPLITS}
  for split in ("train", "test"):
    if not files[split].is_file():
      raise PreprocessError(f"split file {files[split]} not found (--split_dir needs train.txt "
                            "and test.txt with one video id per line; val.txt is optional)")
  splits = {split: read_split_file(files[split]) for split in ("train", "test")}
  if files["val"].is_file():
    splits["val"] = read_split_file(files["val"])
  else:
    # Carve val out of train: seeded shuffle of the sorted ids, so reruns agree.
    train = sorted(splits["train"])
    random.Random(f"{seed}-carve-val").shuffle(train)
    count = max(1, round(val_fraction * len(train))) if len(train) >= 2 else 0
    val = set(train[:count])
    splits["val"] = [i for i in splits["train"] if i in val]
    splits["train"] = [i for i in splits["train"] if i not in val]
    files["val"] = files["train"]
  owner: dict[str, str] = {}
  for split in SPLITS:
    for video_id in splits[split]:
      if video_id in owner and files[owner[video_id]] != files[split]:
        raise PreprocessError(f"video {video_id!r} is in both {files[owner[video_id]]} and "
                              f"{files[split]}")
      owner[video_id] = split
  return splits, files


# ----------------------------------------------------------------------------------------------
# Finding files
# ----------------------------------------------------------------------------------------------


def find_videos(videos_dir: pathlib.Path) -> tuple[dict[str, pathlib.Path], list[str]]:
  """Maps video id (file stem) -> path for every video file under videos_dir, nested or not."""
  found: dict[str, list[pathlib.Path]] = collections.defaultdict(list)
  for directory, _, names in os.walk(videos_dir, followlinks=True):
    for name in names:
      stem, extension = os.path.splitext(name)
      if extension.lower() in VIDEO_EXTENSIONS:
        found[stem].append(pathlib.Path(directory) / name)
  chosen, warnings = {}, []
  for stem, paths in found.items():
    paths.sort(key=lambda p: (VIDEO_EXTENSIONS.index(p.suffix.lower()), str(p)))
    chosen[stem] = paths[0]
    if len(paths) > 1:
      warnings.append(f"several files for video {stem!r}: using {paths[0]}, ignoring "
                      f"{', '.join(map(str, paths[1:]))}")
  return chosen, warnings


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


# ----------------------------------------------------------------------------------------------
# One video
# ----------------------------------------------------------------------------------------------


def _relative_paths(clip: Clip) -> dict[str, str]:
  """Layout paths of a clip, relative to ROOT."""
  return {
      "frames": f"frames/{clip.category}/{clip.id}",
      "audio": f"audio/{clip.category}/{clip.id}.wav",
      "pose": f"pose/{clip.category}/{clip.id}.json",
  }


def _write_json_atomic(path: pathlib.Path, data: Any) -> None:
  """Writes JSON through a temporary file and a rename, so readers never see half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
  temporary.write_text(json.dumps(data, indent=1))
  os.replace(temporary, path)


def _count_jpegs(frames_dir: pathlib.Path) -> int:
  """Number of NNNNNN.jpg files in a frames folder (0 if it does not exist)."""
  try:
    return sum(1 for entry in os.scandir(frames_dir) if entry.name.endswith(".jpg"))
  except FileNotFoundError:
    return 0


def _remove_outputs(root: pathlib.Path, clip: Clip) -> None:
  """Deletes whatever a previous, possibly interrupted, run left for this clip."""
  paths = _relative_paths(clip)
  shutil.rmtree(root / paths["frames"], ignore_errors=True)
  for key in ("audio", "pose"):
    (root / paths[key]).unlink(missing_ok=True)


def _marker_path(root: pathlib.Path, video_id: str) -> pathlib.Path:
  return root / ".preprocess" / "done" / f"{video_id}.json"


def _expected_marker_fields(clip: Clip, video: pathlib.Path, options: Options) -> dict[str, Any]:
  """Marker fields that must match for a finished video to be reused."""
  return {
      "version": MARKER_VERSION,
      "id": clip.id,
      "category": clip.category,
      "source_bytes": video.stat().st_size,
      **dataclasses.asdict(options),
  }


def _load_done_marker(root: pathlib.Path, clip: Clip, video: pathlib.Path,
                      options: Options) -> dict[str, Any] | None:
  """The marker of a finished video whose outputs are complete, else None."""
  path = _marker_path(root, clip.id)
  try:
    marker = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return None
  expected = _expected_marker_fields(clip, video, options)
  if any(marker.get(key) != value for key, value in expected.items()):
    return None
  paths = _relative_paths(clip)
  wav = root / paths["audio"]
  if not wav.is_file() or wav.stat().st_size != marker.get("audio_bytes"):
    return None
  if _count_jpegs(root / paths["frames"]) != marker.get("num_frames"):
    return None
  return marker


def process_video(clip: Clip, video: pathlib.Path, root: pathlib.Path,
                  options: Options) -> tuple[dict[str, Any], bool]:
  """Frames + wav of one video (or the existing ones); returns (done marker, was_skipped)."""
  if not video.is_file():
    raise video_io.VideoError("unreadable", video, "not a readable file (a broken link?)")
  marker = _load_done_marker(root, clip, video, options)
  if marker is not None:
    return marker, True
  # Drop the marker first: from here until the new marker lands the clip counts as unfinished.
  old_marker = _marker_path(root, clip.id)
  try:
    old = json.loads(old_marker.read_text())
    if old.get("category") and old["category"] != clip.category:
      _remove_outputs(root, Clip(clip.id, tuple(old["category"].split("+"))))
  except (OSError, json.JSONDecodeError):
    pass
  old_marker.unlink(missing_ok=True)
  try:
    return _decode_video(clip, video, root, options), False
  except video_io.VideoError:
    # Whatever an earlier run left for this clip must not outlive a failure now.
    _remove_outputs(root, clip)
    raise


def _decode_video(clip: Clip, video: pathlib.Path, root: pathlib.Path,
                  options: Options) -> dict[str, Any]:
  """Checks and decodes one video into place; returns its done marker."""
  info = video_io.probe(video)
  if info.video_stream is None:
    raise video_io.VideoError("no_video", video, "no video stream")
  if info.audio_stream is None:
    raise video_io.VideoError("no_audio", video, "no audio stream")
  if info.duration is not None and info.duration < options.min_seconds:
    raise video_io.VideoError("too_short", video, f"lasts {info.duration:.2f} s, less than "
                              f"--min_seconds {options.min_seconds}")
  size = video_io.scaled_size(info.width, info.height, options.short_side)
  if min(size) < MIN_FRAME_SIDE:
    raise video_io.VideoError("too_small", video, f"frames are {size[0]}x{size[1]}, short side "
                              f"below {MIN_FRAME_SIDE} px (use --short_side 256 to rescale)")

  temporary = root / ".preprocess" / "tmp" / f"{clip.id}.{os.getpid()}.{threading.get_ident()}"
  shutil.rmtree(temporary, ignore_errors=True)
  (temporary / "frames").mkdir(parents=True)
  try:
    wav = temporary / "audio.wav"
    video_io.extract(video, info, temporary / "frames", wav, options.fps, options.sample_rate,
                     size)
    num_frames = _count_jpegs(temporary / "frames")
    try:
      samples, rate = video_io.read_wav_mono16(wav)
    except (OSError, EOFError, ValueError, wave.Error) as error:
      raise video_io.VideoError("unreadable", video, f"no usable audio decoded ({error})")
    if num_frames == 0 or samples.size == 0 or rate != options.sample_rate:
      raise video_io.VideoError("unreadable", video, f"decoding gave {num_frames} frames and "
                                f"{samples.size} audio samples")
    if not (temporary / "frames" / f"{num_frames:06d}.jpg").is_file():
      raise video_io.VideoError("unreadable", video, "frame numbering has gaps")
    audio_seconds = samples.size / options.sample_rate
    video_seconds = num_frames / options.fps
    # A download cut short still opens when its index comes first (faststart mp4).
    if (info.duration is not None and
        max(audio_seconds, video_seconds) < 0.9 * info.duration - 1.0):
      raise video_io.VideoError(
          "unreadable", video, f"truncated: the container says {info.duration:.1f} s but only "
          f"{audio_seconds:.1f} s of audio and {video_seconds:.1f} s of video decode")
    if min(audio_seconds, video_seconds) < options.min_seconds:
      raise video_io.VideoError(
          "too_short", video, f"decodes to {audio_seconds:.2f} s of audio and "
          f"{video_seconds:.2f} s of video, less than --min_seconds {options.min_seconds}")
    if not np.any(samples):
      raise video_io.VideoError("silent_audio", video, "the audio track is all zeros")
    with Image.open(temporary / "frames" / "000001.jpg") as image:
      frame_size = list(image.size)

    # Move into place: frames folder and wav by rename (same filesystem), marker last.
    paths = _relative_paths(clip)
    _remove_outputs(root, clip)
    (root / paths["frames"]).parent.mkdir(parents=True, exist_ok=True)
    (root / paths["audio"]).parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary / "frames", root / paths["frames"])
    os.replace(wav, root / paths["audio"])
    marker = {
        **_expected_marker_fields(clip, video, options),
        "source": str(video),
        "source_size": [info.width, info.height],
        "frame_size": frame_size,
        "num_frames": num_frames,
        "audio_samples": int(samples.size),
        "audio_bytes": (root / paths["audio"]).stat().st_size,
        "audio_seconds": audio_seconds,
        "video_seconds": video_seconds,
    }
    _write_json_atomic(_marker_path(root, clip.id), marker)
    return marker
  finally:
    shutil.rmtree(temporary, ignore_errors=True)


def _check_pose(records: Any, path: pathlib.Path) -> None:
  """Raises bad_pose unless records look like AlphaPose Halpe-136 results."""
  if not isinstance(records, list):
    raise video_io.VideoError("bad_pose", path, "expected a JSON list of AlphaPose records")
  for number, record in enumerate(records):
    if not isinstance(record, dict) or not isinstance(record.get("image_id"), str):
      raise video_io.VideoError("bad_pose", path, f"record {number} has no image_id string")
    keypoints = record.get("keypoints")
    if not isinstance(keypoints, list) or len(keypoints) != 3 * HALPE_KEYPOINTS:
      got = len(keypoints) if isinstance(keypoints, list) else type(keypoints).__name__
      raise video_io.VideoError(
          "bad_pose", path, f"record {number}: expected {3 * HALPE_KEYPOINTS} keypoint values "
          f"(AlphaPose Halpe-136 full-body model), got {got}")


def copy_pose(clip: Clip, pose: pathlib.Path, root: pathlib.Path, marker: dict[str, Any],
              pose_on_frames: bool = False) -> list[str]:
  """Copies the AlphaPose JSON, rescaled to the stored frames unless pose_on_frames; -> warnings.

  pose_on_frames: the JSON was computed on ROOT/frames themselves, so its pixels already match.
  """
  destination = root / _relative_paths(clip)["pose"]
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
    raise video_io.VideoError("bad_pose", pose, f"not valid JSON ({error})") from error
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
      for joint in range(HALPE_KEYPOINTS):
        keypoints[3 * joint] *= scale_x
        keypoints[3 * joint + 1] *= scale_y
      box = record.get("box")
      if isinstance(box, list) and len(box) == 4:
        record["box"] = [box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y]
    temporary.write_text(json.dumps(records))
  os.replace(temporary, destination)
  _write_json_atomic(pose_marker, {"key": key, "warnings": warnings,
                                   "destination_bytes": destination.stat().st_size})
  return warnings


# ----------------------------------------------------------------------------------------------
# Index and mixture files
# ----------------------------------------------------------------------------------------------


def make_mixtures(clips: Sequence[tuple[str, frozenset[str]]], num_sources: int, count: int,
                  seed: str | int) -> list[tuple[str, ...]]:
  """Up to `count` distinct seeded random groups of clips whose label sets are pairwise disjoint."""
  rng = random.Random(seed)

  def disjoint(group: tuple[int, ...]) -> bool:
    labels = [label for index in group for label in clips[index][1]]
    return len(labels) == len(set(labels))

  n = len(clips)
  if n < num_sources:
    return []
  if math.comb(n, num_sources) <= 50_000:
    # Small pools: enumerate every valid group, then draw without replacement.
    groups = [g for g in itertools.combinations(range(n), num_sources) if disjoint(g)]
    rng.shuffle(groups)
    chosen = groups[:count]
  else:
    chosen, seen = [], set()
    for _ in range(200 * count):
      if len(chosen) == count:
        break
      group = tuple(sorted(rng.sample(range(n), num_sources)))
      if group not in seen and disjoint(group):
        seen.add(group)
        chosen.append(group)
  return [tuple(clips[index][0] for index in group) for group in chosen]


def _write_csv_atomic(path: pathlib.Path, header: Sequence[str],
                      rows: Iterable[Sequence[Any]]) -> None:
  """Writes a CSV through a temporary file and a rename."""
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f".{path.name}.tmp")
  with temporary.open("w", newline="") as handle:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
  os.replace(temporary, path)


# ----------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------


def preprocess(videos: str | os.PathLike, out: str | os.PathLike, *,
               split_dir: str | os.PathLike,
               solo_json: str | os.PathLike | None = None,
               duet_json: str | os.PathLike | None = None,
               pose_dir: str | os.PathLike | None = None,
               dataset: str = "music21", fps: int = 8, sample_rate: int = 11025,
               short_side: int = 0, min_seconds: float = 6.0, val_fraction: float = 0.1,
               pose_on_frames: bool = False, num_mixtures: int = 500,
               workers: int | None = None, seed: int = 0,
               allow_missing: bool = False, progress: bool = True) -> dict[str, Any]:
  """Builds ROOT=`out` from downloaded videos; returns the report (also in preprocess_report.json).

  Raises PreprocessError for bad inputs (before any decoding), and after processing everything
  else when any video failed and allow_missing is False.
  """
  # ---- Validate inputs before touching any video.
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
  root.mkdir(parents=True, exist_ok=True)
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

  def run_one(split: str, clip: Clip) -> tuple[str, Clip, dict[str, Any] | None, bool, Any]:
    video = video_paths[clip.id]
    try:
      marker, skipped = process_video(clip, video, root, options)
    except video_io.VideoError as error:
      return split, clip, None, False, error
    if pose_dir is None:
      return split, clip, marker, skipped, None
    pose = pose_paths.get(clip.id)
    if pose is None:
      return split, clip, marker, skipped, video_io.VideoError(
          "no_pose", pathlib.Path(pose_dir) / f"{clip.id}.json",
          f"no AlphaPose JSON for {clip.id!r} ({video}) under {pose_dir}")
    try:
      return split, clip, marker, skipped, copy_pose(clip, pose, root, marker, pose_on_frames)
    except video_io.VideoError as error:
      return split, clip, marker, skipped, error

  workers = workers or min(4, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    futures = [pool.submit(run_one, split, clip) for split, clip in jobs]
    for future in tqdm.tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                            desc="videos", unit="video", disable=not progress):
      split, clip, marker, skipped, outcome = future.result()
      if marker is not None:
        counts["skipped_done" if skipped else "processed"] += 1
      if isinstance(outcome, video_io.VideoError):
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
        paths = _relative_paths(clip)
        rows.append([clip.id, clip.category, ";".join(clip.labels), int(clip.duet),
                     paths["audio"], paths["frames"], marker["num_frames"],
                     paths["pose"] if pose_dir is not None else "",
                     ""])  # real duets have no per-player stems
      rows.sort(key=lambda row: (row[1], row[0]))
      split_rows[split] = rows
      _write_csv_atomic(root / "index" / f"{split}.csv", INDEX_HEADER, rows)
    for split in ("val", "test"):
      pool_clips = [(row[0], frozenset(row[2].split(";"))) for row in split_rows[split]]
      for num_sources in (2, 3):
        mixtures = make_mixtures(pool_clips, num_sources, num_mixtures,
                                 f"{seed}-{split}-n{num_sources}")
        name = f"{split}_mixtures_n{num_sources}"
        mixture_counts[name] = len(mixtures)
        if not mixtures:
          warnings.append(f"index/{name}.csv is empty: {split} has too few clips with "
                          f"disjoint labels for {num_sources}-source mixtures")
        _write_csv_atomic(root / "index" / f"{name}.csv", MIXTURE_HEADER,
                          # Same mixture_id form as SynthMUSIC writes.
                          [[f"{split}_n{num_sources}_{number:04d}", ";".join(ids)]
                           for number, ids in enumerate(mixtures)])
    _write_json_atomic(root / "labels.json", {"dataset": dataset, "classes": sorted(classes),
                                              "sample_rate": sample_rate, "fps": fps})
    index_written = True

  listed = sorted({i for split in SPLITS for i in splits[split]})
  report = {
      "dataset": dataset,
      "out": str(root),
      "options": {**dataclasses.asdict(options), "pose_on_frames": pose_on_frames},
      "counts": {
          "listed": len(listed),
          "processed": counts["processed"],
          "skipped_done": counts["skipped_done"],
          **{kind: len(failures[kind]) for kind in FAILURE_KINDS},
          "in_index": sum(len(rows) for rows in split_rows.values()),
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
  _write_json_atomic(root / "preprocess_report.json", report)
  if failed and not allow_missing:
    lines = [f"{failed} video(s) failed; nothing was written to {root / 'index'} "
             "(fix them, or pass --allow_missing to skip and count them):"]
    for kind in FAILURE_KINDS:
      for failure in report["failures"].get(kind, []):
        lines.append(f"  [{kind}] {failure['reason']}")
    lines.append(f"full report: {root / 'preprocess_report.json'}")
    raise PreprocessError("\n".join(lines), report)
  return report


def format_report(report: dict[str, Any], list_failures: bool = True) -> str:
  """Human-readable closing report (the first failures of each kind unless list_failures=False)."""
  counts = report["counts"]
  lines = [f"preprocess report for {report['out']} ({report['dataset']})"]
  for key in ("listed", "processed", "skipped_done", *FAILURE_KINDS, "in_index",
              "labelled_not_in_split"):
    note = f"  ({FAILURE_HELP[key]})" if key in FAILURE_HELP and counts[key] else ""
    lines.append(f"  {key:<22}{counts[key]:>7}{note}")
  lines.append("  splits: " + ", ".join(f"{k}={v}" for k, v in report["splits"].items())
               + (" (val carved from train)" if report["val_carved_from_train"] else ""))
  if report["mixtures"]:
    lines.append("  mixtures: " + ", ".join(f"{k}={v}" for k, v in report["mixtures"].items()))
  for kind, items in report["failures"].items() if list_failures else ():
    for failure in items[:10]:
      lines.append(f"  [{kind}] {failure['reason']}")
    if len(items) > 10:
      lines.append(f"  [{kind}] ... and {len(items) - 10} more")
  for warning in report["warnings"][:10]:
    lines.append(f"  warning: {warning}")
  if len(report["warnings"]) > 10:
    lines.append(f"  ... and {len(report['warnings']) - 10} more warnings")
  lines.append(f"  full report: {pathlib.Path(report['out']) / 'preprocess_report.json'}")
  return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipeline.preprocess",
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
        seed=args.seed, allow_missing=args.allow_missing, progress=not args.no_progress)
  except PreprocessError as error:
    if error.report is not None:
      # The error message below lists every failure; the table only adds the counts.
      print(format_report(error.report, list_failures=False), file=sys.stderr)
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(format_report(report))
  return 0


if __name__ == "__main__":
  sys.exit(main())
