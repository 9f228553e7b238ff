"""Tests of tribert_jax.evaluation.separation / reports and spectral.masks_to_waveforms:
reconstruction, scoring protocol, skip policy and reports."""

import json
import os
import warnings

import jax
import jax.numpy as jnp
import mir_eval.separation
import ml_collections
import numpy as np
import pytest

from tribert_jax import spectral
from tribert_jax.evaluation import metrics
from tribert_jax.evaluation import reports
from tribert_jax.evaluation import separation

DATA = dict(stft_frame_length=1022, stft_hop=256)
CLASSES = ["cello", "flute", "violin"]
LENGTH = 4096  # short waveforms keep mir_eval fast


def _config(silent_policy="skip", num_workers=1):
  config = ml_collections.ConfigDict()
  config.data = ml_collections.ConfigDict(dict(num_mix=2, **DATA))
  config.eval = ml_collections.ConfigDict(dict(
      ideal_mask=True, backend="mir_eval", num_workers=num_workers, silent_policy=silent_policy,
      split="val"))
  config.eval.split = "val"
  return config


def _mir_eval(reference, estimate):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    return mir_eval.separation.bss_eval_sources(reference, estimate, compute_permutation=False)


def _batches(rng):
  """Two host batches of 2 mixtures; the last example is padding (valid = 0)."""
  batches = []
  labels = np.zeros((2, 2, 3), np.float32)
  labels[:, 0, 0] = 1  # source 0 is a cello, source 1 a flute (and violin for a duet)
  labels[:, 1, 1] = 1
  labels[1, 1, 2] = 1
  for valid in ([1.0, 1.0], [1.0, 0.0]):
    waveform = rng.standard_normal((2, 2, LENGTH)).astype(np.float32)
    batches.append(dict(waveform=waveform, mixture=waveform.sum(1), labels=labels,
                        valid=np.asarray(valid, np.float32),
                        mixture_index=np.arange(2, dtype=np.int32) + len(batches) * 2))
  return batches


def _fake_separate(noise_scale, silent_rows=()):
  """A separate_fn whose predictions are the references plus noise (rows listed: silent)."""
  def separate(variables, batch):
    del variables
    waveform = np.asarray(batch["waveform"])
    noise = np.random.default_rng(int(batch["mixture_index"][0])).standard_normal(waveform.shape)
    predictions = waveform + noise_scale * noise.astype(np.float32)
    for row in silent_rows:
      if row in batch["mixture_index"]:
        predictions[list(batch["mixture_index"]).index(row)] = 0.0
    ideal = waveform * 0.9
    zeros = np.zeros(waveform.shape[:2] + (4, 4), np.float32)
    return dict(predictions=predictions, ideal=ideal, mask_probabilities=zeros, gt_masks=zeros,
                mix_mag=zeros[:, 0])
  return separate


def _run(config, separate, batches, **kwargs):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  return separation.evaluate(separate, None, batches, lambda b: b, mesh,
                             jax.sharding.PartitionSpec("data"), config, CLASSES, progress=False,
                             **kwargs)


def test_metrics_equal_direct_mir_eval_on_the_same_waveforms():
  batches = _batches(np.random.default_rng(0))
  separate = _fake_separate(0.5)
  summary, examples = _run(_config(num_workers=2), separate, batches, num_examples_to_show=1)
  per_mixture = {"sdr": [], "sir": [], "sar": [], "mix": [], "ideal": []}
  class_sdr = {name: [] for name in CLASSES}
  for batch in batches:
    outputs = separate(None, batch)
    for b in np.flatnonzero(batch["valid"]):
      reference = batch["waveform"][b]
      sdr, sir, sar, _ = _mir_eval(reference, outputs["predictions"][b])
      per_mixture["sdr"].append(sdr.mean())
      per_mixture["sir"].append(sir.mean())
      per_mixture["sar"].append(sar.mean())
      mix = np.stack([batch["mixture"][b]] * 2)
      per_mixture["mix"].append(_mir_eval(reference, mix)[0].mean())
      per_mixture["ideal"].append(_mir_eval(reference, outputs["ideal"][b])[0].mean())
      for n in range(2):
        for c in np.flatnonzero(batch["labels"][b, n]):
          class_sdr[CLASSES[c]].append(sdr[n])
  assert summary["num_mixtures"] == summary["num_scored"] == 3  # the padding row is ignored
  # rtol 1e-9, not bit equality: the pool's workers run single-threaded BLAS (scoring_pool), so
  # their solves sum in another order than this process's (~5e-12 relative on a 112 dB SIR).
  np.testing.assert_allclose(summary["sdr"], np.mean(per_mixture["sdr"]), rtol=1e-9)
  np.testing.assert_allclose(summary["sdr_median"], np.median(per_mixture["sdr"]), rtol=1e-9)
  np.testing.assert_allclose(summary["sir"], np.mean(per_mixture["sir"]), rtol=1e-9)
  np.testing.assert_allclose(summary["sar"], np.mean(per_mixture["sar"]), rtol=1e-9)
  np.testing.assert_allclose(summary["mixture_sdr"], np.mean(per_mixture["mix"]), rtol=1e-9)
  np.testing.assert_allclose(summary["ideal_mask_sdr"], np.mean(per_mixture["ideal"]),
                             rtol=1e-9)
  np.testing.assert_allclose(summary["sdr_improvement"],
                             np.mean(per_mixture["sdr"]) - np.mean(per_mixture["mix"]),
                             rtol=1e-9)
  for name in CLASSES:
    assert summary["per_class_sdr"][name]["count"] == len(class_sdr[name])
    np.testing.assert_allclose(summary["per_class_sdr"][name]["sdr"], np.mean(class_sdr[name]))
  assert len(examples) == 1 and examples[0]["predictions"].shape == (2, LENGTH)


def test_silent_predictions_are_skipped_and_counted_or_raise():
  batches = _batches(np.random.default_rng(1))
  summary, _ = _run(_config(), _fake_separate(0.5, silent_rows=(1,)), batches)
  assert summary["num_mixtures"] == 3 and summary["num_scored"] == 2
  assert summary["skipped"] == {"silent_reference": 0, "silent_prediction": 1}
  silent_reference = [dict(b) for b in batches]
  silent_reference[0]["waveform"] = silent_reference[0]["waveform"].copy()
  silent_reference[0]["waveform"][0, 1] = 0.0
  summary, _ = _run(_config(), _fake_separate(0.0), silent_reference)
  assert summary["skipped"]["silent_reference"] == 1
  with pytest.raises(ValueError, match=r"mixture row 1 .*silent prediction"):
    _run(_config(silent_policy="error"), _fake_separate(0.5, silent_rows=(1,)), batches)


def test_reports_hold_the_summary(tmp_path):
  summary, _ = _run(_config(), _fake_separate(0.3), _batches(np.random.default_rng(2)))
  json_path, markdown_path = reports.write_report(summary, str(tmp_path), "val_step_7")
  assert json.loads(open(json_path).read())["sdr"] == pytest.approx(summary["sdr"])
  markdown = open(markdown_path).read()
  assert f"| separated (mean) | {summary['sdr']:.2f} |" in markdown
  assert "| cello |" in markdown and "3 of 3 mixtures scored" in markdown
  scalars = reports.scalar_metrics(summary)
  assert scalars["sdr"] == summary["sdr"] and "class_sdr/cello" in scalars


def test_binary_and_ratio_masks_reconstruct_like_the_protocol():
  rng = np.random.default_rng(3)
  mixture = jnp.asarray(rng.standard_normal((1, 65535)), jnp.float32)
  spectrum = spectral.stft(mixture)
  mix_mag, mix_phase = jnp.abs(spectrum), jnp.angle(spectrum)
  ones = jnp.full((1, 2, 256, 256), 0.6)
  binary = spectral.masks_to_waveforms(ones, mix_mag, mix_phase, 65535, DATA, "binary", 0.5)
  # 0.6 > 0.5 everywhere: both sources are the whole mixture.
  np.testing.assert_allclose(binary[0, 0], mixture[0], atol=1e-3)
  ratio = spectral.masks_to_waveforms(ones, mix_mag, mix_phase, 65535, DATA, "ratio", 0.5)
  np.testing.assert_allclose(ratio[0, 1], 0.6 * mixture[0], atol=1e-3)
  below = spectral.masks_to_waveforms(ones * 0.5, mix_mag, mix_phase, 65535, DATA, "binary", 0.6)
  assert float(jnp.abs(below).max()) == 0.0
  with pytest.raises(ValueError, match="mask_type"):
    spectral.masks_to_waveforms(ones, mix_mag, mix_phase, 65535, DATA, "soft", 0.5)


def test_scoring_pool_workers_share_the_cores_for_blas():
  # Every worker's OpenBLAS starting one thread per core oversubscribed the cores (~3x slower
  # scoring on 2 cores); each worker gets cores // workers BLAS threads.
  workers = 2
  with separation.scoring_pool(workers) as pool:
    threads = pool.map(metrics.blas_threads, range(2 * workers), chunksize=1)
  assert threads == [max(1, (os.cpu_count() or 1) // workers)] * (2 * workers)
