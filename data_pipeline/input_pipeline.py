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
                                              frame of the clip are 0 too
  pose_frame_index int32   [B, N, T]           position of each RGB frame inside the pose window
                                              (W // 2 - T // 2 + t: the window is centred)
  labels           float32 [B, N, C]           multi-hot classes of each video (duets: two)
  waveform         float32 [B, N, L]           each video's audio crop after the mixing scale
  mixture          float32 [B, L]              sum over N of waveform
  valid            float32 [B]                 1 for real examples, 0 for evaluation padding
  clip_index       int32   [B, N]              0-based data rows of index/<split>.csv
  mixture_index    int32   [B]                 0-based row of the mixture list (eval) or
                                              position in the clip list (clips); -1 in
                                              training and for padding
Spectral features (STFT, log-frequency warp, GT masks, loss weight) are computed from
waveform / mixture on the device by tribert_jax.audio.spectral_features.

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
  * Bad clips (missing / unreadable / short files, wrong sample rate, missing frames or pose) are
    found up front by dataset_index.validate_clip: BadClipError naming the file, or when
    data.skip_bad_clips, skipped and counted in Pipeline.stats (a mixture with a bad clip is
    skipped and counted; in the clip pipeline a bad clip also counts as a skipped mixture). A
    JPEG that is corrupt or truncated at read time raises an error naming the file.
  * Sources (config.data.source): "folder" reads the layout under data.root; "tfds" reads the
    TFDS build of the same layout (data_pipeline/tfds_builders.py; data.tfds_name,
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

import collections
import dataclasses
import pathlib
import threading
from typing import Any, Callable, Iterator

from absl import logging
import ml_collections
import numpy as np
import soundfile
import tensorflow as tf

from data_pipeline import dataset_index

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PLAN_KEYS = ("clip_index", "audio_start", "center_frame", "crop_box", "flip", "gain",
              "mixture_index", "valid")


@dataclasses.dataclass
class PipelineStats:
  """Counters of one host's pipeline (read them, or see the log at each epoch / eval pass end)."""
  clips: int = 0  # clips this host reads
  skipped_clips: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped_mixtures: int = 0  # eval mixtures dropped because one of their clips was bad
  bad_files: list = dataclasses.field(default_factory=list)  # "path: reason" of skipped clips
  pose_frames: int = 0  # frames of this host's clips
  pose_frames_without_detection: int = 0  # of those, frames where AlphaPose found nobody
  examples: int = 0  # real (valid) examples yielded
  batches: int = 0
  pose_positions: int = 0  # person x window positions of yielded real examples
  pose_positions_masked: int = 0  # of those, pose_mask == 0 (no detection or outside the clip)

  def as_dict(self) -> dict[str, Any]:
    """Plain dict of the counters (for logging / metric writers)."""
    out = dataclasses.asdict(self)
    out["skipped_clips"] = dict(self.skipped_clips)
    return out

  def log(self, what: str) -> None:
    """Logs the counters with absl logging."""
    logging.info("input pipeline (%s): %s", what, self.as_dict())


def _parallel_calls(value: int) -> int:
  """config.data.num_parallel_calls / prefetch: -1 means tf.data.AUTOTUNE."""
  return tf.data.AUTOTUNE if value < 0 else int(value)


def _host_slice(count: int, process_index: int, process_count: int) -> np.ndarray:
  """Round-robin positions of this host among `count` items."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return np.arange(process_index, count, process_count)


class _ClipStore:
  """Validated clips of one host with their cached pose; loaders for tf.numpy_function."""

  def __init__(self, config, info: dataset_index.DatasetInfo,
               records: list[dataset_index.ClipRecord], stats: PipelineStats):
    self.config = config
    self.info = info
    self.records = records  # every row of the split (row -> record)
    self.stats = stats
    self.clip_info: dict[int, dataset_index.ClipInfo] = {}
    self.pose: dict[int, dataset_index.PoseTrack] = {}
    self.bad: set[int] = set()

  def prepare(self, rows) -> list[int]:
    """Validates rows and parses their pose once; returns the good rows (bad: raise or count)."""
    good = []
    c = self.config
    for row in rows:
      row = int(row)
      if row in self.clip_info:
        good.append(row)
        continue
      if row in self.bad:
        continue
      record = self.records[row]
      try:
        clip, pose = self._load(record)
      except dataset_index.BadClipError as error:
        if not c.skip_bad_clips:
          raise
        self.bad.add(row)
        self.stats.skipped_clips[error.kind] += 1
        self.stats.bad_files.append(str(error))
        logging.warning("skipping bad clip %s: %s", record.id, error)
        continue
      self.clip_info[row] = clip
      self.pose[row] = pose
      self.stats.clips += 1
      self.stats.pose_frames += record.num_frames
      self.stats.pose_frames_without_detection += pose.frames_without_detection
      good.append(row)
    return good

  def _load(self, record: dataset_index.ClipRecord):
    """Validates one clip and parses its pose: (ClipInfo, PoseTrack); BadClipError if bad."""
    c = self.config
    clip = dataset_index.validate_clip(record, c.sample_rate, c.fps, c.audio_length, c.num_frames)
    pose = dataset_index.load_pose(record.pose, record.num_frames, clip.frame_width,
                                   clip.frame_height, c.max_persons)
    return clip, pose

  def read_mixtures(self, split: str) -> list[dataset_index.MixtureRecord]:
    """The split's fixed evaluation mixtures of config.num_mix clips."""
    return dataset_index.read_mixtures(self.config.root, split, self.config.num_mix, self.records)

  def usable_samples(self, row: int) -> int:
    """Samples where both audio and frames exist."""
    record = self.records[row]
    frames_samples = int(record.num_frames / self.config.fps * self.config.sample_rate)
    return min(self.clip_info[row].num_samples, frames_samples)

  def center_frame(self, row: int, start: int) -> int:
    """Frame at the crop centre, kept so that all T frames exist."""
    c = self.config
    time = (start + c.audio_length / 2) / c.sample_rate
    low = c.num_frames // 2
    high = self.records[row].num_frames - 1 - (c.num_frames - 1 - low)
    return int(min(max(round(time * c.fps), low), high))

  def read_audio(self, row, start) -> np.ndarray:
    """float32 [L] crop of a clip's audio (called through tf.numpy_function)."""
    record = self.records[int(row)]
    length = self.config.audio_length
    try:
      audio, _ = soundfile.read(str(record.audio), start=int(start), frames=length,
                                dtype="float32", always_2d=False)
    except (RuntimeError, soundfile.LibsndfileError) as error:
      raise dataset_index.BadClipError(record.audio, f"unreadable audio ({error})",
                                       "unreadable_audio") from error
    if audio.shape != (length,):
      raise dataset_index.BadClipError(record.audio, f"read {audio.shape} samples at {start}, "
                                       f"expected ({length},)", "audio_too_short")
    return audio

  def pose_window(self, row, center) -> tuple[np.ndarray, np.ndarray]:
    """Pose [P, W, J, 3] and mask [P, W] (float32) of the window centred on frame `center`."""
    track = self.pose[int(row)]
    window = self.config.pose_window
    num_frames = track.mask.shape[1]
    first = int(center) - window // 2  # frame at window position 0
    low, high = max(first, 0), min(first + window, num_frames)
    persons = track.mask.shape[0]
    keypoints = np.zeros((persons, window, dataset_index.NUM_JOINTS, 3), np.float32)
    mask = np.zeros((persons, window), np.float32)
    if high > low:
      keypoints[:, low - first:high - first] = track.keypoints[:, low:high]
      mask[:, low - first:high - first] = track.mask[:, low:high]
    return keypoints, mask


class _TfdsClipStore(_ClipStore):
  """The same clips read from a TFDS build (ArrayRecord random access by index row)."""

  def __init__(self, config, info: dataset_index.DatasetInfo,
               records: list[dataset_index.ClipRecord], stats: PipelineStats, name: str,
               split: str, source, metadata: dict[str, Any]):
    super().__init__(config, info, records, stats)
    self.name = name
    self.split = split
    self.source = source  # random-access sequence of decoded examples (numpy)
    self.metadata = metadata
    # Records are stored in index-row order without the clips a skipping build left out.
    self.position = {int(row): i for i, row in enumerate(metadata["rows"][split])}
    self.left_out = {int(row): kind for row, kind in metadata["bad_clips"][split].items()}
    if len(self.position) != len(source):
      raise ValueError(f"{name}: metadata lists {len(self.position)} {split} records, the "
                       f"files hold {len(source)} (rebuild the dataset)")
    # LRU cache of (audio int16, JPEG bytes) per row: reading a clip means reading and parsing
    # its whole record (~2.8 MB for a 10 s SynthMUSIC clip) for 3 frames and a 6 s crop.
    self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = \
        collections.OrderedDict()
    self._cache_bytes = 0
    self._cache_limit = int(config.tfds_cache_mb) * 2**20
    self._cache_lock = threading.Lock()  # tf.data runs the loaders on several threads

  def _remember(self, row: int, data: tuple[np.ndarray, np.ndarray]) -> None:
    """Caches a clip's audio and frames, evicting the least recently used over the budget."""
    size = data[0].nbytes + sum(len(x) for x in data[1])
    if size > self._cache_limit:
      return
    with self._cache_lock:
      if row in self._cache:
        return
      self._cache[row] = data
      self._cache_bytes += size
      while self._cache_bytes > self._cache_limit:
        _, (audio, frames) = self._cache.popitem(last=False)
        self._cache_bytes -= audio.nbytes + sum(len(x) for x in frames)

  def _clip_data(self, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio int16 [samples], JPEG bytes [F]) of a row, from the cache or the record."""
    with self._cache_lock:
      data = self._cache.get(row)
      if data is not None:
        self._cache.move_to_end(row)
        return data
    example = self._example(row)
    data = (example["audio"], example["frames"])
    self._remember(row, data)
    return data

  def _example(self, row: int) -> dict[str, Any]:
    """The decoded example of index row `row`."""
    # ArrayRecordDataSource shares one thread-safe reader per shard: no lock needed.
    example = self.source[self.position[row]]
    if int(example["row"]) != row:
      raise ValueError(f"{self.name}: {self.split} record {self.position[row]} holds row "
                       f"{example['row']}, metadata says {row} (rebuild the dataset)")
    return example

  def _load(self, record: dataset_index.ClipRecord):
    """ClipInfo and PoseTrack from the record; the crop-length checks of validate_clip."""
    c = self.config
    if record.row in self.left_out:
      raise dataset_index.BadClipError(record.audio.parent, "left out of the TFDS build as a bad "
                                       f"clip ({self.left_out[record.row]})",
                                       self.left_out[record.row])
    if record.row not in self.position:
      raise ValueError(f"{self.name}: {self.split} row {record.row} ({record.id}) has no record")
    example = self._example(record.row)
    self._remember(record.row, (example["audio"], example["frames"]))  # warm for the first epoch
    num_samples = int(example["audio"].shape[0])
    if num_samples < c.audio_length:
      raise dataset_index.BadClipError(record.audio, f"{num_samples} samples, shorter than the "
                                       f"{c.audio_length}-sample crop", "audio_too_short")
    # Stems are as long as the audio (checked at build time).
    if record.num_frames < c.num_frames:
      raise dataset_index.BadClipError(record.frames, f"{record.num_frames} frames, fewer than "
                                       f"the {c.num_frames} consecutive frames an example needs",
                                       "too_few_frames")
    usable = min(num_samples, int(record.num_frames / c.fps * c.sample_rate))
    if usable < c.audio_length:
      seconds = record.num_frames / c.fps
      raise dataset_index.BadClipError(record.frames, f"frames cover {seconds:.2f} s, shorter "
                                       f"than the {c.audio_length / c.sample_rate:.2f} s crop",
                                       "too_few_frames")
    if c.max_persons != self.metadata["max_persons"]:
      raise ValueError(f"config.data.max_persons = {c.max_persons} but {self.name} was built "
                       f"with {self.metadata['max_persons']} persons")
    pose = example["pose"]
    track = dataset_index.PoseTrack(
        keypoints=np.ascontiguousarray(pose["keypoints"].transpose(1, 0, 2, 3)),  # [P, F, J, 3]
        mask=np.ascontiguousarray(pose["mask"].T),  # [P, F]
        frames_without_detection=int(pose["frames_without_detection"]),
        num_tracks=int(pose["num_tracks"]))
    clip = dataset_index.ClipInfo(num_samples=num_samples,
                                  frame_height=int(example["frame_height"]),
                                  frame_width=int(example["frame_width"]))
    return clip, track

  def read_mixtures(self, split: str) -> list[dataset_index.MixtureRecord]:
    """The fixed mixture list stored in the build's metadata (same checks as the CSV reader)."""
    num_mix = self.config.num_mix
    name = f"{split}_mixtures_n{num_mix}"
    if name not in self.metadata["mixtures"]:
      raise ValueError(f"{self.name}: metadata has no mixture list {name}")
    by_id = {r.id: r.row for r in self.records}
    mixtures = []
    for row, entry in enumerate(self.metadata["mixtures"][name]):
      ids = entry["clips"]
      if len(ids) != num_mix or any(x not in by_id for x in ids):
        raise ValueError(f"{self.name}: {name} mixture {entry['mixture_id']!r} names {ids}, "
                         f"expected {num_mix} clips of the {split} split")
      mixtures.append(dataset_index.MixtureRecord(row=row, mixture_id=entry["mixture_id"],
                                                  clip_rows=tuple(by_id[x] for x in ids)))
    return mixtures

  def read_audio(self, row, start) -> np.ndarray:
    """float32 [L] crop: int16 / 32768, exactly what soundfile reads from the PCM16 wav."""
    return self._audio_crop(self._clip_data(int(row))[0], int(row), int(start))

  def _audio_crop(self, samples: np.ndarray, row: int, start: int) -> np.ndarray:
    """float32 [L] crop of int16 samples."""
    length = self.config.audio_length
    audio = samples[start:start + length].astype(np.float32) / np.float32(32768.0)
    if audio.shape != (length,):
      raise dataset_index.BadClipError(self.records[row].audio, f"read {audio.shape} samples at "
                                       f"{start}, expected ({length},)", "audio_too_short")
    return audio

  def read_clip(self, row, start, center) -> tuple[np.ndarray, np.ndarray]:
    """Audio crop float32 [L] and the T frames' JPEG bytes [T] of one video (one record read)."""
    row = int(row)
    samples, frames = self._clip_data(row)
    first = int(center) - self.config.num_frames // 2
    return (self._audio_crop(samples, row, int(start)),
            frames[first:first + self.config.num_frames])


@dataclasses.dataclass
class Pipeline:
  """One host's pipeline: iterate for numpy batches (see the module docstring)."""
  dataset: tf.data.Dataset  # yields the batch dicts as tensors
  stats: PipelineStats
  host_batch_size: int
  num_batches: int | None  # batches per evaluation pass; None for the infinite training stream
  examples_per_epoch: int  # training: anchor clips per epoch on this host; eval: real mixtures
  load_example: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]  # plan -> example (tf)
  plan: Callable[[], Iterator[dict[str, np.ndarray]]]  # per-example plans, in order

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    """Numpy host batches; updates `stats` and logs them at each epoch / pass end."""
    epoch_examples = 0
    for batch in self.dataset.as_numpy_iterator():
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


def _where(config) -> str:
  """The data source, for error messages."""
  return f"tfds:{config.tfds_name}" if config.source == "tfds" else str(config.root)


def _open_tfds(config, split: str, stats: PipelineStats):
  """labels, index records and a random-access store of the split's TFDS build."""
  import tensorflow_datasets as tfds

  from data_pipeline import tfds_builders  # registers the builders with tfds

  if not config.tfds_name:
    raise ValueError('config.data.source = "tfds" needs config.data.tfds_name, e.g. '
                     '"synthmusic/tiny" or "music21"')
  data_dir = config.tfds_data_dir or None
  builder = tfds.builder(config.tfds_name, data_dir=data_dir)
  name = f"tfds:{builder.name}/{builder.builder_config.name if builder.builder_config else ''}" \
         f":{builder.version}"
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"{name} is not built in {builder.data_dir}: python -m data_pipeline.build_tfds "
        f"--dataset {builder.name} --data_dir {config.tfds_data_dir or '~/tensorflow_datasets'}")
  metadata = builder.info.metadata
  if "index" not in metadata:
    raise ValueError(f"{name}: {builder.data_dir} has no tribert metadata (not built by "
                     f"{tfds_builders.__name__})")
  info = dataset_index.DatasetInfo(dataset=metadata["dataset"], classes=tuple(metadata["classes"]),
                                   sample_rate=int(metadata["sample_rate"]),
                                   fps=float(metadata["fps"]))
  where = pathlib.Path(f"{name}:{split}")
  records = []
  for row, entry in enumerate(metadata["index"][split]):
    clip = where / entry["id"]  # pseudo paths: error messages name the clip inside the build
    sources = [x for x in entry["sources"].split(";") if x]
    records.append(dataset_index.ClipRecord(
        row=row, id=entry["id"], category=entry["category"],
        labels=tuple(x for x in entry["labels"].split(";") if x), duet=bool(int(entry["duet"])),
        audio=clip / "audio", frames=clip / "frames", num_frames=int(entry["num_frames"]),
        pose=clip / "pose", sources=tuple(clip / f"sources/{k}" for k in range(len(sources)))))
  try:
    source = builder.as_data_source(split)
  except (ValueError, NotImplementedError) as error:
    raise ValueError(f"{name}: random access needs the array_record file format (build with "
                     f"python -m data_pipeline.build_tfds, the default): {error}") from error
  store = _TfdsClipStore(config, info, records, stats, name, split, source, dict(metadata))
  return info, records, store, name


def _open(config, split: str, stats: PipelineStats):
  """Reads labels and the split index (folder layout or TFDS build); checks them vs the config."""
  if config.source == "tfds":
    info, records, store, root = _open_tfds(config, split, stats)
    labels_file = f"{root} metadata"
  elif config.source == "folder":
    if not config.root:
      raise ValueError("config.data.root is empty: set it to a dataset root (labels.json, "
                       "index/)")
    root = pathlib.Path(config.root)
    info = dataset_index.read_labels(root)
    labels_file = f"{root}/labels.json"
  else:
    raise ValueError(f'config.data.source = {config.source!r}, expected "folder" or "tfds"')
  if len(info.classes) != config.num_classes:
    raise ValueError(f"config.data.num_classes = {config.num_classes} but {labels_file} "
                     f"lists {len(info.classes)} classes")
  if info.sample_rate != config.sample_rate:
    raise ValueError(f"config.data.sample_rate = {config.sample_rate} but {labels_file} "
                     f"says {info.sample_rate}")
  if abs(info.fps - config.fps) > 1e-6:
    raise ValueError(f"config.data.fps = {config.fps} but {labels_file} says {info.fps}")
  if config.num_frames > config.pose_window:
    raise ValueError(f"config.data.num_frames ({config.num_frames}) exceeds pose_window "
                     f"({config.pose_window})")
  if config.source == "folder":
    records = dataset_index.read_index(root, split, info.classes)
    store = _ClipStore(config, info, records, stats)
  return info, records, store


def _central_box(height: int, width: int) -> tuple[int, int, int, int]:
  """(offset_y, offset_x, h, w) of the central square."""
  side = min(height, width)
  return (height - side) // 2, (width - side) // 2, side, side


def _random_box(rng: np.random.Generator, height: int, width: int, area_range, aspect_range):
  """(offset_y, offset_x, h, w) of an Inception-style random resized crop."""
  area = height * width
  log_aspect = np.log(aspect_range)
  for _ in range(10):
    target = area * rng.uniform(*area_range)
    aspect = np.exp(rng.uniform(*log_aspect))
    w = int(round(np.sqrt(target * aspect)))
    h = int(round(np.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return _central_box(height, width)


def _make_loader(config, info: dataset_index.DatasetInfo,
                 records: list[dataset_index.ClipRecord], store: _ClipStore):
  """The tf function plan -> example (one Mix-and-Separate example, unbatched)."""
  num_mix, num_frames, size = config.num_mix, config.num_frames, config.image_size
  window, persons, length = config.pose_window, config.max_persons, config.audio_length
  joints = dataset_index.NUM_JOINTS
  frame_dirs = tf.constant([str(r.frames) for r in records])
  label_table = tf.constant(np.stack([dataset_index.multi_hot(r.labels, info.classes)
                                      for r in records]))  # [rows, C]
  mean = tf.constant(IMAGENET_MEAN, tf.float32)
  std = tf.constant(IMAGENET_STD, tf.float32)
  flip_permutation = tf.constant(dataset_index.FLIP_PERMUTATION, tf.int32)
  pose_frame_index = tf.constant(window // 2 - num_frames // 2 + np.arange(num_frames), tf.int32)

  from_files = not isinstance(store, _TfdsClipStore)

  def decode_jpeg(data: tf.Tensor, path: tf.Tensor) -> tf.Tensor:
    """Decodes one frame, failing with the file name on a corrupt / truncated JPEG."""
    looks_whole = tf.logical_and(tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"),
                                 tf.equal(tf.strings.substr(data, -2, 2), b"\xff\xd9"))
    check = tf.debugging.Assert(looks_whole, ["corrupt or truncated JPEG:", path])
    with tf.control_dependencies([check]):
      # INTEGER_ACCURATE matches libjpeg / PIL; TF's default fast IDCT is off by several levels.
      return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

  def frame_paths(row, center) -> tf.Tensor:
    """[T] file names of the frames centred on frame `center` (pseudo paths for TFDS)."""
    indices = center - num_frames // 2 + tf.range(num_frames)
    names = tf.strings.as_string(indices + 1, width=6, fill="0")
    return frame_dirs[row] + "/" + names + ".jpg"

  def load_frames(jpegs, paths, box, flip) -> tf.Tensor:
    """[T, S, S, 3] normalised frames from the T JPEG byte strings."""
    images = tf.stack([decode_jpeg(jpegs[t], paths[t])
                       for t in range(num_frames)])  # [T, H, W, 3] uint8
    images = tf.image.crop_to_bounding_box(images, box[0], box[1], box[2], box[3])
    images = tf.image.resize(images, [size, size], method="bilinear", antialias=True)
    images = tf.cond(flip > 0, lambda: tf.reverse(images, axis=[2]), lambda: images)
    images = (images / 255.0 - mean) / std
    return tf.ensure_shape(images, [num_frames, size, size, 3])

  def load_pose(row, center, flip):
    """Pose [P, W, J, 3] and mask [P, W] around frame `center`, mirrored when flipped."""
    pose, mask = tf.numpy_function(store.pose_window, [row, center], [tf.float32, tf.float32],
                                   stateful=False)
    pose = tf.ensure_shape(pose, [persons, window, joints, 3])
    mask = tf.ensure_shape(mask, [persons, window])

    def mirror():
      mirrored = tf.gather(pose, flip_permutation, axis=2)  # [P, W, J, 3], left <-> right
      x = (1.0 - mirrored[..., 0]) * mask[:, :, None]  # keep zeros where undetected
      return tf.concat([x[..., None], mirrored[..., 1:]], axis=-1)

    pose = tf.cond(flip > 0, mirror, lambda: pose)
    return pose, mask

  def load_example(plan: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """One example from its plan (pure function of the plan: no randomness here)."""
    frames, poses, masks, waves = [], [], [], []
    for n in range(num_mix):
      row = plan["clip_index"][n]
      center = plan["center_frame"][n]
      flip = plan["flip"][n]
      paths = frame_paths(row, center)
      if from_files:
        jpegs = [tf.io.read_file(paths[t]) for t in range(num_frames)]
        audio = tf.numpy_function(store.read_audio, [row, plan["audio_start"][n]], tf.float32,
                                  stateful=False)
      else:  # one record read gives the audio crop and the T frames' bytes
        audio, jpegs = tf.numpy_function(store.read_clip, [row, plan["audio_start"][n], center],
                                         [tf.float32, tf.string], stateful=False)
        jpegs = tf.ensure_shape(jpegs, [num_frames])
      frames.append(load_frames(jpegs, paths, plan["crop_box"][n], flip))
      pose, mask = load_pose(row, center, flip)
      poses.append(pose)
      masks.append(mask)
      waves.append(tf.ensure_shape(audio, [length]))
    # Mixing scale: gain (training volume jitter), clip like Sound-of-Pixels, divide by N.
    waveform = tf.clip_by_value(tf.stack(waves) * plan["gain"][:, None], -1.0, 1.0) / num_mix
    return dict(
        frames=tf.stack(frames),  # [N, T, S, S, 3]
        pose=tf.stack(poses),  # [N, P, W, J, 3]
        pose_mask=tf.stack(masks),  # [N, P, W]
        pose_frame_index=tf.tile(pose_frame_index[None], [num_mix, 1]),  # [N, T]
        labels=tf.gather(label_table, plan["clip_index"]),  # [N, C]
        waveform=waveform,  # [N, L]
        mixture=tf.reduce_sum(waveform, axis=0),  # [L]
        valid=tf.cast(plan["valid"], tf.float32),
        clip_index=tf.cast(plan["clip_index"], tf.int32),
        mixture_index=tf.cast(plan["mixture_index"], tf.int32),
    )

  return load_example


def _plan_signature(num_mix: int) -> dict[str, tf.TensorSpec]:
  """TensorSpecs of one example plan."""
  return dict(
      clip_index=tf.TensorSpec([num_mix], tf.int32),
      audio_start=tf.TensorSpec([num_mix], tf.int64),
      center_frame=tf.TensorSpec([num_mix], tf.int32),
      crop_box=tf.TensorSpec([num_mix, 4], tf.int32),  # offset_y, offset_x, height, width
      flip=tf.TensorSpec([num_mix], tf.int32),
      gain=tf.TensorSpec([num_mix], tf.float32),
      mixture_index=tf.TensorSpec([], tf.int32),
      valid=tf.TensorSpec([], tf.float32),
  )


def _plan_entry(store: _ClipStore, rows, starts, boxes, flips, gains, mixture_index: int,
                valid: float) -> dict[str, np.ndarray]:
  """Numpy plan of one example."""
  return dict(
      clip_index=np.asarray(rows, np.int32),
      audio_start=np.asarray(starts, np.int64),
      center_frame=np.asarray([store.center_frame(r, s) for r, s in zip(rows, starts)], np.int32),
      crop_box=np.asarray(boxes, np.int32).reshape(len(rows), 4),
      flip=np.asarray(flips, np.int32),
      gain=np.asarray(gains, np.float32),
      mixture_index=np.int32(mixture_index),
      valid=np.float32(valid),
  )


def _finish(dataset: tf.data.Dataset, load_example, config, host_batch: int,
            drop_remainder: bool) -> tf.data.Dataset:
  """Parallel deterministic map, batch, prefetch."""
  dataset = dataset.map(load_example, num_parallel_calls=_parallel_calls(config.num_parallel_calls),
                        deterministic=True)
  dataset = dataset.batch(host_batch, drop_remainder=drop_remainder)
  return dataset.prefetch(_parallel_calls(config.prefetch))


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
  stats = PipelineStats()
  info, records, store = _open(config, config.train_split, stats)
  eligible = [r.row for r in records if config.multi_source or not r.duet]
  host_rows = [eligible[i] for i in _host_slice(len(eligible), process_index, process_count)]
  host_rows = store.prepare(host_rows)
  if stats.skipped_clips:
    stats.log("skipped bad training clips")
  num_mix = config.num_mix
  if len(host_rows) < num_mix:
    raise ValueError(f"{_where(config)}: host {process_index}/{process_count} has {len(host_rows)} "
                     f"usable training clips, fewer than num_mix = {num_mix}")
  class_index = {name: i for i, name in enumerate(info.classes)}
  label_matrix = np.zeros((len(host_rows), len(info.classes)), bool)  # [clips, C]
  for i, row in enumerate(host_rows):
    label_matrix[i, [class_index[x] for x in records[row].labels]] = True
  jitter = float(config.volume_jitter)

  def clip_choices(rng: np.random.Generator, row: int):
    """Random crop start, frame box, flip and gain of one video."""
    start = int(rng.integers(0, store.usable_samples(row) - config.audio_length + 1))
    clip = store.clip_info[row]
    box = _random_box(rng, clip.frame_height, clip.frame_width, tuple(config.random_crop_area),
                      tuple(config.random_crop_aspect))
    flip = int(config.horizontal_flip and rng.random() < 0.5)
    gain = rng.uniform(1.0 - jitter, 1.0 + jitter)
    return start, box, flip, gain

  def plan() -> Iterator[dict[str, np.ndarray]]:
    """Infinite per-example plans: epoch-shuffled anchors with label-disjoint partners."""
    epoch, first_position = divmod(start_batch * host_batch, len(host_rows))
    while True:
      order = np.random.default_rng([seed, process_index, epoch]).permutation(len(host_rows))
      for position in range(first_position, len(order)):
        anchor = order[position]
        rng = np.random.default_rng([seed, process_index, epoch, position])
        chosen = [int(anchor)]
        used = label_matrix[anchor].copy()
        for _ in range(num_mix - 1):
          candidates = np.flatnonzero(~(label_matrix & used).any(axis=1))
          if candidates.size == 0:
            raise ValueError(f"{_where(config)}: no training clip has labels disjoint from "
                             f"{[records[host_rows[i]].labels for i in chosen]} on host "
                             f"{process_index}; cannot build a {num_mix}-mixture")
          pick = int(rng.choice(candidates))
          chosen.append(pick)
          used |= label_matrix[pick]
        rows = [host_rows[i] for i in chosen]
        starts, boxes, flips, gains = zip(*(clip_choices(rng, r) for r in rows))
        yield _plan_entry(store, rows, starts, boxes, flips, gains, -1, 1.0)
      epoch, first_position = epoch + 1, 0

  load_example = _make_loader(config, info, records, store)
  dataset = tf.data.Dataset.from_generator(plan, output_signature=_plan_signature(num_mix))
  dataset = _finish(dataset, load_example, config, host_batch, drop_remainder=True)
  return Pipeline(dataset=dataset, stats=stats, host_batch_size=host_batch, num_batches=None,
                  examples_per_epoch=len(host_rows), load_example=load_example, plan=plan)


def build_eval_pipeline(config: ml_collections.ConfigDict, split: str | None = None, *,
                        process_index: int | None = None,
                        process_count: int | None = None) -> Pipeline:
  """One pass over index/<split>_mixtures_n<N>.csv for this host (config = config.data)."""
  process_index, process_count = _resolve_processes(process_index, process_count)
  split = split or config.eval_split
  host_batch = _host_batch_size(config.eval_batch_size, process_count, "eval_batch_size")
  stats = PipelineStats()
  info, records, store = _open(config, split, stats)
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
  stats = PipelineStats()
  info, records, store = _open(config, split, stats)
  clips = [r for r in records if not (solos_only and r.duet)]
  mixtures = [dataset_index.MixtureRecord(row=i, mixture_id=r.id, clip_rows=(r.row,))
              for i, r in enumerate(clips)]
  what = f"{split} clip list" + (" (solos only)" if solos_only else "")
  return _fixed_pipeline(config, info, records, store, mixtures, what, host_batch, process_index,
                         process_count)


def _fixed_pipeline(config, info: dataset_index.DatasetInfo,
                    records: list[dataset_index.ClipRecord], store: _ClipStore,
                    mixtures: list[dataset_index.MixtureRecord], what: str, host_batch: int,
                    process_index: int, process_count: int) -> Pipeline:
  """One evaluation pass of this host over a fixed list of config.num_mix-clip mixtures.

  Centred crops, no augmentation, mixture_index = mixture.row; mixtures with a bad clip are
  skipped and counted (or BadClipError); the last batch is padded so all hosts run as many
  batches. `what` names the list in messages; host_batch is this host's batch size.
  """
  stats = store.stats
  if not mixtures:
    raise ValueError(f"{_where(config)}: the {what} is empty")
  # The same number of batches on every host, computed before any skipping (no communication).
  per_host = -(-len(mixtures) // process_count)
  num_batches = -(-per_host // host_batch)

  def entry(rows, mixture_index: int, valid: float) -> dict[str, np.ndarray]:
    """Plan of validated rows: centred audio crop, central frame square, no flip, gain 1."""
    starts = [(store.usable_samples(r) - config.audio_length) // 2 for r in rows]
    boxes = [_central_box(store.clip_info[r].frame_height, store.clip_info[r].frame_width)
             for r in rows]
    return _plan_entry(store, rows, starts, boxes, [0] * len(rows), [1.0] * len(rows),
                       mixture_index, valid)

  entries = []
  for i in _host_slice(len(mixtures), process_index, process_count):
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
      raise ValueError(f"{_where(config)}: no usable entry of the {what} to pad host "
                       f"{process_index}")
    entries.append(entry(good, -1, 0.0))
  padding = dict(entries[0], mixture_index=np.int32(-1), valid=np.float32(0.0))
  entries = entries[:num_real] + [padding] * (num_batches * host_batch - num_real)
  stacked = {k: np.stack([e[k] for e in entries]) for k in _PLAN_KEYS}

  def plan() -> Iterator[dict[str, np.ndarray]]:
    """The fixed per-example plans (real mixtures, then padding)."""
    for i in range(len(entries)):
      yield {k: v[i] for k, v in stacked.items()}

  load_example = _make_loader(config, info, records, store)
  dataset = tf.data.Dataset.from_tensor_slices(stacked)
  dataset = _finish(dataset, load_example, config, host_batch, drop_remainder=False)
  return Pipeline(dataset=dataset, stats=stats, host_batch_size=host_batch,
                  num_batches=num_batches, examples_per_epoch=num_real,
                  load_example=load_example, plan=plan)
