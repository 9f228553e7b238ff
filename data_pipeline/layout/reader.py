"""Reads the on-disk dataset layout (labels.json, index CSVs, mixture CSVs, AlphaPose JSON).

Produces per-clip records (`ClipRecord`), fixed evaluation mixtures (`MixtureRecord`) and
per-clip pose tracks (`PoseTrack`, parsed once into numpy arrays). Validation of a clip
(`validate_clip`) checks file existence, wav headers, the frame-folder listing, the first JPEG
header and the pose file, then (content=True) the contents where damage would be silent:
NaN / Inf or all-zero audio and every frame decodable (layout/clip_checks.py, cached by file
size and mtime); load_pose rejects NaN / Inf keypoints. It raises `BadClipError` naming the
offending file; the input pipeline either lets it
propagate or skips and counts the clip (config.data.skip_bad_clips). The layout itself is
described in data_pipeline/layout/schema.py.

Clips without pose: an empty `pose` column of the index (ClipRecord.pose None) or a listed pose
file that does not exist. validate_clip(require_pose=True), the default, rejects them
("missing_pose"); with require_pose=False (config.data.require_pose, for models that do not read
pose) they pass with ClipInfo.has_pose False, and the pipeline gives them `no_pose_track`: an
all-zero mask, never keypoints a model could mistake for a person.
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Sequence

import numpy as np
import soundfile
from PIL import Image

from data_pipeline.layout import clip_checks
from data_pipeline.layout.schema import (INDEX_COLUMNS, LABELS_FILE, MIXTURE_COLUMNS,
                                         BadClipError, ClipInfo, ClipRecord, DatasetInfo,
                                         MixtureRecord, PoseTrack, frame_file,
                                         mixture_list_name)
from data_pipeline.layout.skeleton import HALPE_NUM_KEYPOINTS, HALPE_TO_TRIBERT, NUM_JOINTS


def read_labels(root: os.PathLike | str) -> DatasetInfo:
  """Parses ROOT/labels.json."""
  path = pathlib.Path(root) / LABELS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: labels.json not found (is data.root a dataset root?)")
  try:
    content = json.loads(path.read_text())
    classes = tuple(content["classes"])
    info = DatasetInfo(dataset=str(content["dataset"]), classes=classes,
                       sample_rate=int(content["sample_rate"]), fps=float(content["fps"]))
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
    raise ValueError(f"{path}: malformed labels.json ({error!r})") from error
  if list(classes) != sorted(classes) or len(set(classes)) != len(classes):
    raise ValueError(f"{path}: 'classes' must be a sorted list of unique names")
  return info


def _open_csv(path: pathlib.Path, columns: Sequence[str]) -> list[dict[str, str]]:
  """Rows of a CSV file whose header must contain `columns`."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: index file not found")
  with path.open(newline="") as handle:
    reader = csv.DictReader(handle)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path}: missing columns {missing} (header {reader.fieldnames})")
    return list(reader)


def read_index(root: os.PathLike | str, split: str,
               classes: Sequence[str] | None = None) -> list[ClipRecord]:
  """Parses ROOT/index/<split>.csv into ClipRecords (row = 0-based data row number)."""
  root = pathlib.Path(root)
  path = root / "index" / f"{split}.csv"
  records = []
  known = set(classes) if classes is not None else None
  for row, entry in enumerate(_open_csv(path, INDEX_COLUMNS)):
    try:
      labels = tuple(x for x in entry["labels"].split(";") if x)
      if not labels:
        raise ValueError("empty labels")
      if known is not None and not set(labels) <= known:
        raise ValueError(f"unknown labels {sorted(set(labels) - known)}")
      sources = tuple(root / s for s in entry["sources"].split(";") if s)
      records.append(ClipRecord(
          row=row, id=entry["id"], category=entry["category"], labels=labels,
          duet=bool(int(entry["duet"])), audio=root / entry["audio"], frames=root / entry["frames"],
          num_frames=int(entry["num_frames"]),
          pose=root / entry["pose"] if entry["pose"].strip() else None, sources=sources))
    except (ValueError, TypeError) as error:
      raise ValueError(f"{path}: data row {row} ({entry.get('id')!r}): {error}") from error
  ids = [r.id for r in records]
  if len(set(ids)) != len(ids):
    raise ValueError(f"{path}: duplicate clip ids")
  return records


def read_mixtures(root: os.PathLike | str, split: str, num_mix: int,
                  records: Sequence[ClipRecord]) -> list[MixtureRecord]:
  """Parses ROOT/index/<split>_mixtures_n<num_mix>.csv, mapping clip ids to index rows."""
  path = pathlib.Path(root) / "index" / f"{mixture_list_name(split, num_mix)}.csv"
  by_id = {r.id: r.row for r in records}
  mixtures = []
  for row, entry in enumerate(_open_csv(path, MIXTURE_COLUMNS)):
    ids = [x for x in entry["clips"].split(";") if x]
    if len(ids) != num_mix:
      raise ValueError(f"{path}: mixture {entry['mixture_id']!r} has {len(ids)} clips, "
                       f"expected {num_mix}")
    unknown = [x for x in ids if x not in by_id]
    if unknown:
      raise ValueError(f"{path}: mixture {entry['mixture_id']!r} names clips {unknown} that are "
                       f"not in index/{split}.csv")
    mixtures.append(MixtureRecord(row=row, mixture_id=entry["mixture_id"],
                                  clip_rows=tuple(by_id[x] for x in ids)))
  return mixtures


def _check_wav(path: pathlib.Path, sample_rate: int, min_samples: int) -> int:
  """Validates a wav header; returns its number of samples."""
  if not path.is_file():
    raise BadClipError(path, "audio file not found", "missing_audio")
  try:
    info = soundfile.info(str(path))
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise BadClipError(path, f"unreadable audio ({error})", "unreadable_audio") from error
  if info.samplerate != sample_rate:
    raise BadClipError(path, f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz",
                       "wrong_sample_rate")
  if info.channels != 1:
    raise BadClipError(path, f"{info.channels} channels, expected mono", "not_mono")
  if info.frames < min_samples:
    raise BadClipError(path, f"{info.frames} samples, shorter than the {min_samples}-sample crop",
                       "audio_too_short")
  return int(info.frames)


def has_pose(record: ClipRecord) -> bool:
  """Whether the clip's index row names a pose file that exists."""
  return record.pose is not None and record.pose.is_file()


def pose_path(record: ClipRecord) -> pathlib.Path:
  """The clip's pose file: the one its index row names, else where the layout would put it
  (ROOT/pose/<category>/<id>.json), for messages."""
  if record.pose is not None:
    return record.pose
  return record.frames.parents[2] / "pose" / record.category / f"{record.id}.json"


def no_pose_track(num_frames: int, max_persons: int = 2) -> PoseTrack:
  """The PoseTrack of a clip without pose file: every person slot masked in every frame."""
  return PoseTrack(keypoints=np.zeros((max_persons, num_frames, NUM_JOINTS, 3), np.float16),
                   mask=np.zeros((max_persons, num_frames), np.uint8),
                   frames_without_detection=num_frames, num_tracks=0)


def validate_clip(record: ClipRecord, sample_rate: int, fps: float, audio_length: int,
                  num_frames: int, min_frame_size: int = 1, *, content: bool = True,
                  cache: clip_checks.ValidationCache | None = None,
                  require_pose: bool = True) -> ClipInfo:
  """Checks one clip; raises BadClipError naming the bad file.

  content: also check contents (NaN / Inf / silent audio, every frame decodable), cached in
  `cache` by file size and mtime; False: headers and listings only. require_pose: a clip
  without pose file is bad ("missing_pose"); False: it passes with has_pose False.
  """
  num_samples = _check_wav(record.audio, sample_rate, audio_length)
  for source in record.sources:
    _check_wav(source, sample_rate, audio_length)
  if not record.frames.is_dir():
    raise BadClipError(record.frames, "frames folder not found", "missing_frames")
  if record.num_frames < num_frames:
    raise BadClipError(record.frames, f"{record.num_frames} frames, fewer than the {num_frames} "
                       "consecutive frames an example needs", "too_few_frames")
  names = {n for n in os.listdir(record.frames) if n.endswith(".jpg")}
  expected = {frame_file(i) for i in range(record.num_frames)}
  missing = sorted(expected - names)
  if missing:
    raise BadClipError(record.frames / missing[0], f"frame missing ({len(missing)} of "
                       f"{record.num_frames} listed frames absent)", "missing_frames")
  first = record.frame_path(0)
  try:
    with Image.open(first) as image:
      if image.format != "JPEG":
        raise BadClipError(first, f"not a JPEG ({image.format})", "corrupt_frame")
      width, height = image.size
  except (OSError, Image.UnidentifiedImageError) as error:
    raise BadClipError(first, f"unreadable frame ({error})", "corrupt_frame") from error
  if min(width, height) < min_frame_size:
    raise BadClipError(first, f"frame {width}x{height} smaller than {min_frame_size} pixels",
                       "frame_too_small")
  # The crop must fit where both audio and frames exist.
  usable = min(num_samples, int(record.num_frames / fps * sample_rate))
  if usable < audio_length:
    raise BadClipError(record.frames, f"frames cover {record.num_frames / fps:.2f} s, shorter "
                       f"than the {audio_length / sample_rate:.2f} s crop", "too_few_frames")
  present = has_pose(record)
  if not present and require_pose:
    reason = ("pose file not found" if record.pose is not None else
              "no pose file (the index's pose column is empty)")
    raise BadClipError(pose_path(record), reason, "missing_pose")
  if content:
    for path in (record.audio,) + tuple(record.sources):
      clip_checks.check_audio_content(path, cache)
    clip_checks.check_frames(record, cache)
  return ClipInfo(num_samples=num_samples, frame_height=height, frame_width=width,
                  has_pose=present)


def track_order(counts: dict) -> list:
  """Track ids by detected frames (`counts`), most first; ties by track id (numeric ids
  numerically), so the order is stable: load_pose's person slots."""
  return sorted(counts, key=lambda t: (-counts[t], not isinstance(t, (int, float)),
                                       t if isinstance(t, (int, float)) else 0, str(t)))


def track_key(idx) -> object:
  """A record's tracker id `idx` as a dict key (AlphaPose writes a list for merged tracks)."""
  return tuple(idx) if isinstance(idx, list) else idx


def load_pose(path: os.PathLike | str, num_frames: int, frame_width: int, frame_height: int,
              max_persons: int = 2, tracks: Sequence | None = None) -> PoseTrack:
  """Parses an AlphaPose (Halpe-136) JSON list into a PoseTrack.

  People are identified by the tracker id `idx`; the `max_persons` tracks with the most
  detected frames are kept, ordered by detection count (descending) then by track id, so the
  order is stable. Without `idx` (untracked output), person slot k holds the k-th highest-scoring
  detection of each frame. Several records of one track in one frame: the highest score wins.
  tracks: the track ids (track_key) for person slots 0, 1, ... instead (tracked output only).
  """
  path = pathlib.Path(path)
  try:
    entries = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
    raise BadClipError(path, f"unreadable pose JSON ({error})", "corrupt_pose") from error
  if not isinstance(entries, list):
    raise BadClipError(path, "pose JSON must be a list of detections", "corrupt_pose")
  # detections[(frame, person key)] = (score, keypoints [136, 3])
  detections: dict[tuple[int, object], tuple[float, np.ndarray]] = {}
  per_frame_rank: dict[int, list[tuple[float, np.ndarray]]] = {}
  tracked = None
  for number, entry in enumerate(entries):
    try:
      name = str(entry["image_id"])
      frame = int(pathlib.Path(name).stem) - 1
      keypoints = np.asarray(entry["keypoints"], np.float64)
      score = float(entry.get("score", 1.0))
    except (KeyError, TypeError, ValueError) as error:
      raise BadClipError(path, f"record {number}: malformed ({error!r})", "corrupt_pose") from error
    if keypoints.shape != (HALPE_NUM_KEYPOINTS * 3,):
      raise BadClipError(path, f"record {number}: {keypoints.size} keypoint values, expected "
                         f"{HALPE_NUM_KEYPOINTS * 3} (Halpe-136 x, y, confidence)", "corrupt_pose")
    clip_checks.check_pose_values(path, number, keypoints)
    if not 0 <= frame < num_frames:
      continue  # detections on frames beyond the index's frame count cannot be aligned
    has_track = "idx" in entry
    if tracked is None:
      tracked = has_track
    elif tracked != has_track:
      raise BadClipError(path, f"record {number}: mixes tracked and untracked records",
                         "corrupt_pose")
    points = keypoints.reshape(HALPE_NUM_KEYPOINTS, 3)
    if has_track:
      key = (frame, track_key(entry["idx"]))
      if key not in detections or detections[key][0] < score:
        detections[key] = (score, points)
    else:
      per_frame_rank.setdefault(frame, []).append((score, points))

  keypoints_out = np.zeros((max_persons, num_frames, NUM_JOINTS, 3), np.float32)
  mask = np.zeros((max_persons, num_frames), np.uint8)
  if tracked:
    counts: dict[object, int] = {}
    for _, track in detections:
      counts[track] = counts.get(track, 0) + 1
    order = track_order(counts) if tracks is None else list(tracks)[:max_persons]
    slots = {track: slot for slot, track in enumerate(order[:max_persons])}
    for (frame, track), (_, points) in detections.items():
      if track in slots:
        keypoints_out[slots[track], frame] = points[HALPE_TO_TRIBERT]
        mask[slots[track], frame] = 1
    num_tracks = len(counts)
    detected_frames = {frame for frame, _ in detections}
  else:
    if tracks is not None and per_frame_rank:
      raise BadClipError(path, "records have no tracker id `idx` (run AlphaPose with "
                         "tracking) to select tracks", "corrupt_pose")
    for frame, candidates in per_frame_rank.items():
      candidates.sort(key=lambda c: -c[0])
      for slot, (_, points) in enumerate(candidates[:max_persons]):
        keypoints_out[slot, frame] = points[HALPE_TO_TRIBERT]
        mask[slot, frame] = 1
    num_tracks = max((len(c) for c in per_frame_rank.values()), default=0)
    detected_frames = set(per_frame_rank)
  # Pixel coordinates -> [0, 1] of the frame; AlphaPose may report points slightly outside.
  keypoints_out[..., 0] = np.clip(keypoints_out[..., 0] / frame_width, 0.0, 1.0)
  keypoints_out[..., 1] = np.clip(keypoints_out[..., 1] / frame_height, 0.0, 1.0)
  keypoints_out *= mask[..., None, None]
  return PoseTrack(keypoints=keypoints_out.astype(np.float16), mask=mask,
                   frames_without_detection=num_frames - len(detected_frames),
                   num_tracks=num_tracks)


def pose_window(track: PoseTrack, center: int, window: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Pose [P, W, J, 3] and mask [P, W] (float32) of a track's W-frame window centred on frame
  `center` (window position 0 is frame center - W // 2); positions outside the clip masked."""
  num_frames = track.mask.shape[1]
  first = int(center) - window // 2  # frame at window position 0
  low, high = max(first, 0), min(first + window, num_frames)
  persons = track.mask.shape[0]
  keypoints = np.zeros((persons, window, NUM_JOINTS, 3), np.float32)
  mask = np.zeros((persons, window), np.float32)
  if high > low:
    keypoints[:, low - first:high - first] = track.keypoints[:, low:high]
    mask[:, low - first:high - first] = track.mask[:, low:high]
  return keypoints, mask
