"""Input-pipeline throughput on SynthMUSIC, and where the STFT should run (tf.data vs JAX).

  python -m benchmarks.input_pipeline --size tiny            # tiny config shapes
  python -m benchmarks.input_pipeline                        # cpu config shapes (default)
  python -m benchmarks.input_pipeline --what stft            # tf.signal.stft vs jnp STFT
  python -m benchmarks.input_pipeline --source folder tfds    # both data sources (the default)

Prints batches/s and examples/s of the training pipeline for each num_parallel_calls tried and
each data source (config.data.source: the folder layout, and its TFDS build, made once under /tmp
with data_pipeline.loading.build_tfds); record the figures with date and machine in
benchmarks/README.md.
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


def _tfds_build(args, root: pathlib.Path) -> tuple[str, str]:
  """(tfds_name, tfds_data_dir): the given ones, or SynthMUSIC's built once under /tmp."""
  if args.tfds_name:
    return args.tfds_name, args.tfds_data_dir
  if args.root:
    raise SystemExit("--source tfds with --root needs --tfds_name and --tfds_data_dir")
  from data_pipeline.loading import build_tfds

  data_dir = "/tmp/tribert_benchmark_tfds"
  start = time.perf_counter()
  builder, _ = build_tfds.build("synthmusic", data_dir=data_dir, size=args.data_size,
                                manual_dir=str(root))
  print(f"TFDS synthmusic/{args.data_size} in {builder.data_dir} "
        f"(build or reuse: {time.perf_counter() - start:.1f} s)", flush=True)
  return f"synthmusic/{args.data_size}", data_dir


def benchmark_pipeline(args) -> None:
  """Training-pipeline throughput for several num_parallel_calls values and data sources."""
  from configs.parts import data as data_parts
  from data_pipeline.layout import reader
  from data_pipeline.loading import pipeline as loading_pipeline

  root = _dataset_root(args.root, args.data_size)
  config = data_parts.get_data_config(args.size)
  config.root = str(root)
  config.num_classes = len(reader.read_labels(root).classes)
  config.multi_source = True
  if "tfds" in args.source:
    config.tfds_name, config.tfds_data_dir = _tfds_build(args, root)
    if args.tfds_cache_mb is not None:
      config.tfds_cache_mb = args.tfds_cache_mb
  print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; config size {args.size}: batch {config.batch_size}, "
        f"N {config.num_mix}, T {config.num_frames}, S {config.image_size}, "
        f"W {config.pose_window}; data {root}"
        + (f"; tfds {config.tfds_name} cache {config.tfds_cache_mb} MiB"
           if "tfds" in args.source else ""))
  for calls in args.parallel_calls:
    config.num_parallel_calls = calls
    for source in args.source:  # alternated, so a change of machine load hits both sources
      config.source = source
      start = time.perf_counter()
      pipeline = loading_pipeline.build_train_pipeline(config, seed=0, process_index=0,
                                                       process_count=1)
      setup = time.perf_counter() - start  # index, validation / record reads, pose parsing
      iterator = iter(pipeline)
      for _ in range(args.warmup):
        next(iterator)
      start = time.perf_counter()
      for _ in range(args.batches):
        next(iterator)
      elapsed = time.perf_counter() - start
      name = "AUTOTUNE" if calls < 0 else str(calls)
      print(f"source={source:<6} num_parallel_calls={name:>8}: {args.batches / elapsed:7.2f} "
            f"batches/s {args.batches * config.batch_size / elapsed:8.1f} examples/s "
            f"(setup {setup:.1f} s)", flush=True)


def benchmark_stft(args) -> None:
  """Batch of 12 mixtures (+ N sources): tf.signal.stft in tf.data vs jnp STFT in jit (CPU)."""
  import functools

  import jax
  import numpy as np
  import tensorflow as tf

  from configs.parts import data as data_parts
  from tribert_jax import spectral

  config = data_parts.get_data_config("paper")
  batch, num_mix, length = 12, config.num_mix, config.audio_length
  rng = np.random.default_rng(0)
  waveform = (0.1 * rng.standard_normal((batch, num_mix, length))).astype(np.float32)
  mixture = waveform.sum(axis=1)
  signals = np.concatenate([mixture[:, None], waveform], axis=1)  # [B, N + 1, L]
  positions = spectral.warp_positions(512, 256)
  low = np.minimum(np.floor(positions).astype(np.int32), 510)
  frac = tf.constant((positions - low).astype(np.float32)[:, None])
  window = functools.partial(tf.signal.hann_window, periodic=True)

  def tf_features(x):
    padded = tf.pad(x, [[0, 0], [0, 0], [511, 511]], mode="REFLECT")
    spec = tf.signal.stft(padded, 1022, 256, 1022, window_fn=window, pad_end=False)
    magnitude = tf.transpose(tf.abs(spec), [0, 1, 3, 2])  # [B, N + 1, 512, 256]
    # Same two-tap bilinear warp as tribert_jax.spectral.warp.
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

  features = jax.jit(functools.partial(spectral.spectral_features, config=config))
  for _ in range(3):
    jax.block_until_ready(features(waveform, mixture))
  start = time.perf_counter()
  for _ in range(args.batches):
    jax.block_until_ready(features(waveform, mixture))
  jax_ms = (time.perf_counter() - start) / args.batches * 1e3
  stft_only = jax.jit(spectral.stft)
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
  parser.add_argument("--source", nargs="+", choices=("folder", "tfds"),
                      default=["folder", "tfds"], help="config.data.source values to time")
  parser.add_argument("--tfds_name", default="",
                      help="TFDS build of --root (default: SynthMUSIC built under /tmp)")
  parser.add_argument("--tfds_data_dir", default="")
  parser.add_argument("--tfds_cache_mb", type=int, default=None,
                      help="config.data.tfds_cache_mb (default: the config's)")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  args = parser.parse_args()
  if args.what == "pipeline":
    benchmark_pipeline(args)
  else:
    benchmark_stft(args)


if __name__ == "__main__":
  main()
