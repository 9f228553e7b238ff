"""Ingestion inputs: the MUSIC label JSON files (category -> video ids) and the split files."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import re
from typing import Any, Iterable, Sequence

from data_pipeline.layout.schema import DATASET_CLASSES, SPLITS

# The real datasets ingestion accepts (`--dataset`) and their classes.
CLASSES = {name: DATASET_CLASSES[name] for name in ("music21", "music")}
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi", ".flv")  # preference order
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
