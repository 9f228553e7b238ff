"""Tests of data_pipeline.layout: index / mixture CSVs, AlphaPose parsing, clip checks."""

import json
import pathlib
import shutil

import numpy as np
import pytest
import soundfile

from data_pipeline.layout import reader, schema, skeleton
from tests import layout_fixtures


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> pathlib.Path:
  return layout_fixtures.write_layout(tmp_path_factory.mktemp("index") / "root")


@pytest.fixture
def fresh_layout(tmp_path) -> pathlib.Path:
  """A layout a test may damage."""
  return layout_fixtures.write_layout(tmp_path / "root", splits=("test",))


def _validate(record):
  return reader.validate_clip(record, 11025, 8.0, 65535, 3)


def test_read_labels_index_and_mixtures(layout):
  info = reader.read_labels(layout)
  assert info.classes == layout_fixtures.CLASSES and info.sample_rate == 11025 and info.fps == 8
  records = reader.read_index(layout, "test", info.classes)
  assert [r.row for r in records] == list(range(5))
  duet = records[4]
  assert duet.duet and duet.labels == ("cello", "trumpet") and duet.category == "cello+trumpet"
  assert len(duet.sources) == 2 and all(p.is_file() for p in duet.sources)
  assert not records[0].duet and records[0].sources == ()
  assert records[0].frame_path(0).name == "000001.jpg" and records[0].frame_path(0).is_file()
  np.testing.assert_array_equal(schema.multi_hot(duet.labels, info.classes), [1, 0, 1, 0])
  mixtures = reader.read_mixtures(layout, "test", 2, records)
  assert len(mixtures) == 8  # 6 solo pairs + the duet with each of the 2 other classes
  for mixture in mixtures:
    labels = [x for r in mixture.clip_rows for x in records[r].labels]
    assert len(labels) == len(set(labels))
  assert len(reader.read_mixtures(layout, "test", 3, records)) == 5


def test_mixture_with_unknown_clip_names_the_file(layout, tmp_path):
  root = tmp_path / "copy"
  shutil.copytree(layout / "index", root / "index")
  (root / "index" / "test_mixtures_n2.csv").write_text("mixture_id,clips\nm0,test000;nope\n")
  records = reader.read_index(layout, "test")
  with pytest.raises(ValueError, match=r"test_mixtures_n2\.csv.*nope"):
    reader.read_mixtures(root, "test", 2, records)
  with pytest.raises(ValueError, match=r"test_mixtures_n3\.csv.*2 clips"):
    (root / "index" / "test_mixtures_n3.csv").write_text("mixture_id,clips\nm0,test000;test001\n")
    reader.read_mixtures(root, "test", 3, records)


def test_index_with_unknown_label_names_the_file(layout, tmp_path):
  (tmp_path / "index").mkdir()
  text = (layout / "index" / "val.csv").read_text().replace(",flute,0,", ",kazoo,0,", 1)
  (tmp_path / "index" / "val.csv").write_text(text)
  with pytest.raises(ValueError, match=r"val\.csv.*kazoo"):
    reader.read_index(tmp_path, "val", layout_fixtures.CLASSES)


def _record(frame, idx, x_offset=0.0, score=1.0):
  points = np.zeros((136, 3))
  points[:, 0] = np.arange(136) + x_offset  # x encodes the Halpe keypoint number
  points[:, 1] = 50.0
  points[:, 2] = 0.9
  record = {"image_id": f"{frame + 1:06d}.jpg", "category_id": 1,
            "keypoints": points.reshape(-1).tolist(), "score": score, "box": [0, 0, 1, 1]}
  if idx is not None:
    record["idx"] = idx
  return record


def test_load_pose_keeps_longest_tracks_and_halpe_joints(tmp_path):
  records = [_record(f, 5) for f in range(6)]  # track 5: 6 frames
  records += [_record(f, 2, x_offset=1.0) for f in (0, 2, 4, 6)]  # track 2: 4 frames
  records += [_record(f, 1) for f in (1, 3)]  # track 1: 2 frames (dropped)
  path = tmp_path / "pose.json"
  path.write_text(json.dumps(records))
  track = reader.load_pose(path, num_frames=10, frame_width=200, frame_height=100)
  assert track.keypoints.shape == (2, 10, 68, 3) and track.keypoints.dtype == np.float16
  np.testing.assert_array_equal(track.mask[0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(track.mask[1], [1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
  assert track.frames_without_detection == 3 and track.num_tracks == 3
  x = track.keypoints[0, 0, :, 0].astype(np.float64) * 200  # back to Halpe numbers
  np.testing.assert_allclose(x, skeleton.HALPE_TO_TRIBERT, atol=0.1)
  assert list(skeleton.HALPE_TO_TRIBERT[[0, 25, 26, 46, 47, 67]]) == [0, 25, 94, 114, 115, 135]
  np.testing.assert_allclose(track.keypoints[:, :, :, 1][track.mask == 1], 0.5, atol=1e-3)
  # Zeros exactly where nobody of that slot was detected.
  assert not track.keypoints[track.mask == 0].any()


def test_load_pose_without_tracking_ranks_by_score(tmp_path):
  records = [_record(0, None, score=0.2), _record(0, None, x_offset=2.0, score=0.9),
             _record(0, None, x_offset=1.0, score=0.5), _record(1, None, score=0.1)]
  path = tmp_path / "pose.json"
  path.write_text(json.dumps(records))
  track = reader.load_pose(path, num_frames=3, frame_width=1000, frame_height=100)
  np.testing.assert_array_equal(track.mask, [[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(track.keypoints[0, 0, 0, 0], 0.002, atol=1e-4)  # score 0.9 first
  np.testing.assert_allclose(track.keypoints[1, 0, 0, 0], 0.001, atol=1e-4)


@pytest.mark.parametrize("content, match", [
    ("{not json", "unreadable pose JSON"),
    (json.dumps([{"image_id": "000001.jpg", "keypoints": [1.0] * 26 * 3}]), "expected 408"),
])
def test_load_pose_errors_name_the_file(tmp_path, content, match):
  path = tmp_path / "broken.json"
  path.write_text(content)
  with pytest.raises(schema.BadClipError, match=f"broken.json.*{match}"):
    reader.load_pose(path, 4, 10, 10)


def test_flip_permutation_swaps_left_and_right():
  perm = skeleton.FLIP_PERMUTATION
  np.testing.assert_array_equal(perm[perm], np.arange(68))
  assert perm[5] == 6 and perm[0] == 0 and perm[17] == 17 and perm[26] == 47 and perm[67] == 46


def test_validate_clip_accepts_good_clip(layout):
  record = reader.read_index(layout, "train")[0]
  info = _validate(record)
  assert info.num_samples == int(6.5 * 11025) and (info.frame_height, info.frame_width) == (40, 56)


def _damage(root: pathlib.Path, how: str) -> pathlib.Path:
  """Damages clip test000 of `root`; returns the file the error must name."""
  record = reader.read_index(root, "test")[0]
  if how == "missing_audio":
    record.audio.unlink()
    return record.audio
  if how == "short_audio":
    soundfile.write(record.audio, np.zeros(1000, np.float32), 11025, subtype="PCM_16")
    return record.audio
  if how == "wrong_rate":
    soundfile.write(record.audio, np.zeros(80000, np.float32), 16000, subtype="PCM_16")
    return record.audio
  if how == "corrupt_audio":
    record.audio.write_bytes(b"RIFF....garbage")
    return record.audio
  if how == "missing_frame":
    record.frame_path(10).unlink()
    return record.frame_path(10)
  if how == "missing_pose":
    record.pose.unlink()
    return record.pose
  raise ValueError(how)


@pytest.mark.parametrize("how, kind", [
    ("missing_audio", "missing_audio"), ("short_audio", "audio_too_short"),
    ("wrong_rate", "wrong_sample_rate"), ("corrupt_audio", "unreadable_audio"),
    ("missing_frame", "missing_frames"), ("missing_pose", "missing_pose")])
def test_validate_clip_errors_name_the_file(fresh_layout, how, kind):
  bad_file = _damage(fresh_layout, how)
  record = reader.read_index(fresh_layout, "test")[0]
  with pytest.raises(schema.BadClipError) as error:
    _validate(record)
  assert str(bad_file) in str(error.value) and error.value.kind == kind


def test_validate_clip_rejects_frames_shorter_than_crop(fresh_layout):
  record = reader.read_index(fresh_layout, "test")[0]
  short = schema.ClipRecord(**{**record.__dict__, "num_frames": 40})  # 5 s of frames
  with pytest.raises(schema.BadClipError, match="shorter than"):
    _validate(short)
