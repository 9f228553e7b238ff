"""Checks a run's dataset before any heavy work: pure Python (no TensorFlow, no JAX), so the
trainer can call it first and `main.py --mode=check` can run only it.

  report = preflight.check(config.data, splits_needed=("train", "test"), num_mix=2,
                           cache_path=workdir / "clip_validation.json")

Checks labels.json against the config, every index file the run needs, the eval split's
mixture list for num_mix (a missing list, a mixture naming an unknown clip), and validates every
clip the run will read (layout.reader.validate_clip with the content checks, cached by file size
and mtime, and the pose parse). Bad clips are raised together in one PreflightError naming every
bad file, or with data.skip_bad_clips counted in the report; too few usable clips is an error.
A clip without pose file is bad unless data.require_pose is False; then it is counted per split
(clips_without_pose), like clips whose pose file detects nobody (clips_without_detection).
Every error names the file and the config key to set.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pathlib
import time
from typing import Any, Iterable

from data_pipeline.layout import clip_checks, reader, schema

MAX_LISTED = 20  # bad files listed in one error message


class PreflightError(ValueError):
  """A dataset problem found before training; `path` the file, `key` the config key to set."""

  def __init__(self, message: str, path: os.PathLike | str | None = None, key: str = ""):
    super().__init__(message)
    self.path = str(path) if path is not None else None
    self.key = key


def _split_key(config, split: str) -> str:
  if split == config.train_split:
    return "config.data.train_split"
  if split == config.eval_split:
    return "config.data.eval_split"
  return "the split"


def _check_config(config, root: pathlib.Path) -> schema.DatasetInfo:
  """labels.json readable and consistent with config.data."""
  try:
    info = reader.read_labels(root)
  except (FileNotFoundError, ValueError) as error:
    raise PreflightError(f"{error} (config.data.root={root}; set --config.data.root to a "
                         "dataset root)", root / schema.LABELS_FILE, "config.data.root") from error
  labels = root / schema.LABELS_FILE
  for key, want, have in (("num_classes", config.num_classes, len(info.classes)),
                          ("sample_rate", config.sample_rate, info.sample_rate)):
    if int(want) != int(have):
      raise PreflightError(f"config.data.{key} = {want} but {labels} says {have}; set "
                           f"--config.data.{key}={have}", labels, f"config.data.{key}")
  if abs(float(config.fps) - info.fps) > 1e-6:
    raise PreflightError(f"config.data.fps = {config.fps} but {labels} says {info.fps}",
                         labels, "config.data.fps")
  return info


def _mixtures(config, root: pathlib.Path, split: str, num_mix: int,
              records: list[schema.ClipRecord]) -> list[schema.MixtureRecord]:
  """The split's mixture list for num_mix; errors name the list and config.data.num_mix."""
  path = root / "index" / f"{schema.mixture_list_name(split, num_mix)}.csv"
  if not path.is_file():
    lists = (root / "index").glob(f"{split}_mixtures_n*.csv")
    have = sorted(p.stem.rsplit("_n", 1)[-1] for p in lists)
    raise PreflightError(
        f"{path} not found: config.data.num_mix = {num_mix} has no {split} mixture list "
        f"(lists for num_mix in {have or 'none'}); set --config.data.num_mix to one of those",
        path, "config.data.num_mix")
  try:
    return reader.read_mixtures(root, split, num_mix, records)
  except ValueError as error:
    raise PreflightError(f"{error} (fix the list, or set --{_split_key(config, split)} / "
                         "--config.data.num_mix)", path, "config.data.num_mix") from error


def _validate(config, records: list[schema.ClipRecord], rows: list[int],
              cache: clip_checks.ValidationCache
              ) -> tuple[dict[int, schema.BadClipError], collections.Counter]:
  """Validates the rows' clips (threads: decoding releases the GIL): (bad row -> its error,
  counts of good clips "without_pose" (require_pose False) and "without_detection")."""
  require_pose = bool(config.get("require_pose", True))

  def one(row: int) -> schema.BadClipError | str | None:
    record = records[row]
    try:
      clip = reader.validate_clip(record, config.sample_rate, config.fps, config.audio_length,
                                  config.num_frames, cache=cache, require_pose=require_pose)
      if not clip.has_pose:
        return "without_pose"
      # The pose parse (JSON, NaN / Inf keypoints) is cached like the content checks, with
      # whether anybody was detected at all.
      key = (f"pose:{record.pose}:{record.num_frames}:{clip.frame_width}x{clip.frame_height}:"
             f"{config.max_persons}:detected")
      try:
        stamped = clip_checks.stamp([record.pose])
      except FileNotFoundError as error:  # removed since validate_clip looked
        raise schema.BadClipError(record.pose, "pose file not found", "missing_pose") from error
      detected = cache.get(key, stamped)
      if detected is None:
        track = reader.load_pose(record.pose, record.num_frames, clip.frame_width,
                                 clip.frame_height, config.max_persons)
        detected = bool(track.frames_without_detection < record.num_frames)
        cache.put(key, stamped, detected)
    except schema.BadClipError as error:
      return error
    return None if detected else "without_detection"

  workers = max(1, min(8, os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(pool.map(one, rows))
  bad = {row: r for row, r in zip(rows, results) if isinstance(r, schema.BadClipError)}
  return bad, collections.Counter(r for r in results if isinstance(r, str))


def check(data_config, splits_needed: Iterable[str], num_mix: int | None = None,
          cache_path: os.PathLike | str | None = "") -> dict[str, Any]:
  """Checks what a run needs of its dataset; returns a report, raises PreflightError.

  data_config: config.data. splits_needed: the splits the run reads; the training split
  (data_config.train_split) is checked as training clips (solos unless multi_source, at least
  num_mix usable), any other split through its mixture list for num_mix (every mixture's clips),
  or, with num_mix None, all its clips (the clip pipeline). cache_path: the validation cache
  (config.data.validation_cache; "" = none). A TFDS source is not checked here (it needs
  TensorFlow); the pipeline checks it when it opens.
  """
  c = data_config
  started = time.monotonic()
  report: dict[str, Any] = {"root": str(c.root), "source": c.source, "splits": {},
                            "skipped_clips": collections.Counter(), "bad_files": []}
  if c.source == "tfds":
    report["note"] = "tfds source: checked when the pipeline opens it"
    return report
  if c.source != "folder":
    raise PreflightError(f'config.data.source = {c.source!r}, expected "folder" or "tfds"',
                         key="config.data.source")
  if not c.root:
    raise PreflightError("config.data.root is empty: set --config.data.root to a dataset root",
                         key="config.data.root")
  root = pathlib.Path(c.root)
  if not root.is_dir():
    raise PreflightError(f"config.data.root={root} is not a folder", root, "config.data.root")
  mix = int(c.num_mix if num_mix is None else num_mix)
  if mix < 1:
    raise PreflightError(f"config.data.num_mix = {mix}; it must be at least 1",
                         key="config.data.num_mix")
  info = _check_config(c, root)
  cache = clip_checks.ValidationCache(cache_path or None)
  for split in dict.fromkeys(splits_needed):
    key = _split_key(c, split)
    index = root / "index" / f"{split}.csv"
    try:
      records = reader.read_index(root, split, info.classes)
    except (FileNotFoundError, ValueError) as error:
      raise PreflightError(f"{error} (the run reads it as {key}={split})", index, key) from error
    mixtures = None
    if split == c.train_split:
      rows = [r.row for r in records if c.multi_source or not r.duet]
    elif num_mix is not None:
      mixtures = _mixtures(c, root, split, mix, records)
      if not mixtures:
        raise PreflightError(f"{root / 'index'}/{schema.mixture_list_name(split, mix)}.csv is "
                             "empty", index, "config.data.num_mix")
      rows = list(dict.fromkeys(r for m in mixtures for r in m.clip_rows))
    else:
      rows = [r.row for r in records]
    bad, pose_counts = _validate(c, records, rows, cache)
    cache.save()
    if bad and not c.skip_bad_clips:
      lines = [f"  {error}" for error in list(bad.values())[:MAX_LISTED]]
      more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
      first = next(iter(bad.values()))
      hint = ""
      if any(error.kind == "missing_pose" for error in bad.values()):
        hint = ("\n(clips without pose file: a model that does not read pose, e.g. "
                "Sound-of-Pixels or TriBERT with model.pose.enabled=False, can use them with "
                "--config.data.require_pose=False)")
      raise PreflightError(
          f"{len(bad)} bad clip(s) in {index} ({key}={split}):\n" + "\n".join(lines) + more
          + "\nfix or remove them, or set --config.data.skip_bad_clips=True to skip and count "
          "them" + hint, first.path, "config.data.skip_bad_clips")
    for error in bad.values():
      report["skipped_clips"][error.kind] += 1
      report["bad_files"].append(str(error))
    entry = {"clips": len(rows), "bad_clips": len(bad)}
    if pose_counts["without_pose"]:
      entry["clips_without_pose"] = pose_counts["without_pose"]
    if pose_counts["without_detection"]:
      entry["clips_without_detection"] = pose_counts["without_detection"]
    if mixtures is not None:
      usable = [m for m in mixtures if not set(m.clip_rows) & set(bad)]
      entry.update(mixtures=len(mixtures), skipped_mixtures=len(mixtures) - len(usable))
      if not usable:
        raise PreflightError(f"every mixture of the {split} list for num_mix = {mix} has a bad "
                             "clip", index, "config.data.skip_bad_clips")
    elif split == c.train_split and len(rows) - len(bad) < mix:
      raise PreflightError(f"{index}: {len(rows) - len(bad)} usable training clips, fewer than "
                           f"config.data.num_mix = {mix}", index, "config.data.num_mix")
    report["splits"][split] = entry
  report["skipped_clips"] = dict(report["skipped_clips"])
  report["cache"] = {"path": str(cache.path or ""), "hits": cache.hits, "misses": cache.misses}
  report["seconds"] = round(time.monotonic() - started, 3)
  return report
