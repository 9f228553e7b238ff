"""Writes a minimal valid dataset layout (sine-tone wavs, small JPEGs, AlphaPose JSON, CSVs).

Independent of the SynthMUSIC generator so the pipeline tests run on their own; the layout follows
the on-disk contract in data_pipeline/layout/schema.py.
"""

from __future__ import annotations

import csv
import itertools
import json
import pathlib

import numpy as np
import soundfile
from PIL import Image

CLASSES = ("cello", "flute", "trumpet", "violin")
# One tone per class, far apart so that ideal binary masks separate them cleanly.
CLASS_FREQUENCY = {"cello": 196.0, "flute": 523.25, "trumpet": 1046.5, "violin": 2093.0}
CLASS_COLOUR = {"cello": (200, 60, 20), "flute": (30, 160, 220), "trumpet": (220, 200, 40),
                "violin": (90, 200, 90)}
SAMPLE_RATE = 11025
FPS = 8


def tone(labels, num_samples: int, phase: float = 0.0) -> np.ndarray:
  """Sum of the class tones of `labels` (amplitude 0.4 each), float32 [num_samples]."""
  t = np.arange(num_samples) / SAMPLE_RATE
  out = np.zeros(num_samples)
  for name in labels:
    out += 0.4 * np.sin(2 * np.pi * CLASS_FREQUENCY[name] * t + phase)
  return out.astype(np.float32)


def _write_pose(path: pathlib.Path, num_frames: int, width: int, height: int,
                rng: np.random.Generator) -> None:
  """AlphaPose-style JSON: track 7 in most frames, track 3 in fewer, track 9 in two frames."""
  records = []
  for frame in range(num_frames):
    people = []
    if frame % 5 != 4:  # every 5th frame: person 7 not detected
      people.append((7, 0.3))
    if frame % 2 == 0 and frame % 5 != 4:  # person 3 on even frames (frames % 5 == 4: nobody)
      people.append((3, 0.7))
    if frame in (1, 3):
      people.append((9, 0.5))
    for idx, centre in people:
      points = np.zeros((136, 3))
      points[:, 0] = centre * width + rng.uniform(-3, 3, 136)
      points[:, 1] = rng.uniform(0, height, 136)
      points[:, 2] = rng.uniform(0.2, 1.0, 136)
      records.append({"image_id": f"{frame + 1:06d}.jpg", "category_id": 1,
                      "keypoints": points.reshape(-1).round(3).tolist(), "score": 2.5,
                      "box": [0.0, 0.0, float(width), float(height)], "idx": idx})
  path.write_text(json.dumps(records))


def _write_clip(root: pathlib.Path, clip_id: str, labels, duration: float,
                frame_size: tuple[int, int], rng: np.random.Generator) -> dict:
  """Writes one clip's wav(s), frames and pose; returns its index row."""
  labels = sorted(labels)
  duet = len(labels) > 1
  category = "+".join(labels)
  num_samples = int(duration * SAMPLE_RATE)
  num_frames = int(duration * FPS)
  audio = root / "audio" / category / f"{clip_id}.wav"
  audio.parent.mkdir(parents=True, exist_ok=True)
  phase = float(rng.uniform(0, 2 * np.pi))
  soundfile.write(audio, tone(labels, num_samples, phase), SAMPLE_RATE, subtype="PCM_16")
  sources = []
  if duet:
    for k, name in enumerate(labels):
      source = root / "audio_sources" / category / clip_id / f"{k}_{name}.wav"
      source.parent.mkdir(parents=True, exist_ok=True)
      soundfile.write(source, tone([name], num_samples, phase), SAMPLE_RATE, subtype="PCM_16")
      sources.append(str(source.relative_to(root)))
  frames = root / "frames" / category / clip_id
  frames.mkdir(parents=True, exist_ok=True)
  height, width = frame_size
  colour = np.mean([CLASS_COLOUR[x] for x in labels], axis=0)
  for f in range(num_frames):
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.clip(colour + (f % 7) * 3, 0, 255).astype(np.uint8)
    image[:, : width // 4] = (f * 4) % 256  # left stripe tells frames (and flips) apart
    Image.fromarray(image).save(frames / f"{f + 1:06d}.jpg", quality=95, subsampling=0)
  pose = root / "pose" / category / f"{clip_id}.json"
  pose.parent.mkdir(parents=True, exist_ok=True)
  _write_pose(pose, num_frames, width, height, rng)
  return {"id": clip_id, "category": category, "labels": ";".join(labels), "duet": int(duet),
          "audio": str(audio.relative_to(root)), "frames": str(frames.relative_to(root)),
          "num_frames": num_frames, "pose": str(pose.relative_to(root)),
          "sources": ";".join(sources)}


def write_layout(root: pathlib.Path | str, *, duration: float = 6.5,
                 frame_size: tuple[int, int] = (40, 56), train_solos_per_class: int = 2,
                 splits: tuple[str, ...] = ("train", "val", "test"), seed: int = 0) -> pathlib.Path:
  """Writes a layout: train (solos + 2 duets), val/test (4 solos + 1 duet) and their mixtures."""
  root = pathlib.Path(root)
  rng = np.random.default_rng(seed)
  (root / "index").mkdir(parents=True, exist_ok=True)
  (root / "labels.json").write_text(json.dumps(
      {"dataset": "synthmusic", "classes": list(CLASSES), "sample_rate": SAMPLE_RATE, "fps": FPS}))
  plan = {
      "train": [[c] for c in CLASSES for _ in range(train_solos_per_class)]
               + [["cello", "flute"], ["trumpet", "violin"]],
      "val": [[c] for c in CLASSES] + [["flute", "violin"]],
      "test": [[c] for c in CLASSES] + [["cello", "trumpet"]],
  }
  for split, clips in plan.items():
    if split not in splits:
      continue
    rows = [_write_clip(root, f"{split}{i:03d}", labels, duration, frame_size, rng)
            for i, labels in enumerate(clips)]
    with (root / "index" / f"{split}.csv").open("w", newline="") as handle:
      writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
    if split == "train":
      continue
    for num_mix in (2, 3):
      mixtures = [combo for combo in itertools.combinations(rows, num_mix)
                  if len({x for r in combo for x in r["labels"].split(";")})
                  == sum(len(r["labels"].split(";")) for r in combo)]
      with (root / "index" / f"{split}_mixtures_n{num_mix}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mixture_id", "clips"])
        for i, combo in enumerate(mixtures):
          writer.writerow([f"{split}_n{num_mix}_{i:04d}", ";".join(r["id"] for r in combo)])
  return root


def data_config(root: pathlib.Path | str, **overrides):
  """Tiny config.data pointed at a layout written by write_layout."""
  from configs.parts import data as data_parts

  config = data_parts.get_data_config("tiny")
  config.root = str(root)
  config.num_classes = len(CLASSES)
  for key, value in overrides.items():
    setattr(config, key, value)
  return config
