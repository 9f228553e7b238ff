"""TensorFlow Datasets builders for SynthMUSIC, MUSIC21 and MUSIC (one example per clip).

Each builder reads a dataset root in the shared on-disk layout (labels.json, index/*.csv,
frames/, audio/, audio_sources/, pose/; see data_pipeline/layout/schema.py) and writes versioned,
sharded ArrayRecord files (random access, used by the input pipeline; `file_format="tfrecord"`
works too for streaming readers). Build them with

  python -m data_pipeline.loading.build_tfds --dataset synthmusic --size tiny --data_dir DIR
  python -m data_pipeline.loading.build_tfds --dataset music21 --manual_dir DIR2 --data_dir DIR

Features of one clip (an example):
  id, category                 text (category = class, or "a+b" for duets)
  row                          int32, 0-based data row of index/<split>.csv (records are stored
                               in row order; metadata["rows"][split][i] is the row of record i)
  labels                       ClassLabel sequence (class indices); label_names: the names
  labels_multi_hot             float32 [C]
  duet                         bool
  audio                        int16 [samples] at 11025 Hz, the PCM16 samples of the wav as stored
                               (float = int16 / 32768, exactly what soundfile reads as float32)
  sources/audio                int16 [K * samples] duet stems, player-major (player k alone,
                               each as long as audio; reshape(K, -1)); K = 0 for solos and real
                               duets (which have no stems)
  sources/instrument           text [K], the class each stem plays
  frames                       string [F]: the JPEG files' bytes unmodified (8 fps, file k+1 at
                               position k), so decoding gives the same pixels as the folder path
  frame_height, frame_width    int32, size of the first frame
  num_frames                   int32, F
  pose/keypoints               float16 [F, P=2, 68, 3] (frames x persons x joints x (x / width,
                               y / height, confidence)) after layout.reader.load_pose's track
                               selection; zeros where the mask is 0
  pose/mask                    uint8 [F, P], 1 where that person was detected in that frame
  pose/frames_without_detection, pose/num_tracks   int32 (load_pose's counters)
Metadata (builder.info.metadata): dataset, classes, sample_rate, fps, max_persons, the full index
rows of every split (index), record -> row maps (rows), the fixed val/test mixture lists
(mixtures, as {mixture_id, clips}), the build report (skipped clips by kind, bad files) and the
source (manual_dir, SynthMUSIC generation parameters).

Which source to train from (config.data.source): both give identical batches. The folder layout
reads only the 3 JPEGs and the 6 s of audio an example needs; a TFDS read decompresses and parses
the clip's whole record (~2.8 MB for a 10 s SynthMUSIC clip, tens of MB for a multi-minute MUSIC
video), which the input pipeline offsets with an LRU cache (data.tfds_cache_mb) filled while it
validates the clips at start-up (that pass reads every clip record of the host once). So: TFDS for
SynthMUSIC and for any dataset whose host shard fits the cache, for shared or remote storage
(a few large files instead of tens of thousands), for moving a dataset between machines, and for
a versioned record of exactly what was trained on; the folder layout for real MUSIC21 / MUSIC on
a local disk, where clips are long and the cache holds only a fraction of them.

Bad clips: every clip is checked with layout.reader.validate_clip (files present, headers, every
frame decodable, finite non-silent audio, pose file) before anything is written, then fully read
(JPEG markers, wavs and pose JSON parse, finite keypoints). Any bad clip fails the build
with a list of every bad file, unless skip_bad_clips (builder kwarg, or the environment variable
TRIBERT_TFDS_SKIP_BAD_CLIPS=1 for the tfds CLI): then they are left out and counted in the build
report (metadata["build_report"]). Length requirements of a training crop (65535 samples, T
frames) are not applied here: they depend on config.data, and the input pipeline checks them per
clip exactly as it does for the folder layout.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import pathlib
from typing import Any, Iterator

import numpy as np
import soundfile
import tensorflow_datasets as tfds

from data_pipeline.layout import clip_checks, reader, schema, skeleton

MAX_PERSONS = 2  # P of the batch contract
SKIP_ENV = "TRIBERT_TFDS_SKIP_BAD_CLIPS"
MIXTURE_LISTS = schema.MIXTURE_LISTS
_CITATION = """@inproceedings{rahman2021tribert,
  title={TriBERT: Human-centric Audio-visual Representation Learning},
  author={Rahman, Tanzila and Yang, Mengyu and Sigal, Leonid},
  booktitle={NeurIPS}, year={2021}}"""


class BadClipsError(ValueError):
  """A build found bad clips and skip_bad_clips is off; `report` holds the counts and files."""

  def __init__(self, message: str, report: dict[str, Any]):
    super().__init__(message)
    self.report = report


def _skip_from_env() -> bool:
  """TRIBERT_TFDS_SKIP_BAD_CLIPS=1/true/yes turns skipping on (for `tfds build`)."""
  return os.environ.get(SKIP_ENV, "").strip().lower() in ("1", "true", "yes")


def clip_features(classes: tuple[str, ...], sample_rate: int) -> tfds.features.FeaturesDict:
  """The FeaturesDict of one clip (see the module docstring)."""
  audio = tfds.features.Audio(shape=(None,), dtype=np.int16, sample_rate=sample_rate)
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(),
      "row": np.int32,
      "category": tfds.features.Text(),
      "labels": tfds.features.Sequence(tfds.features.ClassLabel(names=list(classes))),
      "label_names": tfds.features.Sequence(tfds.features.Text()),
      "labels_multi_hot": tfds.features.Tensor(shape=(len(classes),), dtype=np.float32),
      "duet": np.bool_,
      "audio": audio,
      # Duet stems [K * samples], player-major (K = 0 for solos and real duets); flat because
      # tfds 4.9 can neither serialise an empty sequence of variable-length audio nor decode an
      # empty 2-d dynamic tensor with numpy. reshape(K, -1) with K = len(instrument).
      "sources": {
          "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16),
          "instrument": tfds.features.Sequence(tfds.features.Text()),
      },
      "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
      "frame_height": np.int32,
      "frame_width": np.int32,
      "num_frames": np.int32,
      "pose": {
          "keypoints": tfds.features.Tensor(shape=(None, MAX_PERSONS, skeleton.NUM_JOINTS, 3),
                                            dtype=np.float16),
          "mask": tfds.features.Tensor(shape=(None, MAX_PERSONS), dtype=np.uint8),
          "frames_without_detection": np.int32,
          "num_tracks": np.int32,
      },
  })


def _read_pcm16(path: pathlib.Path) -> np.ndarray:
  """int16 [samples] of a mono PCM16 wav; BadClipError naming the file otherwise."""
  try:
    info = soundfile.info(str(path))
    if info.subtype != "PCM_16":
      raise schema.BadClipError(path, f"audio is {info.subtype}, expected PCM_16",
                                       "unreadable_audio")
    samples, _ = soundfile.read(str(path), dtype="int16", always_2d=False)
  except (RuntimeError, soundfile.LibsndfileError) as error:
    raise schema.BadClipError(path, f"unreadable audio ({error})",
                                     "unreadable_audio") from error
  if samples.ndim != 1 or samples.shape[0] != info.frames:
    raise schema.BadClipError(path, f"read {samples.shape} samples, header says "
                                     f"{info.frames}", "unreadable_audio")
  return samples


def _read_jpeg_bytes(path: pathlib.Path) -> bytes:
  """A frame's bytes, checked for the JPEG start / end markers (truncated files fail)."""
  try:
    data = path.read_bytes()
  except OSError as error:
    raise schema.BadClipError(path, f"unreadable frame ({error})",
                                     "corrupt_frame") from error
  if data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
    raise schema.BadClipError(path, "corrupt or truncated JPEG (missing start / end "
                                     "marker)", "corrupt_frame")
  return data


def load_clip_example(record: schema.ClipRecord, info: schema.DatasetInfo, cache=None) -> dict:
  """Reads and checks one clip fully into a feature dict; raises BadClipError naming the file.
  cache: a clip_checks.ValidationCache of checks already passed (the build's up-front pass)."""
  clip = reader.validate_clip(record, info.sample_rate, info.fps, audio_length=1,
                                     num_frames=1, cache=cache)
  audio = _read_pcm16(record.audio)
  stems = [_read_pcm16(path) for path in record.sources]
  if any(stem.shape != audio.shape for stem in stems):
    raise schema.BadClipError(record.sources[0], f"stem lengths {[s.size for s in stems]} "
                                     f"differ from the mixture's {audio.size} samples",
                                     "unreadable_audio")
  # audio_sources/<category>/<id>/<k>_<instrument>.wav
  instruments = [p.stem.split("_", 1)[-1] for p in record.sources]
  frames = np.array([_read_jpeg_bytes(record.frame_path(i)) for i in range(record.num_frames)],
                    dtype=object)
  pose = reader.load_pose(record.pose, record.num_frames, clip.frame_width,
                                 clip.frame_height, MAX_PERSONS)
  return {
      "id": record.id,
      "row": record.row,
      "category": record.category,
      "labels": list(record.labels),
      "label_names": list(record.labels),
      "labels_multi_hot": schema.multi_hot(record.labels, info.classes),
      "duet": record.duet,
      "audio": audio,
      "sources": {"audio": (np.concatenate(stems) if stems else np.zeros((0,), np.int16)),
                  "instrument": instruments},
      "frames": frames,
      "frame_height": clip.frame_height,
      "frame_width": clip.frame_width,
      "num_frames": record.num_frames,
      "pose": {
          "keypoints": np.ascontiguousarray(pose.keypoints.transpose(1, 0, 2, 3)),  # [F, P, J, 3]
          "mask": np.ascontiguousarray(pose.mask.T),  # [F, P]
          "frames_without_detection": pose.frames_without_detection,
          "num_tracks": pose.num_tracks,
      },
  }


def _read_csv_rows(path: pathlib.Path) -> list[dict[str, str]]:
  """Rows of a CSV file as dicts (the index / mixture files, kept verbatim in the metadata)."""
  with path.open(newline="") as handle:
    return list(csv.DictReader(handle))


class _LayoutBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared logic: a dataset root in the shared layout -> one example per clip and split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: clips with audio, JPEG frames, pose, stems."}
  DATASET = ""  # labels.json "dataset" value this builder accepts
  CLASSES: tuple[str, ...] = ()

  def __init__(self, *, skip_bad_clips: bool | None = None,
               source_root: str | os.PathLike | None = None, **kwargs):
    """skip_bad_clips: leave bad clips out and count them (default: $TRIBERT_TFDS_SKIP_BAD_CLIPS);
    source_root: dataset root to read instead of the download config's manual_dir."""
    self.skip_bad_clips = _skip_from_env() if skip_bad_clips is None else bool(skip_bad_clips)
    self.source_root = pathlib.Path(source_root) if source_root is not None else None
    self.build_report: dict[str, Any] | None = None
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=clip_features(self.CLASSES, 11025),
        supervised_keys=None,
        homepage="https://github.com/ubc-vision/TriBERT",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # records keep index row order: record i <-> metadata rows[i]
    )

  # -- Source root ------------------------------------------------------------------------------

  def _source_root(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """The dataset root to read (source_root, else manual_dir)."""
    if self.source_root is not None:
      return self.source_root
    return pathlib.Path(dl_manager.manual_dir)

  def _check_root(self, root: pathlib.Path) -> schema.DatasetInfo:
    """labels.json of root must match this builder (dataset name, classes, rates)."""
    info = reader.read_labels(root)
    if info.dataset != self.DATASET:
      raise ValueError(f"{root}/labels.json says dataset {info.dataset!r}; the {self.name} "
                       f"builder needs a {self.DATASET!r} root")
    if info.classes != self.CLASSES:
      raise ValueError(f"{root}/labels.json classes {list(info.classes)} differ from the "
                       f"{len(self.CLASSES)} {self.name} classes {list(self.CLASSES)}")
    if info.sample_rate != 11025 or abs(info.fps - 8.0) > 1e-6:
      raise ValueError(f"{root}/labels.json: {info.sample_rate} Hz / {info.fps} fps, expected "
                       "11025 Hz / 8 fps")
    return info

  def _source_metadata(self, root: pathlib.Path) -> dict[str, Any]:
    """What to record about the source root (overridden by SynthMUSIC)."""
    return {"root": str(root)}

  # -- Splits -----------------------------------------------------------------------------------

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = self._source_root(dl_manager)
    info = self._check_root(root)
    records = {split: reader.read_index(root, split, info.classes)
               for split in schema.SPLITS}
    for split in ("val", "test"):  # mixture lists must name clips of their split
      for num_mix in (2, 3):
        reader.read_mixtures(root, split, num_mix, records[split])
    # Cheap checks of every clip first, so a failing build lists every bad file at once.
    report = {"source_root": str(root), "skip_bad_clips": self.skip_bad_clips,
              "clips": {s: len(r) for s, r in records.items()}, "written": {},
              "skipped": collections.Counter(), "bad_files": []}
    bad: dict[str, dict[int, str]] = {s: {} for s in schema.SPLITS}
    self._validation = clip_checks.ValidationCache()  # in memory: reused by _generate_examples
    for split, split_records in records.items():
      for record in split_records:
        try:
          reader.validate_clip(record, info.sample_rate, info.fps, audio_length=1,
                                      num_frames=1, cache=self._validation)
        except schema.BadClipError as error:
          self._note_bad(report, bad, split, record, error)
    self._raise_if_bad(report)
    metadata = self.info.metadata
    metadata.update({
        "dataset": info.dataset, "classes": list(info.classes), "sample_rate": info.sample_rate,
        "fps": info.fps, "max_persons": MAX_PERSONS,
        "index": {s: _read_csv_rows(root / "index" / f"{s}.csv") for s in schema.SPLITS},
        "mixtures": {name: [{"mixture_id": r["mixture_id"],
                             "clips": [x for x in r["clips"].split(";") if x]}
                            for r in _read_csv_rows(root / "index" / f"{name}.csv")]
                     for name in MIXTURE_LISTS},
        "rows": {}, "bad_clips": {}, "source": self._source_metadata(root),
    })
    self._report, self._bad = report, bad
    return {split: self._generate_examples(split, records[split], info)
            for split in schema.SPLITS}

  def _note_bad(self, report, bad, split: str, record, error: schema.BadClipError):
    """Counts one bad clip in the report."""
    bad[split][record.row] = error.kind
    report["skipped"][error.kind] += 1
    report["bad_files"].append(f"[{split} {record.id}] {error}")

  def _raise_if_bad(self, report) -> None:
    """Fails the build listing every bad file, unless skipping is allowed."""
    if report["bad_files"] and not self.skip_bad_clips:
      counts = ", ".join(f"{k}={v}" for k, v in sorted(report["skipped"].items()))
      raise BadClipsError(
          f"{len(report['bad_files'])} bad clip(s) in {report['source_root']} ({counts}); "
          f"fix them or build with --skip_bad_clips ({SKIP_ENV}=1):\n  "
          + "\n  ".join(report["bad_files"]), _plain_report(report))

  def _generate_examples(self, split: str, records: list[schema.ClipRecord],
                         info: schema.DatasetInfo) -> Iterator[tuple[int, dict]]:
    rows = []
    for record in records:
      if record.row in self._bad[split]:
        continue
      try:
        example = load_clip_example(record, info, self._validation)
      except schema.BadClipError as error:
        self._note_bad(self._report, self._bad, split, record, error)
        self._raise_if_bad(self._report)
        continue
      rows.append(record.row)
      yield record.row, example  # int keys + disable_shuffling: stored in row order
    # Runs when the writer has consumed the split (before the metadata is written).
    self._report["written"][split] = len(rows)
    metadata = self.info.metadata
    metadata["rows"][split] = rows
    metadata["bad_clips"][split] = {str(r): k for r, k in sorted(self._bad[split].items())}
    metadata["build_report"] = _plain_report(self._report)
    self.build_report = metadata["build_report"]


def _plain_report(report: dict[str, Any]) -> dict[str, Any]:
  """JSON-serialisable copy of a build report."""
  return json.loads(json.dumps({**report, "skipped": dict(report["skipped"])}))


class Synthmusic(_LayoutBuilder):
  """SynthMUSIC (21 instruments, solos and duets with stems), one config per generator size."""

  DATASET = "synthmusic"
  CLASSES = schema.DATASET_CLASSES["synthmusic"]
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="tiny", description="4 solos per class + 6 duets, 10 s"),
      tfds.core.BuilderConfig(name="default", description="24 solos per class + 60 duets"),
      tfds.core.BuilderConfig(name="large", description="96 solos per class + 240 duets"),
  ]
  DEFAULT_CONFIG_NAME = "tiny"
  SEED = 0  # generation seed when the builder generates the data itself

  def _source_root(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path:
    """source_root or manual_dir (a generated root of this size), else generate one."""
    root = self.source_root
    if root is None and dl_manager._manual_dir is not None:  # pylint: disable=protected-access
      manual = pathlib.Path(dl_manager._manual_dir)  # pylint: disable=protected-access
      if (manual / "labels.json").is_file():
        root = manual
    if root is None:
      from data_pipeline import synthmusic

      root = pathlib.Path(dl_manager.download_dir) / f"synthmusic_{self.builder_config.name}"
      synthmusic.generate(root, size=self.builder_config.name, seed=self.SEED, progress=True)
    return root

  def _source_metadata(self, root: pathlib.Path) -> dict[str, Any]:
    """The generator's parameters (ROOT/.complete), which must match this config's size."""
    from data_pipeline import synthmusic

    marker = root / synthmusic.COMPLETE_MARKER
    if not marker.is_file():
      raise ValueError(f"{marker} not found: {root} is not a completely generated SynthMUSIC "
                       "root (python -m data_pipeline.synthmusic --out ROOT --size SIZE)")
    params = json.loads(marker.read_text())
    if params.get("size") != self.builder_config.name:
      raise ValueError(f"{root} holds SynthMUSIC size {params.get('size')!r}, but the builder "
                       f"config is {self.builder_config.name!r}")
    return {"root": str(root), "generator": params}


_MUSIC_INSTRUCTIONS = """\
MUSIC videos are on YouTube only; nothing here downloads them. manual_dir is the dataset root
written by the project's ingestion command:

1. Label files (github.com/roudimit/MUSIC_dataset): MUSIC21_solo_videos.json and
   MUSIC_duet_videos.json ({{"videos": {{category: [youtube ids]}}}}); for the 11-class MUSIC:
   MUSIC_solo_videos.json and MUSIC_duet_videos.json.
2. Download every listed id as <youtube_id>.mp4 (any of mp4/webm/mkv) into VIDEOS/, e.g.
   `yt-dlp -f "bv*[height<=480]+ba/b" -o "VIDEOS/%(id)s.%(ext)s" -a ids.txt`. Some ids are gone
   (TriBERT found 314 of MUSIC21 missing); step 5 counts them, not fatal with --allow_missing.
3. Split files in SPLITS/: train.txt, test.txt (optional val.txt), one id per line. TriBERT:
   its release's 80/20 split (840 train / 211 test ids, github.com/ubc-vision/TriBERT); MUSIC:
   the co-separation train/val/test split.
4. AlphaPose (Halpe-136 full body, with tracking) on the 8 fps frames, one <id>.json each in
   POSE/ (run step 5 once without --pose_dir to get ROOT/frames first, then rerun with it).
5. python -m data_pipeline.ingest --videos VIDEOS --out ROOT --split_dir SPLITS \\
       --solo_json <solo json> --duet_json <duet json> --pose_dir POSE --dataset {dataset}
6. python -m data_pipeline.loading.build_tfds --dataset {dataset} --manual_dir ROOT \\
       --data_dir DATA_DIR
"""


class Music21(_LayoutBuilder):
  """MUSIC21 (21 instruments, real YouTube solos and duets), from a preprocessed manual_dir."""

  DATASET = "music21"
  CLASSES = schema.DATASET_CLASSES["music21"]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MUSIC_INSTRUCTIONS.format(dataset="music21")


class Music(_LayoutBuilder):
  """MUSIC (11 instruments), from a preprocessed manual_dir."""

  DATASET = "music"
  CLASSES = schema.DATASET_CLASSES["music"]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MUSIC_INSTRUCTIONS.format(dataset="music")


BUILDERS = {"synthmusic": Synthmusic, "music21": Music21, "music": Music}
