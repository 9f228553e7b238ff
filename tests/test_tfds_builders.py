"""Tests of the TFDS builders and of the input pipeline reading them (folder vs TFDS identity)."""

from __future__ import annotations

import itertools
import json
import pathlib
import shutil

import numpy as np
import pytest
import soundfile

from configs.parts import data as data_parts
from data_pipeline.ingest import cli as ingest_cli
from data_pipeline.layout import reader, schema
from data_pipeline.loading import build_tfds
from data_pipeline.loading import pipeline as input_pipeline
from data_pipeline.loading import tfds_builders
from tests import test_ingest

# MUSIC21 manual_dir: (label, split, tone Hz); 6.5 s videos, enough for one 65535-sample crop.
VIDEOS = {
    "accA": ("accordion", "train", 440.0), "celB": ("cello", "train", 523.0),
    "fluC": ("flute", "train", 587.0), "vioD": ("violin", "val", 659.0),
    "truE": ("trumpet", "val", 698.0), "tubF": ("tuba", "test", 784.0),
    "xylG": ("xylophone", "test", 880.0), "duoH": ("acoustic guitar violin", "test", 988.0),
}
SECONDS = 6.5


def data_config(**overrides):
  """Tiny config.data with overrides."""
  config = data_parts.get_data_config("tiny")
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


def assert_same_batches(first, second):
  """Every key of every batch equal, bit for bit."""
  assert len(first) == len(second) > 0
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def synthmusic_built(synthmusic_tiny, tmp_path_factory):
  """SynthMUSIC tiny built through the wrapper command (main) from the session's tiny root."""
  data_dir = tmp_path_factory.mktemp("tfds")
  status = build_tfds.main(["--dataset", "synthmusic", "--size", "tiny", "--data_dir",
                            str(data_dir), "--manual_dir", str(synthmusic_tiny)])
  assert status == 0
  return synthmusic_tiny, data_dir


@pytest.fixture(scope="module")
def music21_root(tmp_path_factory) -> pathlib.Path:
  """A small MUSIC21 root written by the ingestion command from generated mp4s + AlphaPose."""
  base = tmp_path_factory.mktemp("music21_inputs")
  solo, duet, splits = {}, {}, {"train": [], "val": [], "test": []}
  for video_id, (label, split, frequency) in VIDEOS.items():
    test_ingest.make_video(base / "videos" / f"{video_id}.mp4", seconds=SECONDS,
                               frequency=frequency)
    test_ingest.make_pose(base / "pose" / f"{video_id}.json", int(SECONDS * 8), 320, 240)
    (duet if video_id == "duoH" else solo).setdefault(label, []).append(video_id)
    splits[split].append(video_id)
  paths = test_ingest.write_inputs(base, solo, duet, splits)
  root = base / "root"
  status = ingest_cli.main(["--videos", str(base / "videos"), "--out", str(root),
                            "--split_dir", str(paths["split_dir"]),
                            "--solo_json", str(paths["solo_json"]),
                            "--duet_json", str(paths["duet_json"]), "--pose_dir",
                            str(base / "pose"), "--dataset", "music21", "--workers", "2",
                            "--no_progress"])
  assert status == 0
  return root


def test_synthmusic_examples_hold_the_clip_files_unmodified(synthmusic_built, capsys):
  root, data_dir = synthmusic_built
  info = reader.read_labels(root)
  builder = tfds_builders.Synthmusic(config="tiny", data_dir=str(data_dir))
  assert builder.is_prepared()
  metadata = builder.info.metadata
  assert tuple(metadata["classes"]) == info.classes and metadata["dataset"] == "synthmusic"
  assert metadata["build_report"]["skipped"] == {} and metadata["source"]["generator"]["size"] \
      == "tiny"
  for split in schema.SPLITS:
    records = reader.read_index(root, split, info.classes)
    assert builder.info.splits[split].num_examples == len(records)
    assert metadata["rows"][split] == list(range(len(records)))
  for name in tfds_builders.MIXTURE_LISTS:
    split, num_mix = name.split("_")[0], int(name[-1])
    csv_mixtures = reader.read_mixtures(root, split, num_mix,
                                               reader.read_index(root, split))
    assert [m["mixture_id"] for m in metadata["mixtures"][name]] == \
        [m.mixture_id for m in csv_mixtures]
  records = reader.read_index(root, "train", info.classes)
  source = builder.as_data_source("train")
  duet = next(r for r in records if r.duet)
  for record in (records[0], duet):
    example = source[record.row]
    assert example["id"].decode() == record.id and example["row"] == record.row
    assert [x.decode() for x in example["label_names"]] == list(record.labels)
    np.testing.assert_array_equal(example["labels_multi_hot"],
                                  schema.multi_hot(record.labels, info.classes))
    wav, _ = soundfile.read(record.audio, dtype="int16")
    np.testing.assert_array_equal(example["audio"], wav)
    assert list(example["frames"]) == [record.frame_path(i).read_bytes()
                                       for i in range(record.num_frames)]
    pose = reader.load_pose(record.pose, record.num_frames, int(example["frame_width"]),
                                   int(example["frame_height"]))
    np.testing.assert_array_equal(example["pose"]["keypoints"].transpose(1, 0, 2, 3),
                                  pose.keypoints)
    np.testing.assert_array_equal(example["pose"]["mask"].T, pose.mask)
    stems = example["sources"]["audio"].reshape(len(record.sources), -1) if record.duet else []
    for stem, path in zip(stems, record.sources):
      np.testing.assert_array_equal(stem, soundfile.read(path, dtype="int16")[0])
    assert bool(example["duet"]) == record.duet and len(stems) == (2 if record.duet else 0)
  # Rebuilding reuses the prepared version and still reports it.
  assert build_tfds.main(["--dataset", "synthmusic", "--size", "tiny", "--data_dir",
                          str(data_dir), "--manual_dir", str(root)]) == 0
  assert "train      46 clips" in capsys.readouterr().out


@pytest.mark.parametrize("process_index, cache_mb", [(0, 1024), (1, 0)])
def test_folder_and_tfds_give_identical_train_batches(synthmusic_built, process_index, cache_mb):
  root, data_dir = synthmusic_built
  batches = {}
  for source in ("folder", "tfds"):
    config = data_config(root=str(root), source=source, tfds_name="synthmusic/tiny",
                         tfds_data_dir=str(data_dir), multi_source=True, batch_size=4,
                         tfds_cache_mb=cache_mb)
    pipeline = input_pipeline.build_train_pipeline(config, seed=11, process_index=process_index,
                                                   process_count=2)
    batches[source] = list(itertools.islice(iter(pipeline), 3))
  assert_same_batches(batches["folder"], batches["tfds"])


def test_folder_and_tfds_give_identical_eval_batches(synthmusic_built):
  root, data_dir = synthmusic_built
  batches = {}
  for source in ("folder", "tfds"):
    config = data_config(root=str(root), source=source, tfds_name="synthmusic/tiny",
                         tfds_data_dir=str(data_dir), eval_batch_size=3, num_mix=3)
    pipeline = input_pipeline.build_eval_pipeline(config, "val", process_index=0,
                                                  process_count=1)
    batches[source] = list(pipeline)
  assert_same_batches(batches["folder"], batches["tfds"])
  seen = [i for b in batches["tfds"] for i, v in zip(b["mixture_index"], b["valid"]) if v]
  assert sorted(seen) == list(range(8))


def test_music21_from_ingested_videos(music21_root, tmp_path):
  builder, report = build_tfds.build("music21", data_dir=str(tmp_path / "tfds"),
                                     manual_dir=str(music21_root))
  assert report["written"] == {"train": 3, "val": 2, "test": 3} and report["skipped"] == {}
  metadata = builder.info.metadata
  assert metadata["classes"] == list(schema.MUSIC21_CLASSES)
  assert len(metadata["mixtures"]["test_mixtures_n2"]) > 0
  duet = next(e for e in builder.as_data_source("test") if e["duet"])
  assert [x.decode() for x in duet["label_names"]] == ["acoustic_guitar", "violin"]
  assert duet["sources"]["audio"].size == 0  # real duets have no stems
  batches = {}
  for source in ("folder", "tfds"):
    config = data_config(root=str(music21_root), source=source, tfds_name="music21",
                         tfds_data_dir=str(tmp_path / "tfds"), num_classes=21, multi_source=True)
    evaluation = list(input_pipeline.build_eval_pipeline(config, "test", process_index=0,
                                                         process_count=1))
    train = input_pipeline.build_train_pipeline(config, seed=2, process_index=0, process_count=1)
    batches[source] = evaluation + list(itertools.islice(iter(train), 2))
  assert_same_batches(batches["folder"], batches["tfds"])
  with pytest.raises(ValueError, match="needs a 'music' root"):  # wrong builder for the root
    build_tfds.build("music", data_dir=str(tmp_path / "other"), manual_dir=str(music21_root))


def test_bad_clips_fail_the_build_or_are_skipped_and_counted(music21_root, tmp_path):
  root = tmp_path / "root"
  shutil.copytree(music21_root, root)
  records = {r.id: r for r in reader.read_index(root, "train")}
  frame = records["celB"].frame_path(20)
  frame.write_bytes(frame.read_bytes()[:300])  # truncated mid-clip: every frame is decoded
  with pytest.raises(tfds_builders.BadClipsError, match=str(frame)):
    build_tfds.build("music21", data_dir=str(tmp_path / "a"), manual_dir=str(root))
  records["accA"].audio.unlink()  # missing
  assert build_tfds.main(["--dataset", "music21", "--manual_dir", str(root),
                          "--data_dir", str(tmp_path / "b")]) == 1
  with pytest.raises(tfds_builders.BadClipsError, match=str(records["accA"].audio)) as error:
    build_tfds.build("music21", data_dir=str(tmp_path / "b"), manual_dir=str(root))
  # Both are found by the up-front check (which decodes every frame) and reported together.
  assert error.value.report["skipped"] == {"missing_audio": 1, "corrupt_frame": 1}
  assert str(frame) in str(error.value)
  builder, report = build_tfds.build("music21", data_dir=str(tmp_path / "c"),
                                     manual_dir=str(root), skip_bad_clips=True)
  assert report["skipped"] == {"missing_audio": 1, "corrupt_frame": 1}
  assert report["written"] == {"train": 1, "val": 2, "test": 3}
  assert len(report["bad_files"]) == 2 and builder.info.splits["train"].num_examples == 1
  metadata = json.loads((pathlib.Path(builder.data_dir) / "metadata.json").read_text())
  assert metadata["bad_clips"]["train"] == {str(records["accA"].row): "missing_audio",
                                            str(records["celB"].row): "corrupt_frame"}
  # The pipeline treats clips left out of the build as bad clips: an error, or skipped + counted.
  config = data_config(source="tfds", tfds_name="music21", tfds_data_dir=str(tmp_path / "c"),
                       num_classes=21, num_mix=1, batch_size=1)
  with pytest.raises(schema.BadClipError, match="left out of the TFDS build"):
    input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  config.skip_bad_clips = True
  pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  assert pipeline.stats.skipped_clips == {"missing_audio": 1, "corrupt_frame": 1}
  assert next(iter(pipeline))["clip_index"].tolist() == [[records["fluC"].row]]


def test_tfds_source_errors_name_what_is_missing(tmp_path):
  with pytest.raises(ValueError, match="tfds_name"):
    input_pipeline.build_train_pipeline(data_config(source="tfds"), seed=0, process_index=0,
                                        process_count=1)
  with pytest.raises(FileNotFoundError, match="build_tfds"):
    input_pipeline.build_train_pipeline(
        data_config(source="tfds", tfds_name="music21", tfds_data_dir=str(tmp_path),
                    num_classes=21), seed=0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="source"):
    input_pipeline.build_train_pipeline(data_config(source="files"), seed=0, process_index=0,
                                        process_count=1)
