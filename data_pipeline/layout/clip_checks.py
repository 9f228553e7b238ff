"""Content checks of a clip's files, where damage would otherwise be silent, and their cache.

  check_audio_content  NaN / Inf samples (float wavs), all-zero (silent) audio
  check_frames         every listed JPEG of the clip opens and decodes (PIL, reduced-size draft
                       decode: the whole entropy-coded stream is read) and has the first frame's
                       size
  check_pose_values    NaN / Inf keypoint values (called by reader.load_pose; preflight caches
                       a pose file that parsed and passed under "pose:<path>:...")

Each failure is a BadClipError naming the file. Passing results are cached by the files' (size,
mtime) in a JSON file (ValidationCache, config.data.validation_cache), so a second run over an
unchanged dataset does not decode every frame again. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading

from absl import logging
import numpy as np
import soundfile
from PIL import Image

from data_pipeline.layout.schema import BadClipError, ClipRecord

CACHE_VERSION = 1
_BLOCK = 1 << 18  # samples read at a time by the audio content check


class ValidationCache:
  """Passing content checks keyed by file path and (size, mtime); path "" or None: no file."""

  def __init__(self, path: os.PathLike | str | None = None):
    self.path = pathlib.Path(path) if path else None
    self.entries: dict[str, dict] = {}
    self.hits = 0
    self.misses = 0
    self._dirty = False
    self._lock = threading.Lock()
    if self.path is not None and self.path.is_file():
      try:
        content = json.loads(self.path.read_text())
        if content.get("version") == CACHE_VERSION:
          self.entries = dict(content["entries"])
      except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logging.warning("ignoring unreadable clip validation cache %s (%r)", self.path, error)

  def get(self, key: str, stamp: str):
    """The cached value of a passing check, or None."""
    entry = self.entries.get(key)
    if entry is not None and entry.get("stamp") == stamp:
      self.hits += 1
      return entry["value"]
    self.misses += 1
    return None

  def put(self, key: str, stamp: str, value) -> None:
    with self._lock:
      self.entries[key] = {"stamp": stamp, "value": value}
      self._dirty = True

  def save(self) -> None:
    """Writes the cache file atomically when something new passed (no-op without a path)."""
    if self.path is None or not self._dirty:
      return
    with self._lock:
      text = json.dumps({"version": CACHE_VERSION, "entries": self.entries})
      self._dirty = False
    self.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, self.path)


def stamp(paths) -> str:
  """Size and mtime of files (and their paths), as one short string: a cache entry's stamp."""
  digest = hashlib.sha1()
  for path in paths:
    stat = os.stat(path)
    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()


def check_audio_content(path: pathlib.Path, cache: ValidationCache | None = None) -> None:
  """Raises BadClipError when the wav holds NaN / Inf samples or is silent (all zero)."""
  key = f"audio:{path}"
  stamped = stamp([path])
  if cache is not None and cache.get(key, stamped) is not None:
    return
  try:
    info = soundfile.info(str(path))
    is_float = info.subtype in ("FLOAT", "DOUBLE")
    dtype = "float64" if is_float else "int32"
    audible = False
    position = 0
    for block in soundfile.blocks(str(path), blocksize=_BLOCK, dtype=dtype, always_2d=True):
      if is_float:
        finite = np.isfinite(block)
        if not finite.all():
          first = position + int(np.argmin(finite.all(axis=1)))
          raise BadClipError(path, f"{int((~finite).sum())} non-finite (NaN / Inf) samples, the "
                             f"first at sample {first}", "nonfinite_audio")
      audible = audible or bool(np.any(block != 0))
      position += block.shape[0]
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise BadClipError(path, f"unreadable audio ({error})", "unreadable_audio") from error
  if not audible:
    raise BadClipError(path, "silent audio (every sample is 0)", "silent_audio")
  if cache is not None:
    cache.put(key, stamped, True)


def check_frames(record: ClipRecord, cache: ValidationCache | None = None) -> tuple[int, int]:
  """Decodes every listed frame of the clip; returns (width, height) shared by all of them.

  Raises BadClipError naming the first frame that does not open, is not a JPEG, does not decode
  (truncated, corrupt entropy-coded data, zero bytes) or differs in size from frame 1.
  """
  paths = [record.frame_path(i) for i in range(record.num_frames)]
  key = f"frames:{record.frames}:{record.num_frames}"
  try:
    stamped = stamp(paths)
  except FileNotFoundError as error:
    raise BadClipError(error.filename, "frame missing", "missing_frames") from error
  if cache is not None:
    value = cache.get(key, stamped)
    if value is not None:
      return int(value[0]), int(value[1])
  size = None
  for path in paths:
    this = check_frame(path)
    if size is None:
      size = this
    elif this != size:
      raise BadClipError(path, f"frame is {this[0]}x{this[1]}, frame 1 of the clip is "
                         f"{size[0]}x{size[1]}", "corrupt_frame")
  if cache is not None:
    cache.put(key, stamped, list(size))
  return size


def check_frame(path: pathlib.Path) -> tuple[int, int]:
  """(width, height) of a JPEG that opens and decodes; else BadClipError naming it."""
  try:
    with Image.open(path) as image:
      if image.format != "JPEG":
        raise BadClipError(path, f"not a JPEG ({image.format})", "corrupt_frame")
      size = image.size
      # A 1/8-scale draft still reads and Huffman-decodes the whole stream: truncated or
      # corrupt data fails here as it would in tf.io.decode_jpeg, at a fraction of the cost.
      image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
      image.load()
  except BadClipError:
    raise
  except FileNotFoundError as error:
    raise BadClipError(path, "frame missing", "missing_frames") from error
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
    if os.path.isfile(path) and os.path.getsize(path) == 0:
      raise BadClipError(path, "empty (zero-byte) frame", "corrupt_frame") from error
    raise BadClipError(path, f"undecodable frame ({error})", "corrupt_frame") from error
  return size


def check_pose_values(path: pathlib.Path, number: int, keypoints: np.ndarray) -> None:
  """Raises BadClipError when pose record `number` holds NaN / Inf keypoint values."""
  if not np.isfinite(keypoints).all():
    raise BadClipError(path, f"record {number}: {int((~np.isfinite(keypoints)).sum())} "
                       "non-finite (NaN / Inf) keypoint values", "nonfinite_pose")
