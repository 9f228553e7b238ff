"""The on-disk layout contract shared by every writer (SynthMUSIC, ingestion, class subsets)
and the reader: splits, CSV columns, file names, class lists and the parsed records.

  ROOT/labels.json                           LABELS_FIELDS: dataset, classes (sorted), sample_rate,
                                             fps
  ROOT/index/<split>.csv                     INDEX_COLUMNS, one row per clip
  ROOT/index/<split>_mixtures_n<N>.csv       MIXTURE_COLUMNS: fixed evaluation mixtures
  ROOT/frames/<category>/<id>/000001.jpg ... 8 fps JPEG, file k (1-based) shows time (k - 1) / fps
  ROOT/audio/<category>/<id>.wav             mono 11025 Hz PCM16
  ROOT/audio_sources/<category>/<id>/<k>_<class>.wav   per-player stems of synthetic duets
  ROOT/pose/<category>/<id>.json             AlphaPose (Halpe-136) results
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")  # the splits with fixed mixture lists
MIXTURE_SIZES = (2, 3)  # N of the fixed mixture lists
INDEX_COLUMNS = ("id", "category", "labels", "duet", "audio", "frames", "num_frames", "pose",
                 "sources")
MIXTURE_COLUMNS = ("mixture_id", "clips")
LABELS_FILE = "labels.json"
LABELS_FIELDS = ("dataset", "classes", "sample_rate", "fps")
MEDIA_FOLDERS = ("frames", "audio", "audio_sources", "pose")

MUSIC21_CLASSES = (
    "accordion", "acoustic_guitar", "bagpipe", "banjo", "bassoon", "cello", "clarinet", "congas",
    "drum", "electric_bass", "erhu", "flute", "guzheng", "piano", "pipa", "saxophone", "trumpet",
    "tuba", "ukulele", "violin", "xylophone")
MUSIC_CLASSES = (
    "accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute", "saxophone", "trumpet",
    "tuba", "violin", "xylophone")
# Frame normalisation of the batch contract (frames = (x / 255 - mean) / std), as plain tuples
# so that readers of batches (tribert_jax monitoring) need not import TensorFlow.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# labels.json "dataset" -> its classes (SynthMUSIC imitates MUSIC21's 21 instruments).
DATASET_CLASSES = {"synthmusic": MUSIC21_CLASSES, "music21": MUSIC21_CLASSES,
                   "music": MUSIC_CLASSES}


def clip_paths(category: str, clip_id: str) -> dict[str, str]:
  """Layout paths (relative to ROOT) of a clip's audio, frame folder and pose file."""
  return {
      "audio": f"audio/{category}/{clip_id}.wav",
      "frames": f"frames/{category}/{clip_id}",
      "pose": f"pose/{category}/{clip_id}.json",
  }


def source_paths(category: str, clip_id: str, classes: Sequence[str]) -> str:
  """The `sources` column: ';'-joined stem paths of a synthetic duet ('' for one player)."""
  if len(classes) < 2:
    return ""
  return ";".join(f"audio_sources/{category}/{clip_id}/{k}_{c}.wav"
                  for k, c in enumerate(classes))


def frame_file(index: int) -> str:
  """File name of the 0-based frame `index` (files are numbered from 000001)."""
  return f"{index + 1:06d}.jpg"


def mixture_list_name(split: str, num_mix: int) -> str:
  """Stem of a fixed mixture list, e.g. val_mixtures_n2."""
  return f"{split}_mixtures_n{num_mix}"


def mixture_id(split: str, num_mix: int, number: int) -> str:
  """The mixture_id column of row `number` of a mixture list."""
  return f"{split}_n{num_mix}_{number:04d}"


MIXTURE_LISTS = tuple(mixture_list_name(s, n) for s in EVAL_SPLITS for n in MIXTURE_SIZES)


class BadClipError(ValueError):
  """A clip whose files are missing, unreadable or inconsistent; `path` names the file."""

  def __init__(self, path: os.PathLike | str, reason: str, kind: str):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason
    self.kind = kind  # short category used by the skip counters, e.g. "audio_too_short"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Contents of labels.json."""
  dataset: str
  classes: tuple[str, ...]
  sample_rate: int
  fps: float


@dataclasses.dataclass(frozen=True)
class ClipRecord:
  """One row of index/<split>.csv with paths resolved against the dataset root."""
  row: int
  id: str
  category: str
  labels: tuple[str, ...]
  duet: bool
  audio: pathlib.Path
  frames: pathlib.Path
  num_frames: int
  pose: pathlib.Path | None  # None: the index's pose column is empty (no AlphaPose file)
  sources: tuple[pathlib.Path, ...]

  def frame_path(self, index: int) -> pathlib.Path:
    """Path of the 0-based frame `index` (files are numbered from 000001)."""
    return self.frames / frame_file(index)


@dataclasses.dataclass(frozen=True)
class MixtureRecord:
  """One row of index/<split>_mixtures_n<N>.csv: clip rows into the split's index."""
  row: int
  mixture_id: str
  clip_rows: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """What validation learnt about a clip: audio length, frame size, whether it has pose."""
  num_samples: int
  frame_height: int
  frame_width: int
  has_pose: bool = True  # False only for a clip without pose file under require_pose=False


@dataclasses.dataclass
class PoseTrack:
  """Pose of up to `max_persons` tracked people over all frames of a clip.

  keypoints [P, F, 68, 3] float16 (x / width, y / height clipped to [0, 1], confidence);
  mask [P, F] uint8 (1 where that person was detected in that frame); zeros where mask == 0.
  """
  keypoints: np.ndarray
  mask: np.ndarray
  frames_without_detection: int  # frames where nobody at all was detected
  num_tracks: int  # distinct tracks in the file before keeping the longest `max_persons`


def multi_hot(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
  """float32 [C] multi-hot vector of `labels` over `classes`."""
  vector = np.zeros(len(classes), np.float32)
  for name in labels:
    vector[classes.index(name)] = 1.0
  return vector
