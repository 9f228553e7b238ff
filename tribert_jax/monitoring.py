"""TensorBoard summaries: metric writer, spectrogram/mask/attention images, separated audio."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from clu import metric_writers
import jax
import ml_collections
import numpy as np

from data_pipeline.layout import schema

# Anchor colours of the viridis colour map (dark blue -> yellow), interpolated linearly: enough
# to read a spectrogram, without a plotting library at training time.
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                     [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44],
                     [253, 231, 37]], np.float32) / 255.0

# The input pipeline's frame normalisation, inverted for display.
IMAGENET_MEAN = np.asarray(schema.IMAGENET_MEAN, np.float32)
IMAGENET_STD = np.asarray(schema.IMAGENET_STD, np.float32)


def create_writer(workdir: str) -> metric_writers.MetricWriter:
  """TensorBoard writer (asynchronous) on process 0; writes nothing on the other processes.

  No console writer: clu's default one logs every write_scalars call (all grad norms) and
  write_hparams as one line of the whole config. The console gets the training loop's one
  progress line per log interval and each evaluation's summary line instead; the full config is
  in TensorBoard's hparams and WORKDIR/config.json.
  """
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])


def append_json_line(path: str, record: Mapping[str, Any]) -> None:
  """Appends one JSON object as a line of PATH (process 0 only; creates the folder)."""
  if jax.process_index() > 0:
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as file:
    file.write(json.dumps(dict(record)) + "\n")


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Config flattened to {'optim.learning_rate': 1e-05, ...} with TensorBoard-friendly values."""
  flat = {}

  def visit(node, prefix):
    for key, value in node.items():
      name = f"{prefix}.{key}" if prefix else key
      if isinstance(value, (ml_collections.ConfigDict, dict)):
        visit(value, name)
      elif isinstance(value, (bool, int, float, str)) or value is None:
        flat[name] = "None" if value is None else value
      else:
        flat[name] = str(value)

  visit(config, "")
  return flat


def colormap(values: np.ndarray) -> np.ndarray:
  """float [...] in [0, 1] -> float [..., 3] RGB in [0, 1] (viridis)."""
  values = np.clip(np.nan_to_num(np.asarray(values, np.float32)), 0.0, 1.0)
  positions = np.linspace(0.0, 1.0, len(_VIRIDIS))
  return np.stack([np.interp(values, positions, _VIRIDIS[:, c]) for c in range(3)], axis=-1)


def spectrogram_image(magnitude: np.ndarray, floor_db: float = -80.0) -> np.ndarray:
  """Magnitude [freq, time] -> RGB [freq, time, 3] in [0, 1]: dB scale relative to the peak,
  low frequencies at the bottom as in a usual spectrogram plot."""
  magnitude = np.asarray(magnitude, np.float32)
  decibels = 20.0 * np.log10(np.maximum(magnitude, 1e-8) / max(float(magnitude.max()), 1e-8))
  return colormap(1.0 - np.clip(decibels / floor_db, 0.0, 1.0))[::-1]


def mask_image(mask: np.ndarray) -> np.ndarray:
  """Mask [freq, time] in [0, 1] -> RGB [freq, time, 3], low frequencies at the bottom."""
  return colormap(mask)[::-1]


def _resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of [h, w, ...] to [height, width, ...]."""
  rows = np.minimum((np.arange(height) * image.shape[0]) // height, image.shape[0] - 1)
  cols = np.minimum((np.arange(width) * image.shape[1]) // width, image.shape[1] - 1)
  return image[rows][:, cols]


def denormalise_frames(frames: np.ndarray) -> np.ndarray:
  """ImageNet-normalised RGB [..., 3] -> RGB in [0, 1]."""
  return np.clip(np.asarray(frames, np.float32) * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def attention_overlay(frames: np.ndarray, attention: np.ndarray, alpha: float = 0.5
                      ) -> np.ndarray:
  """Frames [T, S, S, 3] (ImageNet-normalised) and maps [T, h, w] -> one strip [S, T*S, 3]:
  each frame blended with its attention map (normalised to its own maximum)."""
  frames = denormalise_frames(frames)
  strips = []
  for frame, attention_map in zip(frames, np.asarray(attention, np.float32)):
    attention_map = attention_map - attention_map.min()
    attention_map = attention_map / max(float(attention_map.max()), 1e-8)
    heat = colormap(_resize_nearest(attention_map, frame.shape[0], frame.shape[1]))
    strips.append((1.0 - alpha) * frame + alpha * heat)
  return np.concatenate(strips, axis=1)


def _to_uint8(image: np.ndarray) -> np.ndarray:
  """[0, 1] float image -> uint8 (what tf.summary.image stores most compactly)."""
  return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _audio(waveform: np.ndarray) -> np.ndarray:
  """[L] waveform -> [1, L, 1] in [-1, 1] for write_audios; peak-normalised only if it clips."""
  waveform = np.nan_to_num(np.asarray(waveform, np.float32))
  peak = float(np.abs(waveform).max()) if waveform.size else 0.0
  if peak > 1.0:
    waveform = waveform / peak
  return waveform[None, :, None]


def write_separation_examples(writer: metric_writers.MetricWriter, step: int,
                              examples: Sequence[Mapping[str, np.ndarray]],
                              sample_rate: int, prefix: str = "examples") -> None:
  """Audio and images for a few fixed validation mixtures.

  Each example: mixture [L], sources [N, L] (ground truth), predictions [N, L] (separated),
  mix_mag [F, T], pred_masks [N, F', T], gt_masks [N, F', T], and optionally frames
  [N, T, S, S, 3] with attention [N, T, h, w] (the visual attention map of each video's class).
  """
  audios, images = {}, {}
  for i, example in enumerate(examples):
    name = f"{prefix}/mixture_{i}"
    audios[f"{name}/mixture"] = _audio(example["mixture"])
    images[f"{name}/spectrogram_mixture"] = _to_uint8(spectrogram_image(example["mix_mag"]))
    for n in range(len(example["sources"])):
      audios[f"{name}/source_{n}_ground_truth"] = _audio(example["sources"][n])
      audios[f"{name}/source_{n}_predicted"] = _audio(example["predictions"][n])
      images[f"{name}/mask_{n}_predicted"] = _to_uint8(mask_image(example["pred_masks"][n]))
      images[f"{name}/mask_{n}_ground_truth"] = _to_uint8(mask_image(example["gt_masks"][n]))
      if "attention" in example and "frames" in example:
        images[f"{name}/visual_attention_{n}"] = _to_uint8(
            attention_overlay(example["frames"][n], example["attention"][n]))
  writer.write_audios(step, audios, sample_rate=int(sample_rate))
  writer.write_images(step, images)
