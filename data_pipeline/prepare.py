"""Makes a training run's dataset root exist before training (what `python main.py` does first).

SynthMUSIC is generated on first use; with config.class_subset.classes a class-subset view of its
source root is written (e.g. MUSIC's 11 classes of MUSIC21). Process 0 writes, the other
processes wait for the files on the shared filesystem.

A root is only written when it is absent, empty or already the writer's own (SynthMUSIC's
.complete marker); any other folder raises layout.ownership.DatasetRootError naming the folder
and the config key to set, before anything is changed.
"""

from __future__ import annotations

import pathlib
import time

import ml_collections

from data_pipeline.layout import ownership, writer
from data_pipeline.layout.schema import LABELS_FILE


def prepare_dataset(config: ml_collections.ConfigDict, process_index: int) -> pathlib.Path:
  """Makes config.data.root exist: generates SynthMUSIC there (config.dataset == "synthmusic")
  or, with config.class_subset.classes, writes a class-subset view of its source root.

  process_index: this process (jax.process_index()); only process 0 writes.
  """
  if not config.data.root:
    raise ValueError("config.data.root is empty: set --config.data.root to a dataset root (or "
                     "to a new folder for SynthMUSIC)")
  root = pathlib.Path(config.data.root)
  subset = config.class_subset
  source = pathlib.Path(subset.source_root) if subset.classes else root
  source_key = "config.class_subset.source_root" if subset.classes else "config.data.root"
  if config.dataset == "synthmusic":
    from data_pipeline import synthmusic  # pylint: disable=g-import-not-at-top
    if process_index == 0:
      # A no-op when a complete copy with the same parameters is there already.
      synthmusic.generate(
          source, size=config.synthmusic_size, seed=config.synthmusic_seed, progress=True,
          key=source_key,
          hint=(f"config.dataset=synthmusic generates SynthMUSIC there. If {source} is a "
                "preprocessed dataset, set --config.dataset=music21 (or music); otherwise point "
                f"--{source_key} at an empty or new folder."))
    wait_for_file(source / synthmusic.COMPLETE_MARKER)
  elif not (source / LABELS_FILE).is_file():
    raise FileNotFoundError(
        f"config.data.root={source} has no {LABELS_FILE}; preprocess the {config.dataset} videos "
        "with `python -m data_pipeline.ingest` first (or use --config.dataset=synthmusic)")
  if subset.classes and not (root / LABELS_FILE).is_file():
    if process_index == 0:
      ownership.check_writable(
          root, (LABELS_FILE,), "the class-subset view", "config.data.root",
          f"config.class_subset.classes writes a view of {source} there: point "
          "--config.data.root at an empty or new folder.")
      writer.write_class_subset(source, root, tuple(subset.classes), subset.dataset_name)
    wait_for_file(root / LABELS_FILE)
  return root


def wait_for_file(path: pathlib.Path, timeout_s: float = 3600.0) -> None:
  """Other processes wait while process 0 writes the dataset (shared filesystem)."""
  start = time.monotonic()
  while not path.is_file():
    if time.monotonic() - start > timeout_s:
      raise TimeoutError(f"{path} did not appear within {timeout_s} s")
    time.sleep(2.0)
