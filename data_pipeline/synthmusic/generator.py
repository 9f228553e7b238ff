"""SynthMUSIC: a deterministic MUSIC21-like dataset (21 instruments, solos and duets) with real
SoundFont instrument audio, pose that plays the notes, and drawn video frames.

  python -m data_pipeline.synthmusic --out DIR --size {tiny,default,large} --seed N \
      [--soundfont PATH] [--workers K]

Writes the on-disk layout of the shared contract (frames/, audio/, audio_sources/, pose/,
labels.json, index/*.csv). Every clip is seeded from (seed, clip index), so the output is
byte-identical for a given seed whatever the number of workers. ROOT/.complete holds the
generation parameters. A complete copy with the same parameters is kept as it is; otherwise the
dataset is rendered into a staging folder next to ROOT (.ROOT.synthmusic-staging-<pid>) and
renamed into place. ROOT itself is only ever replaced when it is absent, empty or carries the
.complete marker: any other folder is a DatasetRootError (a user's files are never touched).
What is specific to each instrument (sound, arrangement, motion, drawing) lives in
instruments.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from data_pipeline.layout import ownership, schema, writer
from data_pipeline.synthmusic import arrangements, audio, frames, instruments, melodies, pose
from data_pipeline.synthmusic.audio import SAMPLE_RATE
from data_pipeline.synthmusic.instruments import CLASSES
from data_pipeline.synthmusic.pose import FPS

GENERATOR_VERSION = 1
IMAGE_SIZE = 256
COMPLETE_MARKER = ".complete"
STAGING_TAG = "synthmusic-staging"


@dataclasses.dataclass(frozen=True)
class SizeSpec:
  """How many clips a size generates."""

  solos_per_class: int
  duets: int
  durations: tuple[float, ...]  # seconds, drawn per clip (multiples of 1/8 s)
  mixtures: int  # per list (val/test x n2/n3)


SIZES = {
    "tiny": SizeSpec(4, 6, (10.0,), 8),
    "default": SizeSpec(24, 60, (10.0, 10.5, 11.0, 11.5, 12.0), 120),
    "large": SizeSpec(96, 240, (10.0, 10.5, 11.0, 11.5, 12.0), 400),
}


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """One clip to render: its players' classes, duration and split."""

  index: int
  clip_id: str
  category: str  # class name, or "a+b" (sorted) for duets
  classes: tuple[str, ...]
  duration: float
  split: str

  @property
  def num_frames(self) -> int:
    return int(round(self.duration * FPS))

  @property
  def num_samples(self) -> int:
    # Tied to the frame count so audio and frames always cover the same span.
    return self.num_frames * SAMPLE_RATE // FPS

  def paths(self) -> dict[str, str]:
    """Paths relative to the dataset root."""
    out = schema.clip_paths(self.category, self.clip_id)
    out["sources"] = schema.source_paths(self.category, self.clip_id, self.classes)
    return out


def _split_counts(n: int) -> tuple[int, int, int]:
  """(train, val, test) of n items: ~70/15/15 with at least one in val and test when n >= 3."""
  held = max(1, int(round(0.15 * n))) if n >= 3 else 0
  return n - 2 * held, held, held


def build_plan(size: str, seed: int) -> list[ClipSpec]:
  """All clips of a size, with ids, durations and splits (depends only on size and seed)."""
  if size not in SIZES:
    raise ValueError(f"unknown SynthMUSIC size {size!r}; choose one of {sorted(SIZES)}")
  spec = SIZES[size]
  rng = np.random.default_rng([seed, 1])
  plan: list[ClipSpec] = []
  for category in CLASSES:
    n_train, n_val, _ = _split_counts(spec.solos_per_class)
    splits = ["train"] * n_train + ["val"] * n_val
    splits += ["test"] * (spec.solos_per_class - len(splits))
    splits = list(rng.permutation(splits))
    for k in range(spec.solos_per_class):
      plan.append(ClipSpec(len(plan), f"{category}_{k:03d}", category, (category,),
                           float(rng.choice(spec.durations)), str(splits[k])))
  pairs = list(itertools.combinations(CLASSES, 2))
  chosen = rng.choice(len(pairs), size=spec.duets, replace=spec.duets > len(pairs))
  n_train, n_val, _ = _split_counts(spec.duets)
  splits = ["train"] * n_train + ["val"] * n_val
  splits = list(rng.permutation(splits + ["test"] * (spec.duets - len(splits))))
  for k, pair_index in enumerate(chosen):
    pair = pairs[int(pair_index)]
    category = "+".join(pair)
    plan.append(ClipSpec(len(plan), f"{category}_{k:03d}", category, pair,
                         float(rng.choice(spec.durations)), str(splits[k])))
  return plan


# ---------------------------------------------------------------------------------------------
# Rendering one clip (runs in worker processes)
# ---------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(bank, soundfont: str) -> None:
  """Per-process state: the melody bank and a loaded SoundFont renderer."""
  _WORKER["bank"] = bank
  _WORKER["renderer"] = audio.Renderer(soundfont)


def _placements(spec: ClipSpec,
                rng: np.random.Generator) -> list[tuple[tuple[float, float], float]]:
  """(hip centre in pixels, pixels per body unit) per player, so that everyone fits the frame."""
  out = []
  n = len(spec.classes)
  xs = [0.5] if n == 1 else ([0.27, 0.73] if rng.random() < 0.5 else [0.73, 0.27])
  for category, x in zip(spec.classes, xs):
    seated = instruments.INSTRUMENTS[category].seated
    top, bottom = 1.75, (1.1 if seated else 1.72)
    full = IMAGE_SIZE * 0.9 / (top + bottom)
    unit = full * (rng.uniform(0.88, 1.0) if n == 1 else rng.uniform(0.56, 0.64))
    slack = IMAGE_SIZE * 0.97 - (top + bottom) * unit
    hip_y = top * unit + rng.uniform(0.03 * IMAGE_SIZE, max(slack, 0.03 * IMAGE_SIZE + 1))
    hip_x = IMAGE_SIZE * (x + rng.uniform(-0.05, 0.05))
    out.append(((hip_x, hip_y), unit))
  return out


def render_clip(spec: ClipSpec, root: pathlib.Path, seed: int) -> None:
  """Renders audio, stems, pose JSON and frames of one clip under `root`."""
  rng = np.random.default_rng([seed, 2, spec.index])
  bank = _WORKER["bank"]
  renderer: audio.Renderer = _WORKER["renderer"]
  paths = spec.paths()
  # Audio: each player alone, then the mix as the exact integer sum of the PCM16 stems.
  arranged = [arrangements.arrange(instruments.INSTRUMENTS[c], rng, spec.duration, bank)
              for c in spec.classes]
  stems = [renderer.render(c, a, spec.num_samples) for c, a in zip(spec.classes, arranged)]
  base_rms = 0.1 if len(stems) == 1 else 0.07
  targets = [base_rms * 10 ** (rng.uniform(-3, 3) / 20) for _ in stems]
  pcm = audio.to_pcm16(stems, targets)
  mix = np.sum([s.astype(np.int32) for s in pcm], axis=0)
  assert np.abs(mix).max() <= 32767
  audio.write_wav(root / paths["audio"], mix.astype(np.int16))
  if len(pcm) > 1:
    for source_path, stem in zip(paths["sources"].split(";"), pcm):
      audio.write_wav(root / source_path, stem)
  # Pose: players move with their own notes.
  performances = []
  for (centre, unit), category, arrangement in zip(_placements(spec, rng), spec.classes,
                                                   arranged):
    performances.append(pose.perform(category, arrangement["notes"], spec.num_frames, centre,
                                     unit, rng))
  records = pose.detect(performances, spec.num_frames, IMAGE_SIZE, rng)
  pose_path = root / paths["pose"]
  pose_path.parent.mkdir(parents=True, exist_ok=True)
  pose_path.write_text(json.dumps(records, separators=(",", ":")))
  # Frames.
  back = frames.background(rng, IMAGE_SIZE)
  styles = [frames.Style(c, rng) for c in spec.classes]
  frame_dir = root / paths["frames"]
  frame_dir.mkdir(parents=True, exist_ok=True)
  for frame in range(spec.num_frames):
    (frame_dir / schema.frame_file(frame)).write_bytes(
        frames.render_frame(back, performances, styles, frame))


def _worker_render(job: tuple[ClipSpec, str, int]) -> str:
  spec, root, seed = job
  render_clip(spec, pathlib.Path(root), seed)
  return spec.clip_id


# ---------------------------------------------------------------------------------------------
# Index files
# ---------------------------------------------------------------------------------------------

def write_indices(root: pathlib.Path, plan: list[ClipSpec], size: str, seed: int) -> None:
  """labels.json, index/{train,val,test}.csv and the fixed val/test mixture lists."""
  root = pathlib.Path(root)
  writer.write_labels(root, "synthmusic", CLASSES, SAMPLE_RATE, FPS)
  for split in schema.SPLITS:
    rows = []
    for clip in plan:
      if clip.split != split:
        continue
      p = clip.paths()
      rows.append((clip.clip_id, clip.category, ";".join(clip.classes), int(len(clip.classes) > 1),
                   p["audio"], p["frames"], clip.num_frames, p["pose"], p["sources"]))
    writer.write_index(root, split, rows)
  count = SIZES[size].mixtures
  for split_code, split in enumerate(schema.EVAL_SPLITS):
    clips = [(c.clip_id, c.classes) for c in plan if c.split == split]
    for n in schema.MIXTURE_SIZES:
      mixtures = writer.make_mixtures(clips, n, count, [seed, 3, split_code, n], greedy=True)
      if len(mixtures) < count:
        raise ValueError(f"could only build {len(mixtures)} of {count} mixtures of {n} clips")
      writer.write_mixture_list(root, split, n, mixtures)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def _parameters(size: str, seed: int, soundfont: pathlib.Path) -> dict:
  return {"generator_version": GENERATOR_VERSION, "size": size, "seed": int(seed),
          "soundfont": soundfont.name, "soundfont_bytes": soundfont.stat().st_size}


def _render_all(root: pathlib.Path, plan: list[ClipSpec], seed: int, soundfont: pathlib.Path,
                workers: int | None, progress: bool, desc: str = "SynthMUSIC") -> None:
  """Renders every clip of `plan` under root, in a process pool when workers > 1."""
  bank = melodies.melody_bank()
  workers = max(1, min(int(workers or os.cpu_count() or 1), len(plan)))
  jobs = [(spec, str(root), seed) for spec in plan]
  from tqdm import tqdm
  bar = tqdm(total=len(jobs), desc=desc, unit="clip", disable=not progress)
  if workers == 1:
    _init_worker(bank, str(soundfont))
    for job in jobs:
      _worker_render(job)
      bar.update()
  elif any(m in sys.modules for m in ("jax", "tensorflow", "torch")):
    # Forking a process that already runs JAX/TensorFlow threads can deadlock, and spawn would
    # re-import the caller's main script (which may lack a __main__ guard): render in a fresh
    # Python process instead, which forks its own pool.
    bar.close()
    _render_in_subprocess(root, plan, seed, soundfont, workers, progress, desc)
    return
  else:
    with multiprocessing.get_context("fork").Pool(
        workers, initializer=_init_worker, initargs=(bank, str(soundfont))) as pool:
      for _ in pool.imap_unordered(_worker_render, jobs):
        bar.update()
  bar.close()


def _render_in_subprocess(root: pathlib.Path, plan: list[ClipSpec], seed: int,
                          soundfont: pathlib.Path, workers: int, progress: bool, desc: str) -> None:
  """Runs _render_all in a new interpreter (no threads inherited); raises if it fails."""
  job = {"root": str(root), "plan": [dataclasses.asdict(c) for c in plan], "seed": seed,
         "soundfont": str(soundfont), "workers": workers, "progress": progress, "desc": desc}
  with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(job, f)
  env = dict(os.environ)
  package_root = str(pathlib.Path(__file__).resolve().parents[2])
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
  code = ("import sys; from data_pipeline.synthmusic import generator; "
          "generator._render_from_file(sys.argv[1])")
  try:
    result = subprocess.run([sys.executable, "-c", code, f.name], env=env, stdout=subprocess.PIPE,
                            stderr=None if progress else subprocess.PIPE, text=True)
  finally:
    os.unlink(f.name)
  if result.returncode != 0:
    raise RuntimeError(f"SynthMUSIC rendering into {root} failed (exit {result.returncode}): "
                       f"{(result.stderr or '')[-2000:]}")


def _render_from_file(path: str) -> None:
  """Subprocess side of _render_in_subprocess."""
  job = json.loads(pathlib.Path(path).read_text())
  plan = [ClipSpec(**{**c, "classes": tuple(c["classes"])}) for c in job["plan"]]
  _render_all(pathlib.Path(job["root"]), plan, job["seed"], pathlib.Path(job["soundfont"]),
              job["workers"], job["progress"], job["desc"])


def generate(out_dir, size: str = "default", seed: int = 0, soundfont=None,
             progress: bool = True, workers: int | None = None, *, key: str = "--out",
             hint: str | None = None) -> pathlib.Path:
  """Generates SynthMUSIC into out_dir (skipped when a complete identical copy is there).

  out_dir must be absent, empty or an earlier SynthMUSIC root (its .complete marker); anything
  else raises ownership.DatasetRootError naming the folder, `key` (the flag or config key that
  named it) and `hint` (what to do instead).
  """
  root = pathlib.Path(out_dir)
  soundfont = pathlib.Path(soundfont) if soundfont else audio.default_soundfont()
  if not soundfont.is_file():
    raise FileNotFoundError(f"SoundFont not found: {soundfont}")
  params = _parameters(size, seed, soundfont)
  marker = root / COMPLETE_MARKER
  if marker.is_file():
    try:
      if json.loads(marker.read_text()) == params:
        return root
    except json.JSONDecodeError:
      pass
    logging.warning("%s holds SynthMUSIC with other parameters; regenerating", root)
  ownership.check_writable(
      root, (COMPLETE_MARKER,), "SynthMUSIC", key,
      hint or f"Pass {key} an empty or new folder (or delete the folder yourself).")
  plan = build_plan(size, seed)
  ownership.remove_stale_staging(root, STAGING_TAG)
  staging = ownership.staging_path(root, STAGING_TAG)
  if staging.exists():
    shutil.rmtree(staging)
  staging.mkdir(parents=True)
  try:
    _render_all(staging, plan, seed, soundfont, workers, progress, desc=f"SynthMUSIC {size}")
    write_indices(staging, plan, size, seed)
    (staging / COMPLETE_MARKER).write_text(json.dumps(params, indent=1, sort_keys=True) + "\n")
    ownership.move_into_place(staging, root)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return root


def main(argv=None) -> None:
  """Command-line entry point."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="dataset root to write")
  parser.add_argument("--size", default="default", choices=sorted(SIZES))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--soundfont", default=None,
                      help="General MIDI .sf2/.sf3 (default: pretty_midi's TimGM6mb.sf2)")
  parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  args = parser.parse_args(argv)
  path = generate(args.out, size=args.size, seed=args.seed, soundfont=args.soundfont,
                  progress=True, workers=args.workers)
  print(path)
