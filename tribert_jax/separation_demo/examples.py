"""The demo's model batches and the separation itself.

A demo source is one video's (or one player's) visual region, pose track and, in the
Mix-and-Separate mode, the audio that went into the mixture. The mixture's duration is cut into
consecutive windows of data.audio_length samples (the model's fixed 256-frame spectrogram; the
last window is zero-padded and its output trimmed), and each window is one example built as the
evaluation pipeline builds one (data_pipeline/loading): the T frames centred on the window
(ClipSource.center_frame's rule), each cropped to the source's region and resized to S x S
(bilinear, antialiased) and ImageNet-normalised, the W-frame pose window around the same frame
(reader.pose_window) with its person mask. The model inputs then come from the one batch ->
model-inputs function (tasks/separation.model_inputs: STFT, log-frequency warp on the device),
and the predicted masks become waveforms through spectral.masks_to_waveforms with the run's
config.eval mask type and threshold, as in the evaluation. Windows are concatenated again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from data_pipeline.layout import reader
from data_pipeline.layout import schema
from tribert_jax import spectral
from tribert_jax.separation_demo import media
from tribert_jax.separation_demo.restore import TrainedModel
from tribert_jax.tasks import separation


@dataclasses.dataclass
class Source:
  """One source to separate: a video (or a player of it) with its region and pose."""
  name: str
  video: media.Video
  box: tuple[int, int, int, int]  # crop (offset_y, offset_x, height, width) in frame pixels
  track: schema.PoseTrack  # [P, F, J, 3] with its mask
  audio: np.ndarray | None  # [samples] what went into the mixture; None when unknown (mode b)
  origin: str = ""  # how the region / pose was chosen, for the page


def window_starts(num_samples: int, length: int) -> list[int]:
  """Starts of the consecutive `length`-sample windows covering num_samples."""
  return list(range(0, max(num_samples, 1), length))


def centre_frame(start: int, data_config, num_frames: int) -> int:
  """The frame at the window's centre, kept so that all T frames exist (the pipeline's rule)."""
  c = data_config
  time = (start + c.audio_length / 2) / c.sample_rate
  low = c.num_frames // 2
  high = num_frames - 1 - (c.num_frames - 1 - low)
  return int(min(max(round(time * c.fps), low), max(high, low)))


def crop(video: media.Video, centre: int, box, num_frames: int) -> np.ndarray:
  """uint8 [T, h, w, 3]: the T frames centred on `centre`, cropped to box (frames before the
  first / after the last repeat the nearest one)."""
  top, left, height, width = box
  first = centre - num_frames // 2
  frames = [video.frame(min(max(first + t, 0), video.num_frames - 1)) for t in range(num_frames)]
  return np.stack([f[top:top + height, left:left + width] for f in frames])


def normalise(crops: np.ndarray, size: int) -> np.ndarray:
  """float32 [T, S, S, 3]: resized like the pipeline (bilinear, antialias), ImageNet-normalised."""
  images = tf.image.resize(tf.constant(crops), [size, size], method="bilinear", antialias=True)
  images = images.numpy() / 255.0
  return ((images - np.asarray(schema.IMAGENET_MEAN, np.float32))
          / np.asarray(schema.IMAGENET_STD, np.float32)).astype(np.float32)


def _window(samples: np.ndarray, start: int, length: int) -> np.ndarray:
  """float32 [length] of samples from start, zero-padded past the end."""
  out = np.zeros(length, np.float32)
  piece = samples[start:start + length]
  out[:piece.shape[0]] = piece
  return out


def make_batch(sources: Sequence[Source], mixture: np.ndarray, starts: Sequence[int],
               data_config, num_classes: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(the batch contract's model keys for one example per window start, uint8 crops
  [B, N, T, h, w, 3] per source before resizing, ragged per source: an object array)."""
  c = data_config
  length, window = int(c.audio_length), int(c.pose_window)
  frames, poses, masks, waves, crops = [], [], [], [], []
  for start in starts:
    row_frames, row_poses, row_masks, row_waves, row_crops = [], [], [], [], []
    for source in sources:
      centre = centre_frame(start, c, source.video.num_frames)
      pixels = crop(source.video, centre, source.box, int(c.num_frames))
      row_crops.append(pixels)
      row_frames.append(normalise(pixels, int(c.image_size)))
      keypoints, mask = reader.pose_window(source.track, centre, window)
      row_poses.append(keypoints)
      row_masks.append(mask)
      row_waves.append(_window(source.audio, start, length) if source.audio is not None
                       else np.zeros(length, np.float32))
    frames.append(np.stack(row_frames))
    poses.append(np.stack(row_poses))
    masks.append(np.stack(row_masks))
    waves.append(np.stack(row_waves))
    holder = np.empty(len(sources), dtype=object)
    holder[:] = row_crops
    crops.append(holder)
  b, n = len(starts), len(sources)
  index = window // 2 - int(c.num_frames) // 2 + np.arange(int(c.num_frames))
  batch = dict(
      frames=np.stack(frames), pose=np.stack(poses), pose_mask=np.stack(masks),
      pose_frame_index=np.broadcast_to(index, (b, n, index.size)).astype(np.int32),
      waveform=np.stack(waves),
      mixture=np.stack([_window(mixture, s, length) for s in starts]),
      labels=np.zeros((b, n, num_classes), np.float32))
  return batch, np.stack(crops)


def make_separate_fn(trained: TrainedModel) -> Callable[[Any, dict], dict[str, jax.Array]]:
  """separate(variables, batch) -> estimates [B,N,L], masks [B,N,H,T] (probabilities),
  mix_warped [B,H,T] and, when the model exposes them, the visual attention maps of each video's
  top-scoring class [B,N,T,h,w] with the class scores [B,N,C] (jitted)."""
  config, model = trained.config, trained.model

  def separate(variables, batch):
    inputs, features = separation.model_inputs(batch, config.data)
    outputs, intermediates = model.apply(variables, inputs, train=False)
    masks = jax.nn.sigmoid(outputs["mask_logits"])
    estimates = spectral.masks_to_waveforms(
        masks, features["mix_mag"], features["mix_phase"], batch["mixture"].shape[-1],
        config.data, mask_type=config.eval.mask_type, threshold=config.eval.threshold)
    out = dict(estimates=estimates, masks=masks, mix_warped=features["mix_warped"])
    if {"visual_attention_maps", "visual_class_scores"} <= set(intermediates):
      scores = jnp.mean(intermediates["visual_class_scores"], axis=2)  # [B, N, C]
      out["attention"] = separation.class_attention(intermediates["visual_attention_maps"],
                                                    scores)
      out["class_scores"] = scores
    return out

  return jax.jit(separate)


@dataclasses.dataclass
class Separation:
  """The demo's results over the whole duration (numpy)."""
  mixture: np.ndarray  # [samples]
  estimates: np.ndarray  # [N, samples]
  masks: np.ndarray  # [N, H, frames] predicted mask probabilities (log-frequency)
  mix_warped: np.ndarray  # [H, frames]
  crops: np.ndarray  # object [N]: uint8 [T, h, w, 3] of the first window
  attention: np.ndarray | None  # [N, T, h, w] of the first window, or None
  class_scores: np.ndarray | None  # [N, C] mean over windows, or None
  num_windows: int


def separate(trained: TrainedModel, sources: Sequence[Source], mixture: np.ndarray,
             batch_size: int, first: int = 0, last: int | None = None) -> Separation:
  """Runs the model over the windows of mixture[first:last] (sample positions shared by the
  sources' audio and frames), batch_size windows at a time."""
  c = trained.config.data
  length = int(c.audio_length)
  last = int(mixture.shape[0]) if last is None else int(last)
  starts = [first + s for s in window_starts(last - first, length)]
  separate_fn = make_separate_fn(trained)
  results: dict[str, list[np.ndarray]] = {}
  first_crops = None
  for begin in range(0, len(starts), batch_size):
    group = starts[begin:begin + batch_size]
    padded = list(group) + [group[-1]] * (batch_size - len(group))  # one compiled shape
    batch, crops = make_batch(sources, mixture, padded, c, int(trained.config.model.num_classes))
    if first_crops is None:
      first_crops = crops[0]
    out = jax.device_get(separate_fn(trained.variables, batch))
    for key, value in out.items():
      results.setdefault(key, []).append(np.asarray(value)[:len(group)])
  out = {k: np.concatenate(v) for k, v in results.items()}  # [windows, ...]
  total = last - first
  estimates = out["estimates"].transpose(1, 0, 2).reshape(len(sources), -1)[:, :total]
  # Spectrogram frames of the windows side by side, the last window's padding cut off.
  keep = int(np.ceil(total / length * out["masks"].shape[-1]))
  masks = np.concatenate(list(out["masks"]), axis=-1)[..., :keep]  # [N, H, frames]
  mix_warped = np.concatenate(list(out["mix_warped"]), axis=-1)[..., :keep]  # [H, frames]
  return Separation(
      mixture=mixture[first:last].astype(np.float32), estimates=estimates.astype(np.float32),
      masks=masks,
      mix_warped=mix_warped, crops=first_crops,
      attention=out["attention"][0] if "attention" in out else None,
      class_scores=out["class_scores"].mean(axis=0) if "class_scores" in out else None,
      num_windows=len(starts))
