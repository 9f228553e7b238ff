"""tf.data Mix-and-Separate input pipeline: host batches of N-video examples as numpy dicts.

Batch contract (the one place every key is documented; B = host batch = global batch divided by
the number of processes, N = data.num_mix, T = data.num_frames, S = data.image_size, P =
data.max_persons (2), W = data.pose_window, J = 68 joints, L = data.audio_length (65535),
C = data.num_classes):
  frames           float32 [B, N, T, S, S, 3]  RGB, (x / 255 - ImageNet mean) / ImageNet std
  pose             float32 [B, N, P, W, J, 3]  x / frame width, y / frame height in [0, 1],
                                              AlphaPose confidence; zeros ONLY where pose_mask == 0
  pose_mask        float32 [B, N, P, W]        1 where that person was detected in that frame;
                                              window positions before the first / after the last
                                              frame of the clip are 0 too, and every position of
                                              a clip without pose file (data.require_pose False)
  pose_frame_index int32   [B, N, T]           position of each RGB frame inside the pose window
                                              (W // 2 - T // 2 + t: the window is centred)
  pose_features    float32 [B, N, T, P, J*C]   only with config.data.pose_features_dir: the
                                              frozen ST-GCN's features at the RGB frames
                                              (data_pipeline/loading/pose_features.py)
  labels           float32 [B, N, C]           multi-hot classes of each video (duets: two)
  waveform         float32 [B, N, L]           each video's audio crop after the mixing scale
  mixture          float32 [B, L]              sum over N of waveform
  valid            float32 [B]                 1 for real examples, 0 for evaluation padding
  clip_index       int32   [B, N]              0-based data rows of index/<split>.csv
  mixture_index    int32   [B]                 0-based row of the mixture list (eval) or
                                              position in the clip list (clips); -1 in
                                              training and for padding
  clip_ids         str     [B, N]              HOST-ONLY, only with data.with_clip_ids: the
                                              index `id` of each video (padding repeats a real
                                              example's ids), so the loop can name the clips of
                                              a batch that went non-finite; pop it before
                                              sending the batch to the devices
Spectral features (STFT, log-frequency warp, GT masks, loss weight) are computed from
waveform / mixture on the device by tribert_jax.spectral.

Protocol:
  * Time alignment: a crop of L samples starts at sample s (uniform over the clip in training,
    centred in evaluation); its centre time t = (s + L / 2) / sample_rate picks the centre frame
    c = round(t * fps) (frame file k, 1-based, shows time (k - 1) / fps); the T frames are
    c - T // 2 ... c + T - 1 - T // 2 and the pose window is c - W // 2 ... c - W // 2 + W - 1.
    Crops are drawn only where both audio and frames exist.
  * Mixing (Sound-of-Pixels): training multiplies each source by a gain ~ U[1 - j, 1 + j]
    (j = volume_jitter) and clips to [-1, 1]; then every source is divided by N and
    mixture = sum of the N scaled sources, so waveform holds exactly what was mixed.
  * Frames: training takes one random resized crop (area / aspect ranges from the config) per
    video, shared by its T frames, and a horizontal flip with p = 0.5; a flip also mirrors the
    pose (x -> 1 - x) and swaps left / right joints, so the modalities stay consistent.
    Pose stays in full-frame coordinates (crops are an appearance augmentation).
    Evaluation takes the central square of the frame. Both resize to S x S (bilinear, antialias).
  * Training: infinite. Each epoch visits every clip of this host once as the anchor (shuffled
    with the seed and epoch); its N - 1 partners are drawn uniformly from this host's clips whose
    label sets are disjoint from the ones already chosen. Solos only, or solos and duets when
    data.multi_source. Batches use drop_remainder (the stream is infinite, nothing is lost).
  * Evaluation: index/<split>_mixtures_n<N>.csv, every mixture exactly once, centred crops, no
    augmentation; the last batch of every host is padded (copies of a real example with
    valid = 0, mixture_index = -1) so all hosts run the same number of batches.
  * Clips (build_clip_pipeline, e.g. for embedding export): every clip of index/<split>.csv
    exactly once (duets left out when solos_only) as a one-video example, N = 1 whatever
    data.num_mix is (N axes of size 1, mixture == waveform[:, 0], the unscaled centred crop).
    It is the evaluation pass above run on the list of one-clip "mixtures" (same code:
    centred crops, no augmentation, data.eval_batch_size, padding, host split, bad clips);
    clip_index holds the clip's index row and mixture_index its position in the clip list
    (== the row unless solos_only). No mixture file is read.
  * Hosts: training clip list and evaluation mixture / clip list are split round-robin over
    (process_index, process_count); each host yields global batch // process_count examples.
  * Determinism: all randomness is drawn in numpy from (seed, process_index, epoch, position)
    into a per-example plan; the tf.data map is a pure function of the plan and runs with
    deterministic=True, so the same seed gives the same batches for any parallelism.
  * Pose: a clip whose pose file detects nobody in any frame is masked throughout and counted
    (stats.clips_without_detection). data.require_pose (default True) makes a clip without pose
    file a bad clip; False (models that do not read pose: Sound-of-Pixels, TriBERT with
    model.pose.enabled False; tribert_jax/validation.py refuses it for the others) accepts it
    with an all-zero pose_mask and counts it (stats.clips_without_pose, logged as "clips without
    pose: K"). The TFDS source refuses require_pose False (its builds hold only clips with pose).
  * Bad clips (missing / unreadable / short files, wrong sample rate, missing frames or pose;
    NaN / Inf or silent audio, NaN / Inf pose keypoints, any frame of the clip that does not
    decode) are found up front by layout.reader.validate_clip (content checks cached in
    data.validation_cache by file size and mtime): BadClipError naming the file, or when
    data.skip_bad_clips, skipped and counted in Pipeline.stats (a mixture with a bad clip is
    skipped and counted; in the clip pipeline a bad clip also counts as a skipped mixture).
    A file that breaks after validation fails inside tf.data; the Pipeline traces the failing
    example back to its files (stream_errors.py) and raises BadClipError naming the file. With
    data.skip_bad_clips the training stream instead drops that example and counts it
    (stats.skipped_examples; the clip in skipped_clips and bad_files); evaluation passes always
    raise (dropping would desynchronise the hosts' batch counts).
  * Sources (config.data.source): "folder" reads the layout under data.root; "tfds" reads the
    TFDS build of the same layout (data_pipeline/loading/tfds_builders.py; data.tfds_name,
    data.tfds_data_dir) by random access into its ArrayRecord files. Only the per-clip loaders
    differ (audio crop, JPEG bytes, pose track); planning, host slicing (round-robin over the
    index rows, not tfds.even_splits), decoding and augmentation are shared, so both sources give
    identical batches for the same clips and seed. The TFDS path checks the crop lengths exactly
    like validate_clip; clips left out of a build with skip_bad_clips count as bad clips here.
    A TFDS read parses a clip's whole record (all its frames and audio), so the store keeps the
    last data.tfds_cache_mb MiB of clips (audio + JPEG bytes) in an LRU cache, filled while
    the clips are validated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from absl import logging

import ml_collections
import numpy as np
import tensorflow as tf

from data_pipeline.layout import schema
from data_pipeline.loading import decode, plans, sources, stream_errors
from data_pipeline.loading.decode import IMAGENET_MEAN, IMAGENET_STD
from data_pipeline.loading.sources import PipelineStats

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Pipeline", "PipelineStats", "build_clip_pipeline",
           "build_eval_pipeline", "build_train_pipeline"]


@dataclasses.dataclass
class Pipeline:
  """One host's pipeline: iterate for numpy batches (see the module docstring)."""
  dataset: tf.data.Dataset  # yields the batch dicts as tensors (+ decode.SEQUENCE_KEY)
  stats: PipelineStats
  host_batch_size: int
  num_batches: int | None  # batches per evaluation pass; None for the infinite training stream
  examples_per_epoch: int  # training: anchor clips per epoch on this host; eval: real mixtures
  load_example: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]  # plan -> example (tf)
  plan: Callable[[], Iterator[dict[str, np.ndarray]]]  # per-example plans, in order
  records: list[schema.ClipRecord] = dataclasses.field(default_factory=list)  # index rows
  config: Any = None  # the data config the pipeline was built with
  dropped_rows: set = dataclasses.field(default_factory=set)  # clips found broken in the stream

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    """Numpy host batches; updates `stats` and logs them at each epoch / pass end."""
    epoch_examples = 0
    expected = 0  # next plan position
    with_ids = bool(self.config is not None and self.config.with_clip_ids)
    ids = np.asarray([r.id for r in self.records], dtype=str)
    iterator = self.dataset.as_numpy_iterator()
    while True:
      try:
        batch = next(iterator)
      except StopIteration:
        break
      except tf.errors.OpError as error:
        raise self._explain(error, expected) from error
      sequence = batch.pop(decode.SEQUENCE_KEY)
      for missing in sorted(set(range(expected, int(sequence[-1]) + 1)) - set(sequence.tolist())):
        self._count_dropped(missing)
      expected = int(sequence[-1]) + 1
      if with_ids:
        batch["clip_ids"] = ids[batch["clip_index"]]
      valid = batch["valid"]
      real = int(valid.sum())
      self.stats.batches += 1
      self.stats.examples += real
      mask = batch["pose_mask"] * valid[:, None, None, None]
      positions = real * int(np.prod(batch["pose_mask"].shape[1:]))
      self.stats.pose_positions += positions
      self.stats.pose_positions_masked += positions - int(mask.sum())
      epoch_examples += real
      if self.num_batches is None and epoch_examples >= self.examples_per_epoch:
        epoch_examples -= self.examples_per_epoch
        self.stats.log("training epoch")
      yield batch
    if self.num_batches is not None:
      self.stats.log("evaluation pass")

  def _explain(self, error: tf.errors.OpError, first: int) -> Exception:
    """The error naming the file for a tf.data failure at or after plan position `first`."""
    prefetched = max(int(self.config.prefetch), 2) if self.config is not None else 2
    return stream_errors.explain(error, self.plan, self.records, self._num_frames(),
                                 self._is_folder(), first, self.host_batch_size * (prefetched + 2))

  def _num_frames(self) -> int:
    return int(self.config.num_frames) if self.config is not None else 0

  def _is_folder(self) -> bool:
    return self.config is not None and self.config.source == "folder"

  def _count_dropped(self, position: int) -> None:
    """A training example dropped by skip_bad_clips after a read error: count and name it."""
    self.stats.skipped_examples += 1
    (_, entry), = stream_errors.plans_at(self.plan, position, 1)
    found = stream_errors.find_culprit(entry, self.records, self._num_frames(), self._is_folder())
    if found is None:
      rows = [self.records[int(r)].id for r in entry["clip_index"]]
      logging.warning("input pipeline: dropped example %d (clips %s) after a read error",
                      position, rows)
      return
    row, bad = found
    logging.warning("input pipeline: dropped example %d, bad file %s", position, bad)
    if row not in self.dropped_rows:  # each clip counted once, however often it is drawn
      self.dropped_rows.add(row)
      self.stats.skipped_clips[bad.kind] += 1
      self.stats.bad_files.append(str(bad))


def _resolve_processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """Defaults to jax's process index / count."""
  if process_index is None or process_count is None:
    import jax  # only when not given explicitly (tests simulate several hosts)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return int(process_index), int(process_count)


def _host_batch_size(global_batch: int, process_count: int, key: str) -> int:
  """Global batch split over hosts; must divide."""
  if global_batch % process_count:
    raise ValueError(f"config.data.{key} = {global_batch} is not divisible by the "
                     f"{process_count} processes")
  return global_batch // process_count


def build_train_pipeline(config: ml_collections.ConfigDict, *, seed: int, start_batch: int = 0,
                         process_index: int | None = None,
                         process_count: int | None = None) -> Pipeline:
  """Infinite shuffled training pipeline of this host (config = config.data).

  start_batch: resume point; the stream (and `plan()`) starts with host batch number
  start_batch of an uninterrupted run with the same seed, at no cost (plans are indexed by
  (seed, process, epoch, position), nothing is replayed).
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  host_batch = _host_batch_size(config.batch_size, process_count, "batch_size")
  stats = sources.PipelineStats()
  info, records, store = sources.open_source(config, config.train_split, stats)
  eligible = [r.row for r in records if config.multi_source or not r.duet]
  host_rows = [eligible[i] for i in plans.host_slice(len(eligible), process_index, process_count)]
  host_rows = store.prepare(host_rows)
  if stats.skipped_clips:
    stats.log("skipped bad training clips")
  stats.log_pose("training clips")
  num_mix = config.num_mix
  plan = plans.train_plans(config, info, records, store, host_rows, seed=seed,
                           start_batch=start_batch, host_batch=host_batch,
                           process_index=process_index, process_count=process_count)
  load_example = decode.make_loader(config, info, records, store)
  dataset = tf.data.Dataset.from_generator(plan, output_signature=plans.plan_signature(num_mix))
  dataset = decode.finish(dataset, load_example, config, host_batch, drop_remainder=True,
                          skip_errors=bool(config.skip_bad_clips))
  return Pipeline(dataset=dataset, stats=stats, host_batch_size=host_batch, num_batches=None,
                  examples_per_epoch=len(host_rows), load_example=load_example, plan=plan,
                  records=records, config=config)


def build_eval_pipeline(config: ml_collections.ConfigDict, split: str | None = None, *,
                        process_index: int | None = None,
                        process_count: int | None = None) -> Pipeline:
  """One pass over index/<split>_mixtures_n<N>.csv for this host (config = config.data)."""
  process_index, process_count = _resolve_processes(process_index, process_count)
  split = split or config.eval_split
  host_batch = _host_batch_size(config.eval_batch_size, process_count, "eval_batch_size")
  stats = sources.PipelineStats()
  info, records, store = sources.open_source(config, split, stats)
  mixtures = store.read_mixtures(split)
  return _fixed_pipeline(config, info, records, store, mixtures,
                         f"{split}_mixtures_n{config.num_mix} list", host_batch, process_index,
                         process_count)


def build_clip_pipeline(config: ml_collections.ConfigDict, split: str, *, solos_only: bool = False,
                        process_index: int | None = None,
                        process_count: int | None = None) -> Pipeline:
  """One pass over every clip of index/<split>.csv as single-video examples (config = config.data).

  The evaluation protocol of build_eval_pipeline (centred audio crop, central frame square, no
  augmentation, padded last batch, round-robin host split, bad clips raised or skipped and
  counted) on a list of one-clip mixtures, so N = 1 whatever config.num_mix says: arrays have an
  N axis of size 1 and mixture == waveform[:, 0] (the clip's own crop, unscaled). Needs only the
  dataset (no mixture file).

  Args:
    config: the data config (config.data); num_mix is ignored (the pipeline uses N = 1) and
      eval_batch_size is the global batch.
    split: index/<split>.csv to read.
    solos_only: only clips whose index row is not a duet.
    process_index: this host (default jax.process_index()).
    process_count: number of hosts (default jax.process_count()).

  Returns:
    The Pipeline: clip_index [B, 1] holds each clip's index row; mixture_index [B] its position in
    the clip list (the split's rows in index order, duets left out when solos_only; equal to the
    row when not solos_only), -1 for padding.
  """
  process_index, process_count = _resolve_processes(process_index, process_count)
  config = ml_collections.ConfigDict(config.copy_and_resolve_references())
  config.num_mix = 1
  host_batch = _host_batch_size(config.eval_batch_size, process_count, "eval_batch_size")
  stats = sources.PipelineStats()
  info, records, store = sources.open_source(config, split, stats)
  clips = [r for r in records if not (solos_only and r.duet)]
  mixtures = [schema.MixtureRecord(row=i, mixture_id=r.id, clip_rows=(r.row,))
              for i, r in enumerate(clips)]
  what = f"{split} clip list" + (" (solos only)" if solos_only else "")
  return _fixed_pipeline(config, info, records, store, mixtures, what, host_batch, process_index,
                         process_count)


def _fixed_pipeline(config, info: schema.DatasetInfo,
                    records: list[schema.ClipRecord], store: sources.ClipSource,
                    mixtures: list[schema.MixtureRecord], what: str, host_batch: int,
                    process_index: int, process_count: int) -> Pipeline:
  """One evaluation pass of this host over a fixed list of config.num_mix-clip mixtures.

  Centred crops, no augmentation, mixture_index = mixture.row; mixtures with a bad clip are
  skipped and counted (or BadClipError); the last batch is padded so all hosts run as many
  batches. `what` names the list in messages; host_batch is this host's batch size.
  """
  stats = store.stats
  if not mixtures:
    raise ValueError(f"{sources.where(config)}: the {what} is empty")
  # The same number of batches on every host, computed before any skipping (no communication).
  per_host = -(-len(mixtures) // process_count)
  num_batches = -(-per_host // host_batch)

  def entry(rows, mixture_index: int, valid: float) -> dict[str, np.ndarray]:
    return plans.eval_entry(config, store, rows, mixture_index, valid)

  # Validate every clip of this host's entries in one pass (one cache write), in list order.
  host_entries = plans.host_slice(len(mixtures), process_index, process_count)
  store.prepare(list(dict.fromkeys(r for i in host_entries for r in mixtures[i].clip_rows)))
  stats.log_pose(what)
  entries = []
  for i in host_entries:
    mixture = mixtures[i]
    good = store.prepare(mixture.clip_rows)
    if len(good) != len(mixture.clip_rows):
      stats.skipped_mixtures += 1
      continue
    entries.append(entry(good, mixture.row, 1.0))
  if stats.skipped_mixtures:
    stats.log(f"skipped entries of the {what} with bad clips")
  num_real = len(entries)
  if not entries:  # this host has nothing real (tiny list / all skipped): pad from mixture 0
    good = store.prepare(mixtures[0].clip_rows)
    if len(good) != len(mixtures[0].clip_rows):
      raise ValueError(f"{sources.where(config)}: no usable entry of the {what} to pad host "
                       f"{process_index}")
    entries.append(entry(good, -1, 0.0))
  padding = dict(entries[0], mixture_index=np.int32(-1), valid=np.float32(0.0))
  entries = entries[:num_real] + [padding] * (num_batches * host_batch - num_real)
  stacked = {k: np.stack([e[k] for e in entries]) for k in plans.PLAN_KEYS}

  def plan() -> Iterator[dict[str, np.ndarray]]:
    """The fixed per-example plans (real mixtures, then padding)."""
    for i in range(len(entries)):
      yield {k: v[i] for k, v in stacked.items()}

  load_example = decode.make_loader(config, info, records, store)
  dataset = tf.data.Dataset.from_tensor_slices(stacked)
  dataset = decode.finish(dataset, load_example, config, host_batch, drop_remainder=False)
  return Pipeline(dataset=dataset, stats=stats, host_batch_size=host_batch,
                  num_batches=num_batches, examples_per_epoch=num_real,
                  load_example=load_example, plan=plan, records=records, config=config)
