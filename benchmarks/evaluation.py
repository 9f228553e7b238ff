"""Speed of the separation evaluation: masks -> waveforms (unwarp + iSTFT) and BSS-eval scoring.

  python -m benchmarks.evaluation                 # 48 mixtures, N = 2
  python -m benchmarks.evaluation --size tiny     # 4 mixtures

Uses the evaluation's own pieces: spectral.masks_to_waveforms (jitted, as inside the trainer's
separate step) and evaluation.separation.score_all (a forkserver process pool over all cores, or
in-process with 1 worker). Each mixture is scored three times, as in training runs: the
separated sources, the unprocessed mixture (floor) and the ideal binary mask (ceiling). The
sources are synthetic (decaying harmonic notes plus noise, 65535 samples), the predicted masks
the ideal ones with 10 % of the bins flipped: BSS-eval's cost depends on the length and N, not
on the content.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

from benchmarks import common


def make_sources(num_mixtures: int, num_mix: int, length: int, sample_rate: int, seed: int = 0):
  """[M, N, L] float32: a note per source (random pitch, harmonics, decay) plus a little noise."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  t = np.arange(length) / sample_rate
  pitch = 110.0 * 2 ** rng.uniform(0, 3, size=(num_mixtures, num_mix, 1))
  sources = sum(np.sin(2 * np.pi * h * pitch * t) / h for h in range(1, 6))
  sources = sources * np.exp(-t * rng.uniform(0.2, 2.0, size=(num_mixtures, num_mix, 1)))
  sources = sources + 0.01 * rng.standard_normal(sources.shape)
  return (0.1 * sources).astype(np.float32)


def main() -> None:
  """Times reconstruction and scoring; prints the Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=["tiny", "cpu"],
                      help="tiny: 4 mixtures, cpu: 48")
  parser.add_argument("--mixtures", type=int, default=0, help="override the mixture count")
  parser.add_argument("--backends", nargs="+", default=["mir_eval", "fast_bss_eval"],
                      choices=["mir_eval", "fast_bss_eval"])
  parser.add_argument("--workers", nargs="+", type=int, default=[1, 0],
                      help="scoring processes to try (0: all cores)")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from configs.parts import data as data_parts  # pylint: disable=g-import-not-at-top
  from tribert_jax import spectral  # pylint: disable=g-import-not-at-top
  from tribert_jax.evaluation import separation  # pylint: disable=g-import-not-at-top

  data = data_parts.get_data_config("paper")
  num_mixtures = args.mixtures or (4 if args.size == "tiny" else 48)
  batch = min(num_mixtures, 8)
  num_mixtures -= num_mixtures % batch
  sources = make_sources(num_mixtures, data.num_mix, data.audio_length, data.sample_rate)
  mixtures = sources.sum(axis=1)
  print(f"machine: {common.machine()}; {num_mixtures} mixtures of N = {data.num_mix}, "
        f"{data.audio_length} samples", flush=True)

  @jax.jit
  def reconstruct(waveform, mixture, key):
    features = spectral.spectral_features(waveform, mixture, data)
    # A prediction near the ideal mask (10 % of bins flipped): like a trained model's, and its
    # sources keep their order, so fast_bss_eval need not fall back to mir_eval.
    flip = jax.random.uniform(key, features["gt_masks"].shape) < 0.1
    masks = jnp.where(flip, 1.0 - features["gt_masks"], features["gt_masks"])
    rebuild = functools.partial(
        spectral.masks_to_waveforms, mix_mag=features["mix_mag"],
        mix_phase=features["mix_phase"], length=mixture.shape[-1], data_config=data,
        threshold=0.5, mask_type="binary")
    return rebuild(masks), rebuild(features["gt_masks"])

  key = jax.random.PRNGKey(0)
  start = time.perf_counter()
  jax.block_until_ready(reconstruct(sources[:batch], mixtures[:batch], key))
  compile_s = time.perf_counter() - start
  predictions, ideals = [], []
  start = time.perf_counter()
  for i in range(0, num_mixtures, batch):
    p, q = jax.block_until_ready(reconstruct(sources[i:i + batch], mixtures[i:i + batch], key))
    predictions.append(np.asarray(p))
    ideals.append(np.asarray(q))
  reconstruct_s = time.perf_counter() - start
  predictions, ideals = np.concatenate(predictions), np.concatenate(ideals)
  rows = [[f"spectral features + unwarp + iSTFT (jit, batch {batch}, compile {compile_s:.1f} s)",
           "device", "", f"{num_mixtures / reconstruct_s:.1f}"]]
  for backend in args.backends:
    tasks = [(sources[m], predictions[m], mixtures[m], ideals[m], backend)
             for m in range(num_mixtures)]
    for workers in args.workers:
      count = workers or os.cpu_count() or 1
      start = time.perf_counter()
      records = separation.score_all(tasks, num_workers=workers, progress=False)
      seconds = time.perf_counter() - start
      if len(records) != num_mixtures:
        raise RuntimeError(f"scored {len(records)} of {num_mixtures} mixtures")
      rows.append(["BSS-eval x3 (separated, mixture, ideal mask)", backend, count,
                   f"{num_mixtures / seconds:.2f}"])
  print()
  print("Evaluation throughput (mixtures/s; process-pool start-up included in the scoring rows)")
  print()
  print(common.markdown(["stage", "backend", "processes", "mixtures/s"], rows))


if __name__ == "__main__":
  main()
