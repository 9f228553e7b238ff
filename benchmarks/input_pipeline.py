"""Input-pipeline throughput on SynthMUSIC, and where the STFT should run (tf.data vs JAX).

  python -m benchmarks.input_pipeline --size tiny            # tiny config shapes
  python -m benchmarks.input_pipeline                        # cpu config shapes (default)
  python -m benchmarks.input_pipeline --what stft            # tf.signal.stft vs jnp STFT

Prints batches/s and examples/s of the training pipeline for each num_parallel_calls tried;
record the figures with date and machine in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _dataset_root(path: str | None, data_size: str) -> pathlib.Path:
  """An existing dataset root, or a SynthMUSIC one generated (once) under /tmp."""
  if path:
    return pathlib.Path(path)
  from data_pipeline import synthmusic

  root = pathlib.Path(f"/tmp/tribert_benchmark_synthmusic_{data_size}")
  if not (root / "labels.json").is_file():
    print(f"generating SynthMUSIC {data_size} in {root} ...", flush=True)
    synthmusic.generate(root, size=data_size, seed=0, progress=False)
  return root


def benchmark_pipeline(args) -> None:
  """Training-pipeline throughput for several num_parallel_calls values."""
  from configs.parts import data as data_parts
  from data_pipeline import dataset_index
  from data_pipeline import input_pipeline

  root = _dataset_root(args.root, args.data_size)
  config = data_parts.get_data_config(args.size)
  config.root = str(root)
  config.num_classes = len(dataset_index.read_labels(root).classes)
  config.multi_source = True
  print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; config size {args.size}: batch {config.batch_size}, "
        f"N {config.num_mix}, T {config.num_frames}, S {config.image_size}, "
        f"W {config.pose_window}; data {root}")
  for calls in args.parallel_calls:
    config.num_parallel_calls = calls
    pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=0,
                                                   process_count=1)
    iterator = iter(pipeline)
    for _ in range(args.warmup):
      next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
      next(iterator)
    elapsed = time.perf_counter() - start
    name = "AUTOTUNE" if calls < 0 else str(calls)
    print(f"num_parallel_calls={name:>8}: {args.batches / elapsed:7.2f} batches/s "
          f"{args.batches * config.batch_size / elapsed:8.1f} examples/s", flush=True)


def benchmark_stft(args) -> None:
  """Batch of 12 mixtures (+ N sources): tf.signal.stft in tf.data vs jnp STFT in jit (CPU)."""
  import functools

  import jax
  import numpy as np
  import tensorflow as tf

  from configs.parts import data as data_parts
  from tribert_jax import audio

  config = data_parts.get_data_config("paper")
  batch, num_mix, length = 12, config.num_mix, config.audio_length
  rng = np.random.default_rng(0)
  waveform = (0.1 * rng.standard_normal((batch, num_mix, length))).astype(np.float32)
  mixture = waveform.sum(axis=1)
  signals = np.concatenate([mixture[:, None], waveform], axis=1)  # [B, N + 1, L]
  positions = audio.warp_positions(512, 256)
  low = np.minimum(np.floor(positions).astype(np.int32), 510)
  frac = tf.constant((positions - low).astype(np.float32)[:, None])
  window = functools.partial(tf.signal.hann_window, periodic=True)

  def tf_features(x):
    padded = tf.pad(x, [[0, 0], [0, 0], [511, 511]], mode="REFLECT")
    spec = tf.signal.stft(padded, 1022, 256, 1022, window_fn=window, pad_end=False)
    magnitude = tf.transpose(tf.abs(spec), [0, 1, 3, 2])  # [B, N + 1, 512, 256]
    # Same two-tap bilinear warp as tribert_jax.audio.warp.
    return (tf.gather(magnitude, low, axis=2) * (1.0 - frac)
            + tf.gather(magnitude, low + 1, axis=2) * frac)

  dataset = tf.data.Dataset.from_tensors(signals).repeat().map(tf_features).prefetch(1)
  iterator = iter(dataset)
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(args.batches):
    next(iterator)
  tf_ms = (time.perf_counter() - start) / args.batches * 1e3

  features = jax.jit(functools.partial(audio.spectral_features, config=config))
  for _ in range(3):
    jax.block_until_ready(features(waveform, mixture))
  start = time.perf_counter()
  for _ in range(args.batches):
    jax.block_until_ready(features(waveform, mixture))
  jax_ms = (time.perf_counter() - start) / args.batches * 1e3
  stft_only = jax.jit(audio.stft)
  jax.block_until_ready(stft_only(signals))
  start = time.perf_counter()
  for _ in range(args.batches):
    jax.block_until_ready(stft_only(signals))
  jax_stft_ms = (time.perf_counter() - start) / args.batches * 1e3
  print(f"batch {batch} mixtures, N={num_mix}: {batch * (num_mix + 1)} STFTs of {length} samples, "
        f"{os.cpu_count()} cores")
  print(f"tf.signal.stft + warp inside tf.data:            {tf_ms:7.1f} ms / batch")
  print(f"jnp stft + warp + masks (spectral_features), jit: {jax_ms:7.1f} ms / batch")
  print(f"jnp stft only, jit:                               {jax_stft_ms:7.1f} ms / batch")
  print("host -> device bytes per batch: waveforms "
        f"{signals.nbytes / 2**20:.1f} MiB vs features "
        f"{(batch * (num_mix + 1) * 256 * 256 + batch * 2 * 512 * 256) * 4 / 2**20:.1f} MiB")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--what", choices=("pipeline", "stft"), default="pipeline")
  parser.add_argument("--size", choices=("paper", "cpu", "tiny"), default="cpu",
                      help="config size whose data shapes are used")
  parser.add_argument("--root", default=None, help="dataset root (default: SynthMUSIC in /tmp)")
  parser.add_argument("--data_size", default="tiny", help="SynthMUSIC size to generate")
  parser.add_argument("--parallel_calls", type=int, nargs="+", default=[1, 2, -1],
                      help="num_parallel_calls values to try (-1 = AUTOTUNE)")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()
  if args.what == "pipeline":
    benchmark_pipeline(args)
  else:
    benchmark_stft(args)


if __name__ == "__main__":
  main()
