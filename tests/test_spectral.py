"""Tests of tribert_jax.spectral: STFT / iSTFT, log-frequency warp, GT masks, IBM ceiling."""

import functools

import jax
import numpy as np
import pytest

from configs.parts import data as data_parts
from tests import layout_fixtures
from tribert_jax import spectral
from tribert_jax.evaluation import metrics

LENGTH = 65535


@pytest.fixture(scope="module")
def librosa_module():
  """librosa, warmed once (its first stft call compiles numba kernels)."""
  import librosa
  librosa.stft(np.zeros(4096, np.float32), n_fft=1022, hop_length=256)
  return librosa


@pytest.fixture(scope="module")
def config():
  return data_parts.get_data_config("tiny")


def _noise(shape, seed=0):
  return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _numpy_warp(spectrogram: np.ndarray) -> np.ndarray:
  """Independent warp: np.interp at the Sound-of-Pixels grid along frequency, [..., F, T]."""
  num_linear = spectrogram.shape[-2]
  u = np.linspace(-1.0, 1.0, 256)  # warpgrid's y in [-1, 1]
  grid = (np.power(21.0, (u + 1) / 2) - 11) / 10  # Sound-of-Pixels warp=True
  positions = (grid + 1) / 2 * (num_linear - 1)  # align_corners=True
  moved = np.moveaxis(spectrogram, -2, -1)
  out = np.apply_along_axis(lambda col: np.interp(positions, np.arange(num_linear), col), -1, moved)
  return np.moveaxis(out, -1, -2)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_matches_librosa(librosa_module, pad_mode):
  signal = _noise(LENGTH)
  expected = librosa_module.stft(signal, n_fft=1022, hop_length=256, center=True,
                                 pad_mode=pad_mode)
  got = np.asarray(jax.jit(functools.partial(spectral.stft, pad_mode=pad_mode))(signal))
  assert got.shape == (512, 256) == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())


def test_istft_round_trip_snr():
  signal = _noise((2, 3, LENGTH), seed=1)
  spec = jax.jit(spectral.stft)(signal)
  assert spec.shape == (2, 3, 512, 256)
  back = np.asarray(jax.jit(lambda s: spectral.istft(s, LENGTH))(spec))
  snr = 10 * np.log10(np.sum(signal ** 2) / np.sum((signal - back) ** 2))
  assert snr > 60, snr


def test_warp_positions_match_sound_of_pixels_and_invert():
  positions = spectral.warp_positions(512, 256)
  assert positions[0] == 0 and np.isclose(positions[-1], 511)
  assert np.all(np.diff(positions) > 0)
  # Sound-of-Pixels' inverse grid (warp=False) read at the warp positions gives back 0..255, and
  # at the integer linear bins it is what unwarp_positions uses.
  def inverse_grid(linear_position):
    y = linear_position / 511 * 2 - 1  # align_corners=True, linear axis in [-1, 1]
    return (np.log(y * 10 + 11) / np.log(21) * 2 - 1 + 1) / 2 * 255
  np.testing.assert_allclose(inverse_grid(positions), np.arange(256), atol=1e-9)
  np.testing.assert_allclose(spectral.unwarp_positions(512, 256), inverse_grid(np.arange(512)),
                             atol=1e-9)
  spectrogram = np.abs(_noise((512, 256), seed=2))
  np.testing.assert_allclose(np.asarray(spectral.warp(spectrogram)), _numpy_warp(spectrogram),
                             rtol=1e-5, atol=1e-6)


def test_warp_then_unwarp_preserves_where_invertible():
  # A smooth spectrogram (period 16 linear bins) varying over time.
  bins = np.arange(512)[:, None]
  frames = np.arange(256)[None, :]
  spectrogram = (2.0 + np.sin(2 * np.pi * bins / 16.0 + frames / 50.0)).astype(np.float32)
  back = np.asarray(spectral.unwarp(spectral.warp(spectrogram)))
  assert back.shape == (512, 256)
  error = np.abs(back - spectrogram)
  invertible = np.flatnonzero(np.diff(spectral.warp_positions()) <= 1.0)
  limit = int(np.floor(spectral.warp_positions()[invertible[-1]]))  # last linear bin covered densely
  assert 50 <= limit <= 60
  # Only the linear-interpolation error of a curved spectrum remains (~3 % of the amplitude).
  assert error[:limit].max() < 0.04
  # Above it the warp subsamples (up to 6.4 linear bins per warped bin): the signal is lost.
  assert error[300:].max() > 0.5


def test_spectral_features_match_numpy(librosa_module, config):
  rng = np.random.default_rng(3)
  waveform = np.stack([
      np.stack([layout_fixtures.tone(["cello"], LENGTH), layout_fixtures.tone(["violin"], LENGTH)]),
      _noise((2, LENGTH), seed=4)]) / 2  # [B=2, N=2, L]
  waveform = (waveform * rng.uniform(0.5, 1.5, (2, 2, 1))).astype(np.float32)
  mixture = waveform.sum(axis=1)
  features = jax.jit(functools.partial(spectral.spectral_features, config=config))(waveform, mixture)
  shapes = {k: v.shape for k, v in features.items()}
  assert shapes == dict(mix_mag=(2, 512, 256), mix_phase=(2, 512, 256), mix_warped=(2, 256, 256),
                        source_warped=(2, 2, 256, 256), gt_masks=(2, 2, 256, 256),
                        weight=(2, 256, 256))
  stft = functools.partial(librosa_module.stft, n_fft=1022, hop_length=256, pad_mode="reflect")
  mix_mag = np.abs(stft(mixture))
  mix_warped = _numpy_warp(mix_mag) + 1e-10
  source_warped = _numpy_warp(np.abs(stft(waveform)))
  expected_masks = (source_warped > 0.5 * mix_warped[:, None]).astype(np.float32)
  expected_weight = np.clip(np.log1p(mix_warped), 1e-3, 10.0)
  np.testing.assert_allclose(features["mix_mag"], mix_mag, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(features["mix_warped"], mix_warped, rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(features["weight"], expected_weight, rtol=1e-3, atol=1e-4)
  got_masks = np.asarray(features["gt_masks"])
  assert set(np.unique(got_masks)) <= {0.0, 1.0}
  # Masks agree except for bins within float32 error of the 0.5 threshold (in the tone example
  # that includes the near-silent bins between the tones).
  scale = mix_warped.max(axis=(1, 2))[:, None, None, None]  # [B, 1, 1, 1]
  margin = np.abs(source_warped - 0.5 * mix_warped[:, None]) > 1e-4 * scale
  np.testing.assert_array_equal(got_masks[margin], expected_masks[margin])
  assert margin[1].mean() > 0.99  # the noise example: nearly every bin is compared
  assert expected_masks[0][margin[0]].sum() > 100  # the tone example has mask bins set


@pytest.mark.parametrize("num_mix", [2, 3])
def test_ideal_binary_mask_ceiling(config, num_mix):
  names = ["cello", "trumpet", "violin"][:num_mix]
  sources = np.stack([layout_fixtures.tone([n], LENGTH, phase=i) for i, n in enumerate(names)])
  waveform = (sources / num_mix)[None].astype(np.float32)  # [1, N, L]
  mixture = waveform.sum(axis=1)

  @jax.jit
  def separate(waveform, mixture):
    features = spectral.spectral_features(waveform, mixture, config)
    return spectral.masks_to_waveforms(features["gt_masks"], features["mix_mag"],
                                       features["mix_phase"], LENGTH, config)

  estimate = np.asarray(separate(waveform, mixture))[0]
  assert estimate.shape == (num_mix, LENGTH)
  ideal = metrics.bss_eval_sources(waveform[0], estimate)
  floor = metrics.bss_eval_sources(waveform[0], np.repeat(mixture, num_mix, axis=0))
  assert ideal.sdr.mean() > 15, ideal.sdr
  assert floor.sdr.mean() < 2, floor.sdr
