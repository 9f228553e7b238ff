"""Read errors inside the tf.data stream, traced back to the file.

Clips are validated up front (every frame decoded once), so a read error in the stream means a
file changed or broke afterwards. TensorFlow's own messages may not name it (`jpeg::Uncompress
failed`), so the Pipeline maps a failing (or, with skip_bad_clips, dropped) example back to its
plan (by its position in the plan stream) and re-checks that example's files with the validation
checks, which name the culprit.
"""

from __future__ import annotations

import itertools
import pathlib
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from data_pipeline.layout import clip_checks, schema
from data_pipeline.layout.schema import BadClipError


def example_files(plan: dict[str, np.ndarray], records: list[schema.ClipRecord],
                  num_frames: int) -> list[tuple[schema.ClipRecord, list[pathlib.Path]]]:
  """(record, the frame files the example reads) per video of one example plan."""
  out = []
  for row, center in zip(plan["clip_index"], plan["center_frame"]):
    record = records[int(row)]
    first = int(center) - num_frames // 2
    out.append((record, [record.frame_path(first + t) for t in range(num_frames)]))
  return out


def find_culprit(plan: dict[str, np.ndarray], records: list[schema.ClipRecord], num_frames: int,
                 source_is_folder: bool) -> tuple[int, BadClipError] | None:
  """(index row, BadClipError naming the file) of the first broken file the example reads."""
  for record, frames in example_files(plan, records, num_frames):
    if not source_is_folder:
      continue  # TFDS records: the pseudo paths cannot be re-read here
    try:
      for path in [record.audio]:
        if not path.is_file():
          raise BadClipError(path, "audio file not found", "missing_audio")
      for path in frames:
        clip_checks.check_frame(path)
    except BadClipError as error:
      return record.row, error
  return None


def plans_at(plan: Callable[[], Iterator[dict[str, np.ndarray]]], first: int,
             count: int) -> list[tuple[int, dict[str, np.ndarray]]]:
  """(position, plan) of the plan stream's positions first ... first + count - 1."""
  return list(enumerate(itertools.islice(plan(), first, first + count), start=first))


def explain(error: tf.errors.OpError, plan, records, num_frames: int, source_is_folder: bool,
            first: int, count: int) -> Exception:
  """The error to raise for a tf.data failure at or after plan position `first`: a BadClipError
  naming the broken file when one of the next `count` examples reads one, else a RuntimeError
  naming the clips of those examples; both chain the TensorFlow error."""
  message = (error.message or str(error)).strip().splitlines()
  summary = message[0][:300] if message else type(error).__name__
  candidates = plans_at(plan, first, count)
  for _, entry in candidates:
    found = find_culprit(entry, records, num_frames, source_is_folder)
    if found is not None:
      bad = found[1]
      return BadClipError(bad.path, f"{bad.reason}; the input pipeline failed reading it "
                          f"({summary})", bad.kind)
  clips = sorted({records[int(r)].id for _, e in candidates for r in e["clip_index"]})
  return RuntimeError(f"input pipeline failed at example {first} (clips {clips[:12]}): "
                      f"{summary}")
