"""Writes the on-disk layout (see schema.py): atomic CSV / JSON files, labels.json, split indices,
the fixed evaluation mixture lists (ONE make_mixtures for every writer) and class-subset views.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import pathlib
import random
import shutil
import threading
from typing import Any, Collection, Iterable, Sequence

from absl import logging
import numpy as np

from data_pipeline.layout import ownership, reader
from data_pipeline.layout.schema import (INDEX_COLUMNS, LABELS_FILE, MEDIA_FOLDERS,
                                         MIXTURE_COLUMNS, mixture_id, mixture_list_name)


def _temporary(path: pathlib.Path) -> pathlib.Path:
  """A sibling temporary name unique to this process and thread."""
  return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def write_text_atomic(path: pathlib.Path, text: str) -> None:
  """Writes text through a temporary file and a rename, so readers never see half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = _temporary(path)
  temporary.write_text(text)
  os.replace(temporary, path)


def write_json(path: pathlib.Path, data: Any, indent: int = 1) -> None:
  """JSON (no trailing newline), written atomically."""
  write_text_atomic(path, json.dumps(data, indent=indent))


def write_csv(path: pathlib.Path, header: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> None:
  """A CSV file with '\\n' line ends, written atomically."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  write_text_atomic(path, buffer.getvalue())


def write_labels(root: pathlib.Path, dataset: str, classes: Sequence[str], sample_rate: int,
                 fps: float) -> None:
  """ROOT/labels.json (classes sorted, as the reader requires)."""
  write_text_atomic(pathlib.Path(root) / LABELS_FILE, json.dumps(
      {"dataset": dataset, "classes": sorted(classes), "sample_rate": sample_rate, "fps": fps},
      indent=1) + "\n")


def write_index(root: pathlib.Path, split: str, rows: Iterable[Sequence[Any]]) -> None:
  """ROOT/index/<split>.csv; rows hold the INDEX_COLUMNS values in order."""
  write_csv(pathlib.Path(root) / "index" / f"{split}.csv", INDEX_COLUMNS, rows)


def write_mixture_list(root: pathlib.Path, split: str, num_mix: int,
                       mixtures: Iterable[Sequence[str]]) -> None:
  """ROOT/index/<split>_mixtures_n<num_mix>.csv from groups of clip ids."""
  write_csv(pathlib.Path(root) / "index" / f"{mixture_list_name(split, num_mix)}.csv",
            MIXTURE_COLUMNS, [(mixture_id(split, num_mix, number), ";".join(ids))
                              for number, ids in enumerate(mixtures)])


def make_mixtures(clips: Sequence[tuple[str, Collection[str]]], num_sources: int, count: int,
                  seed, *, greedy: bool = False) -> list[tuple[str, ...]]:
  """Up to `count` distinct seeded groups of `num_sources` clips with pairwise disjoint labels.

  clips: (clip id, label set) in a fixed order. Two draws exist because datasets written by
  each must stay byte-identical:
    greedy=False (real-data ingestion): random.Random(seed); every valid group is enumerated
      when C(len(clips), num_sources) <= 50k and drawn without replacement, else groups are
      sampled (sorted clip order, 200 * count tries).
    greedy=True (SynthMUSIC): numpy.random.default_rng(seed); each of at most 200 * count
      attempts walks a random permutation of the clips, taking every clip whose labels are still
      free until num_sources are chosen (ids in the order taken).
  Fewer than `count` groups come back when the clips do not allow more; callers decide whether
  that is an error.
  """
  if len(clips) < num_sources:
    return []
  if greedy:
    return _greedy_mixtures(clips, num_sources, count, np.random.default_rng(seed))
  rng = random.Random(seed)

  def disjoint(group: tuple[int, ...]) -> bool:
    labels = [label for index in group for label in clips[index][1]]
    return len(labels) == len(set(labels))

  n = len(clips)
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


def _greedy_mixtures(clips: Sequence[tuple[str, Collection[str]]], num_sources: int, count: int,
                     rng: np.random.Generator) -> list[tuple[str, ...]]:
  """The greedy=True draw of make_mixtures."""
  out: list[tuple[str, ...]] = []
  seen: set[frozenset[str]] = set()
  attempts = 0
  while len(out) < count and attempts < count * 200:
    attempts += 1
    order = rng.permutation(len(clips))
    chosen: list[str] = []
    used: set[str] = set()
    for i in order:
      clip_id, labels = clips[int(i)]
      if used.isdisjoint(labels):
        chosen.append(clip_id)
        used.update(labels)
        if len(chosen) == num_sources:
          break
    key = frozenset(chosen)
    if len(chosen) == num_sources and key not in seen:
      seen.add(key)
      out.append(tuple(chosen))
  return out


def _labels_of(row: dict[str, str]) -> set[str]:
  return set(filter(None, row["labels"].split(";")))


def write_class_subset(source: pathlib.Path, target: pathlib.Path, classes: Sequence[str],
                       dataset_name: str) -> None:
  """A dataset root holding only clips whose labels are all in `classes` (e.g. MUSIC's 11 of
  MUSIC21's 21): filtered index and mixture CSVs, labels.json with the subset, and symbolic
  links to the source's media folders (nothing is copied)."""
  source, target = pathlib.Path(source), pathlib.Path(target)
  info = reader.read_labels(source)
  unknown = sorted(set(classes) - set(info.classes))
  if unknown:
    raise ValueError(f"config.class_subset.classes names {unknown}, not classes of "
                     f"{source}/{LABELS_FILE}")
  keep = set(classes)
  ownership.remove_stale_staging(target, "class-subset-staging")
  staging = ownership.staging_path(target, "class-subset-staging")
  if staging.exists():
    shutil.rmtree(staging)
  (staging / "index").mkdir(parents=True)
  for folder in MEDIA_FOLDERS:
    link = staging / folder
    if (source / folder).exists() and not link.exists():
      link.symlink_to((source / folder).resolve(), target_is_directory=True)
  for index_file in sorted((source / "index").glob("*.csv")):
    with index_file.open(newline="") as handle:
      csv_reader = csv.DictReader(handle)
      fields, rows = csv_reader.fieldnames, list(csv_reader)
    if "labels" in fields:  # a split index: keep clips within the subset
      kept = [r for r in rows if _labels_of(r) <= keep]
    else:  # a mixture list: keep mixtures whose clips all survive
      split = index_file.name.split("_mixtures_")[0]
      with (source / "index" / f"{split}.csv").open(newline="") as handle:
        ids = {r["id"] for r in csv.DictReader(handle) if _labels_of(r) <= keep}
      kept = [r for r in rows if set(filter(None, r["clips"].split(";"))) <= ids]
    write_csv(staging / "index" / index_file.name, fields, [[r[f] for f in fields] for r in kept])
    logging.info("class subset %s: kept %d of %d rows", index_file.name, len(kept), len(rows))
  write_labels(staging, dataset_name, classes, info.sample_rate, info.fps)
  # Atomic: a half-written view is never mistaken for a dataset. The target must be absent or
  # empty (prepare_dataset checks it and names the config key first).
  ownership.check_writable(target, (), "the class-subset view", "target",
                           "write the view into an empty or new folder")
  ownership.move_into_place(staging, target)
