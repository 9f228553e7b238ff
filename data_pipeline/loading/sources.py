"""Clip sources of the input pipeline: the folder layout (ClipSource) and its TFDS build
(TfdsSource) behind one interface, plus the per-host counters (PipelineStats).

Only the per-clip loaders differ (audio crop, JPEG bytes, pose track); planning, host slicing,
decoding and augmentation are shared, so both give identical batches for the same clips and seed.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import threading
from typing import Any

from absl import logging
import numpy as np
import soundfile
import tensorflow as tf

from data_pipeline.layout import clip_checks, reader, schema


@dataclasses.dataclass
class PipelineStats:
  """Counters of one host's pipeline (read them, or see the log at each epoch / eval pass end)."""
  clips: int = 0  # clips this host reads
  skipped_clips: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  skipped_mixtures: int = 0  # eval mixtures dropped because one of their clips was bad
  skipped_examples: int = 0  # training examples dropped because a file broke after validation
  bad_files: list = dataclasses.field(default_factory=list)  # "path: reason" of skipped clips
  pose_frames: int = 0  # frames of this host's clips that have a pose file
  pose_frames_without_detection: int = 0  # of those, frames where AlphaPose found nobody
  clips_without_detection: int = 0  # clips whose pose file detects nobody in any frame
  clips_without_pose: int = 0  # clips without pose file (data.require_pose False): all masked
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

  def log_pose(self, what: str) -> None:
    """Logs the clips whose pose is masked throughout, when there are any."""
    if self.clips_without_pose or self.clips_without_detection:
      logging.info("input pipeline (%s): clips without pose: %d; clips with a pose file but "
                   "nobody detected in any frame: %d (their pose is masked, pose_mask == 0)",
                   what, self.clips_without_pose, self.clips_without_detection)


class ClipSource:
  """Validated clips of one host with their cached pose; loaders for tf.numpy_function.

  The interface the pipeline uses: prepare, read_mixtures, usable_samples, center_frame,
  pose_window and read_media (the tf reads of one video). This class reads the folder layout;
  TfdsSource reads a TFDS build of it.
  """

  def __init__(self, config, info: schema.DatasetInfo,
               records: list[schema.ClipRecord], stats: PipelineStats):
    self.config = config
    self.info = info
    self.records = records  # every row of the split (row -> record)
    self.stats = stats
    self.clip_info: dict[int, schema.ClipInfo] = {}
    self.pose: dict[int, schema.PoseTrack] = {}
    self.bad: set[int] = set()
    # Passing content checks (every frame decodable, audio finite and audible), kept across runs
    # in config.data.validation_cache ("" = only for this pipeline).
    self.cache = clip_checks.ValidationCache(config.validation_cache or None)

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
      except schema.BadClipError as error:
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
      if not clip.has_pose:
        self.stats.clips_without_pose += 1
      else:
        self.stats.pose_frames += record.num_frames
        self.stats.pose_frames_without_detection += pose.frames_without_detection
        if pose.frames_without_detection >= record.num_frames:
          self.stats.clips_without_detection += 1
      good.append(row)
    self.cache.save()
    return good

  def _load(self, record: schema.ClipRecord):
    """Validates one clip and parses its pose: (ClipInfo, PoseTrack); BadClipError if bad."""
    c = self.config
    clip = reader.validate_clip(record, c.sample_rate, c.fps, c.audio_length, c.num_frames,
                                cache=self.cache, require_pose=c.get("require_pose", True))
    if not clip.has_pose:  # require_pose False: masked throughout, counted by prepare
      return clip, reader.no_pose_track(record.num_frames, c.max_persons)
    pose = reader.load_pose(record.pose, record.num_frames, clip.frame_width,
                                   clip.frame_height, c.max_persons)
    return clip, pose

  def read_mixtures(self, split: str) -> list[schema.MixtureRecord]:
    """The split's fixed evaluation mixtures of config.num_mix clips."""
    return reader.read_mixtures(self.config.root, split, self.config.num_mix, self.records)

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

  def read_media(self, row, start, center, paths) -> tuple[tf.Tensor, Any]:
    """(tf, inside the map) audio crop [L] and the T frames' JPEG bytes: each a file read."""
    jpegs = [tf.io.read_file(paths[t]) for t in range(self.config.num_frames)]
    audio = tf.numpy_function(self.read_audio, [row, start], tf.float32, stateful=False)
    return audio, jpegs

  def read_audio(self, row, start) -> np.ndarray:
    """float32 [L] crop of a clip's audio (called through tf.numpy_function)."""
    record = self.records[int(row)]
    length = self.config.audio_length
    try:
      audio, _ = soundfile.read(str(record.audio), start=int(start), frames=length,
                                dtype="float32", always_2d=False)
    except (RuntimeError, soundfile.LibsndfileError) as error:
      raise schema.BadClipError(record.audio, f"unreadable audio ({error})",
                                       "unreadable_audio") from error
    if audio.shape != (length,):
      raise schema.BadClipError(record.audio, f"read {audio.shape} samples at {start}, "
                                       f"expected ({length},)", "audio_too_short")
    return audio

  def pose_window(self, row, center) -> tuple[np.ndarray, np.ndarray]:
    """Pose [P, W, J, 3] and mask [P, W] (float32) of the window centred on frame `center`."""
    return reader.pose_window(self.pose[int(row)], int(center), self.config.pose_window)


class TfdsSource(ClipSource):
  """The same clips read from a TFDS build (ArrayRecord random access by index row)."""

  def __init__(self, config, info: schema.DatasetInfo,
               records: list[schema.ClipRecord], stats: PipelineStats, name: str,
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

  def _load(self, record: schema.ClipRecord):
    """ClipInfo and PoseTrack from the record; the crop-length checks of validate_clip."""
    c = self.config
    if record.row in self.left_out:
      raise schema.BadClipError(record.audio.parent, "left out of the TFDS build as a bad "
                                       f"clip ({self.left_out[record.row]})",
                                       self.left_out[record.row])
    if record.row not in self.position:
      raise ValueError(f"{self.name}: {self.split} row {record.row} ({record.id}) has no record")
    example = self._example(record.row)
    self._remember(record.row, (example["audio"], example["frames"]))  # warm for the first epoch
    num_samples = int(example["audio"].shape[0])
    if num_samples < c.audio_length:
      raise schema.BadClipError(record.audio, f"{num_samples} samples, shorter than the "
                                       f"{c.audio_length}-sample crop", "audio_too_short")
    # Stems are as long as the audio (checked at build time).
    if record.num_frames < c.num_frames:
      raise schema.BadClipError(record.frames, f"{record.num_frames} frames, fewer than "
                                       f"the {c.num_frames} consecutive frames an example needs",
                                       "too_few_frames")
    usable = min(num_samples, int(record.num_frames / c.fps * c.sample_rate))
    if usable < c.audio_length:
      seconds = record.num_frames / c.fps
      raise schema.BadClipError(record.frames, f"frames cover {seconds:.2f} s, shorter "
                                       f"than the {c.audio_length / c.sample_rate:.2f} s crop",
                                       "too_few_frames")
    if c.max_persons != self.metadata["max_persons"]:
      raise ValueError(f"config.data.max_persons = {c.max_persons} but {self.name} was built "
                       f"with {self.metadata['max_persons']} persons")
    pose = example["pose"]
    track = schema.PoseTrack(
        keypoints=np.ascontiguousarray(pose["keypoints"].transpose(1, 0, 2, 3)),  # [P, F, J, 3]
        mask=np.ascontiguousarray(pose["mask"].T),  # [P, F]
        frames_without_detection=int(pose["frames_without_detection"]),
        num_tracks=int(pose["num_tracks"]))
    clip = schema.ClipInfo(num_samples=num_samples,
                                  frame_height=int(example["frame_height"]),
                                  frame_width=int(example["frame_width"]))
    return clip, track

  def read_mixtures(self, split: str) -> list[schema.MixtureRecord]:
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
      mixtures.append(schema.MixtureRecord(row=row, mixture_id=entry["mixture_id"],
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
      raise schema.BadClipError(self.records[row].audio, f"read {audio.shape} samples at "
                                       f"{start}, expected ({length},)", "audio_too_short")
    return audio

  def read_media(self, row, start, center, paths) -> tuple[tf.Tensor, Any]:
    """(tf, inside the map) one record read gives the audio crop [L] and the T frames' bytes."""
    del paths  # pseudo paths: only for error messages
    audio, jpegs = tf.numpy_function(self.read_clip, [row, start, center],
                                     [tf.float32, tf.string], stateful=False)
    return audio, tf.ensure_shape(jpegs, [self.config.num_frames])

  def read_clip(self, row, start, center) -> tuple[np.ndarray, np.ndarray]:
    """Audio crop float32 [L] and the T frames' JPEG bytes [T] of one video (one record read)."""
    row = int(row)
    samples, frames = self._clip_data(row)
    first = int(center) - self.config.num_frames // 2
    return (self._audio_crop(samples, row, int(start)),
            frames[first:first + self.config.num_frames])


# A TFDS build holds only clips with pose (a clip without pose file is a bad clip when it is
# built), so it cannot serve the clips that data.require_pose = False is for.
TFDS_NEEDS_POSE = ("config.data.require_pose=False needs config.data.source='folder': a TFDS "
                   "build holds only clips with a pose file (build_tfds leaves the others out "
                   "as bad clips), so it cannot serve clips without pose")


def where(config) -> str:
  """The data source, for error messages."""
  return f"tfds:{config.tfds_name}" if config.source == "tfds" else str(config.root)


def _open_tfds(config, split: str, stats: PipelineStats):
  """labels, index records and a random-access store of the split's TFDS build."""
  import tensorflow_datasets as tfds

  from data_pipeline.loading import tfds_builders  # registers the builders with tfds

  if not config.tfds_name:
    raise ValueError('config.data.source = "tfds" needs config.data.tfds_name, e.g. '
                     '"synthmusic/tiny" or "music21"')
  data_dir = config.tfds_data_dir or None
  builder = tfds.builder(config.tfds_name, data_dir=data_dir)
  name = f"tfds:{builder.name}/{builder.builder_config.name if builder.builder_config else ''}" \
         f":{builder.version}"
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"{name} is not built in {builder.data_dir}: python -m data_pipeline.loading.build_tfds "
        f"--dataset {builder.name} --data_dir {config.tfds_data_dir or '~/tensorflow_datasets'}")
  metadata = builder.info.metadata
  if "index" not in metadata:
    raise ValueError(f"{name}: {builder.data_dir} has no tribert metadata (not built by "
                     f"{tfds_builders.__name__})")
  info = schema.DatasetInfo(dataset=metadata["dataset"], classes=tuple(metadata["classes"]),
                                   sample_rate=int(metadata["sample_rate"]),
                                   fps=float(metadata["fps"]))
  build_path = pathlib.Path(f"{name}:{split}")
  records = []
  for row, entry in enumerate(metadata["index"][split]):
    clip = build_path / entry["id"]  # pseudo paths: error messages name the clip inside the build
    sources = [x for x in entry["sources"].split(";") if x]
    records.append(schema.ClipRecord(
        row=row, id=entry["id"], category=entry["category"],
        labels=tuple(x for x in entry["labels"].split(";") if x), duet=bool(int(entry["duet"])),
        audio=clip / "audio", frames=clip / "frames", num_frames=int(entry["num_frames"]),
        pose=clip / "pose", sources=tuple(clip / f"sources/{k}" for k in range(len(sources)))))
  try:
    source = builder.as_data_source(split)
  except (ValueError, NotImplementedError) as error:
    raise ValueError(f"{name}: random access needs the array_record file format (build with "
                     "python -m data_pipeline.loading.build_tfds, the default): "
                     f"{error}") from error
  store = TfdsSource(config, info, records, stats, name, split, source, dict(metadata))
  return info, records, store, name


def open_source(config, split: str, stats: PipelineStats):
  """(info, records, source) of a split: folder layout or TFDS build, checked vs the config."""
  if config.source == "tfds":
    if not config.get("require_pose", True):
      raise ValueError(TFDS_NEEDS_POSE)
    info, records, store, root = _open_tfds(config, split, stats)
    labels_file = f"{root} metadata"
  elif config.source == "folder":
    if not config.root:
      raise ValueError("config.data.root is empty: set it to a dataset root (labels.json, "
                       "index/)")
    root = pathlib.Path(config.root)
    info = reader.read_labels(root)
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
    records = reader.read_index(root, split, info.classes)
    store = ClipSource(config, info, records, stats)
  return info, records, store
