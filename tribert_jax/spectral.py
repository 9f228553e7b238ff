"""Spectral ops in JAX: STFT / iSTFT, Sound-of-Pixels log-frequency warp, GT masks, mask ->
waveform reconstruction.

Everything here is jit-able and runs on the device inside the train / eval step, so the input
pipeline only ships waveforms (benchmarks/README.md has the measurement behind that choice).

Conventions (binding, see the batch contract):
  * STFT: periodic Hann window of n_fft = 1022 samples, hop 256, centre=True with reflect
    padding of n_fft // 2 on both sides (librosa's centre convention; librosa < 0.10 padded
    with "reflect" by default, >= 0.10 pads with zeros: `pad_mode` chooses). 65535 samples ->
    [512 freq, 256 time]; spectrograms are laid out [..., freq, time] everywhere.
  * Log-frequency warp (Sound-of-Pixels `warpgrid` + `grid_sample(align_corners=True)`):
    warped bin i in [0, 255] samples the linear-frequency axis at the fractional bin
        f(i) = (F - 1) * (21 ** (i / (H - 1)) - 1) / 20,     F = 512 linear bins, H = 256,
    with linear interpolation between the two neighbouring linear bins (time is untouched).
    f(0) = 0 (DC) and f(H - 1) = F - 1 (Nyquist); the spacing grows geometrically, so low
    frequencies get several warped bins per linear bin and high ones are subsampled.
  * Unwarp is the inverse interpolation: linear bin k reads the warped axis at
        i(k) = (H - 1) * log(1 + 20 k / (F - 1)) / log(21)        (i(f(x)) = x exactly)
    with linear interpolation. Where the warp is invertible, i.e. where warped bins are denser
    than linear ones (df/di < 1: i < ~99.5, linear bins 0..58, up to ~630 Hz at 11025 Hz),
    unwarp(warp(x)) recovers x up to the linear-interpolation error (exact where x is linear
    across neighbouring bins); above that the warp averages nothing and drops bins, so unwarp
    can only interpolate between the kept samples.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

# Sound-of-Pixels warp base: the grid is 21 ** u over u in [0, 1], rescaled to [0, 1].
_WARP_BASE = 21.0


def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window (scipy `get_window('hann', n, fftbins=True)`, librosa's default)."""
  n = np.arange(n_fft)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def num_stft_frames(length: int, hop: int) -> int:
  """Number of centred STFT frames for `length` samples (librosa: 1 + length // hop)."""
  return 1 + length // hop


def stft(waveform: jax.Array, n_fft: int = 1022, hop: int = 256,
         pad_mode: str = "reflect") -> jax.Array:
  """Complex STFT [..., L] -> [..., n_fft // 2 + 1, 1 + L // hop] (freq first), centred."""
  length = waveform.shape[-1]
  num_frames = num_stft_frames(length, hop)
  pad = n_fft // 2
  widths = [(0, 0)] * (waveform.ndim - 1) + [(pad, pad)]
  padded = jnp.pad(waveform, widths, mode=pad_mode)  # [..., L + n_fft]
  # Gather overlapping frames: [num_frames, n_fft] sample indices into the padded signal (a
  # gather measured ~2x faster on XLA:CPU than slicing hop-sized blocks and concatenating).
  index = (np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :]).astype(np.int32)
  frames = padded[..., index] * hann_window(n_fft)  # [..., time, n_fft]
  spectrum = jnp.fft.rfft(frames, n=n_fft, axis=-1)  # [..., time, freq]
  return jnp.swapaxes(spectrum, -1, -2)  # [..., freq, time]


@functools.lru_cache(maxsize=8)
def _window_sum_square(n_fft: int, hop: int, num_frames: int) -> np.ndarray:
  """Overlap-added squared window over the padded signal, used to normalise the iSTFT."""
  window = hann_window(n_fft).astype(np.float64)
  total = np.zeros(n_fft + hop * (num_frames - 1))
  for t in range(num_frames):
    total[t * hop:t * hop + n_fft] += window ** 2
  return total


def istft(spectrogram: jax.Array, length: int, n_fft: int = 1022, hop: int = 256) -> jax.Array:
  """Inverse of `stft` (weighted overlap-add) [..., freq, time] -> [..., length]."""
  num_frames = spectrogram.shape[-1]
  frames = jnp.fft.irfft(jnp.swapaxes(spectrogram, -1, -2), n=n_fft, axis=-1)  # [..., time, n_fft]
  frames = frames * hann_window(n_fft)
  padded_length = n_fft + hop * (num_frames - 1)
  index = (np.arange(num_frames)[:, None] * hop + np.arange(n_fft)[None, :]).reshape(-1)
  batch_shape = frames.shape[:-2]
  flat = frames.reshape(batch_shape + (num_frames * n_fft,))
  signal = jnp.zeros(batch_shape + (padded_length,), frames.dtype).at[..., index].add(flat)
  norm = _window_sum_square(n_fft, hop, num_frames)
  # Where the window sum is ~0 (never inside the trimmed range for hop <= n_fft / 2) keep 1.
  norm = np.where(norm > 1e-8, norm, 1.0).astype(np.float32)
  signal = signal / norm
  pad = n_fft // 2
  signal = signal[..., pad:pad + length]
  short = length - signal.shape[-1]
  if short > 0:  # requested length beyond the frames' support: zeros, like librosa
    signal = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, short)])
  return signal


def warp_positions(num_linear: int = 512, num_warped: int = 256) -> np.ndarray:
  """Fractional linear bin f(i) read by each warped bin i (see module docstring)."""
  u = np.arange(num_warped, dtype=np.float64) / (num_warped - 1)
  return (num_linear - 1) * (_WARP_BASE ** u - 1.0) / (_WARP_BASE - 1.0)


def unwarp_positions(num_linear: int = 512, num_warped: int = 256) -> np.ndarray:
  """Fractional warped bin i(k) read by each linear bin k: the inverse map of `warp_positions`."""
  k = np.arange(num_linear, dtype=np.float64)
  return (num_warped - 1) * np.log1p((_WARP_BASE - 1.0) * k / (num_linear - 1)) / np.log(_WARP_BASE)


@functools.lru_cache(maxsize=8)
def _taps(positions: tuple[float, ...], num_in: int) -> tuple[np.ndarray, np.ndarray]:
  """(low index, fraction) of linear interpolation at fractional positions."""
  positions = np.clip(np.asarray(positions), 0.0, num_in - 1)
  low = np.minimum(np.floor(positions).astype(np.int32), num_in - 2)
  return low, (positions - low).astype(np.float32)


def _interpolate(x: jax.Array, positions: np.ndarray) -> jax.Array:
  """Linear interpolation of x [..., F, T] along F at fractional positions -> [..., len, T]."""
  low, frac = _taps(tuple(positions.tolist()), x.shape[-2])
  # Two gathers instead of a [len, F] matmul: the interpolation matrix has 2 non-zeros per row.
  return x[..., low, :] * (1.0 - frac)[:, None] + x[..., low + 1, :] * frac[:, None]


def warp(spectrogram: jax.Array, num_warped: int = 256) -> jax.Array:
  """Log-frequency warp [..., 512, T] -> [..., 256, T] (bilinear along frequency)."""
  return _interpolate(spectrogram, warp_positions(spectrogram.shape[-2], num_warped))


def unwarp(warped: jax.Array, num_linear: int = 512) -> jax.Array:
  """Inverse log-frequency warp [..., 256, T] -> [..., 512, T] (bilinear along frequency)."""
  return _interpolate(warped, unwarp_positions(num_linear, warped.shape[-2]))


def spectral_features(waveform: jax.Array, mixture: jax.Array,
                      config: Mapping[str, Any] | Any) -> dict[str, jax.Array]:
  """Mix-and-Separate spectral inputs and targets from waveforms [B,N,L] and mixture [B,L].

  `config` is `config.data` (keys stft_frame_length, stft_hop, stft_pad_mode, warped_freq_bins,
  mask_threshold, weight_min, weight_max, magnitude_floor). Returns
    mix_mag [B,F,T], mix_phase [B,F,T]     linear-frequency mixture STFT (F = 512, T = 256)
    mix_warped [B,H,T]                     warped mixture magnitude + magnitude_floor (H = 256)
    source_warped [B,N,H,T]                warped source magnitudes
    gt_masks [B,N,H,T]  float 0/1          source_warped > mask_threshold * mix_warped
    weight [B,H,T]                         clip(log1p(mix_warped), weight_min, weight_max)
  The same binary rule is used for every N (Sound-of-Pixels `binary_mask`); for N > 2 masks can
  overlap or leave bins unassigned, as in Sound-of-Pixels.
  """
  n_fft = config["stft_frame_length"]
  hop = config["stft_hop"]
  pad_mode = config["stft_pad_mode"]
  num_warped = config["warped_freq_bins"]
  waveform = jnp.asarray(waveform, jnp.float32)
  mixture = jnp.asarray(mixture, jnp.float32)
  mix_spec = stft(mixture, n_fft, hop, pad_mode)  # [B, F, T] complex
  mix_mag = jnp.abs(mix_spec)
  mix_phase = jnp.angle(mix_spec)
  source_mag = jnp.abs(stft(waveform, n_fft, hop, pad_mode))  # [B, N, F, T]
  # Sound-of-Pixels adds a tiny floor to the mixture so that log(mix) stays finite.
  mix_warped = warp(mix_mag, num_warped) + config["magnitude_floor"]  # [B, H, T]
  source_warped = warp(source_mag, num_warped)  # [B, N, H, T]
  gt_masks = (source_warped > config["mask_threshold"] * mix_warped[:, None]).astype(jnp.float32)
  weight = jnp.clip(jnp.log1p(mix_warped), config["weight_min"], config["weight_max"])
  return dict(mix_mag=mix_mag, mix_phase=mix_phase, mix_warped=mix_warped,
              source_warped=source_warped, gt_masks=gt_masks, weight=weight)


def masks_to_waveforms(warped_masks: jax.Array, mix_mag: jax.Array, mix_phase: jax.Array,
                       length: int, data_config: Mapping[str, Any] | Any,
                       mask_type: str = "ratio", threshold: float | None = None) -> jax.Array:
  """Waveforms [B,N,L] from warped masks [B,N,H,T] and the mixture STFT [B,F,T]: un-warp, then
  (mask_type "binary") threshold at `threshold` or (mask_type "ratio") use as is, apply to the
  mixture magnitude with the mixture phase, iSTFT. The one mask -> waveform path."""
  linear = unwarp(warped_masks, mix_mag.shape[-2])  # [B, N, F, T]
  if mask_type == "binary":
    if threshold is None:
      raise ValueError("mask_type 'binary' needs a threshold (config.eval.threshold)")
    linear = (linear > threshold).astype(mix_mag.dtype)
  elif mask_type != "ratio":
    raise ValueError(f"config.eval.mask_type={mask_type!r}: expected 'binary' or 'ratio'")
  spectrum = linear * mix_mag[:, None] * jnp.exp(1j * mix_phase[:, None])  # [B, N, F, T]
  return istft(spectrum, length, data_config["stft_frame_length"], data_config["stft_hop"])
