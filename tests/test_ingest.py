"""Tests of data_pipeline.ingest on small generated mp4 files (lavfi test pattern + sine)."""

from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from data_pipeline.ingest import cli, decode, labels
from data_pipeline.ingest import report as ingest_report
from data_pipeline.layout import reader, schema, writer
from tests.media_helpers import make_video, write_inputs

REPO = pathlib.Path(__file__).resolve().parents[1]
SECONDS = 7.5
FPS = 8
SAMPLE_RATE = 11025


# ----------------------------------------------------------------------------------------------
# Input builders
# ----------------------------------------------------------------------------------------------


def make_pose(path: pathlib.Path, num_frames: int, width: int, height: int,
              keypoint_values: int = 408) -> pathlib.Path:
  """Writes an AlphaPose-style JSON: one tracked person in every frame."""
  rng = np.random.default_rng(len(path.name))
  records = []
  for frame in range(1, num_frames + 1):
    points = np.stack([rng.uniform(0, width, 136), rng.uniform(0, height, 136),
                       rng.uniform(0.2, 1.0, 136)], axis=1).reshape(-1)[:keypoint_values]
    records.append({"image_id": f"{frame:06d}.jpg", "category_id": 1,
                    "keypoints": [round(float(v), 3) for v in points], "score": 2.5,
                    "box": [10.0, 20.0, width / 2, height / 2], "idx": 1})
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(records))
  return path


def read_csv(path: pathlib.Path) -> tuple[list[str], list[dict[str, str]]]:
  with path.open(newline="") as handle:
    reader = csv.DictReader(handle)
    return list(reader.fieldnames), list(reader)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
  return float(np.fft.rfftfreq(samples.size, 1.0 / rate)[np.argmax(spectrum)])


# id -> (labels as in the label file, split, frequency, size, where the file lives)
GOOD = {
    "accA": ("accordion", "train", 440.0, "320x240", "accA.mp4"),
    "gtrE": ("Acoustic Guitar", "train", 523.0, "320x240", "solo/acoustic_guitar/gtrE.mp4"),
    "truF": ("trumpet", "train", 587.0, "320x240", "truF.mkv"),
    "vioC": ("violin", "val", 659.0, "240x320", "vioC.mp4"),
    "xylI": ("xylophone", "val", 698.0, "320x240", "xylI.mp4"),
    "-cel_B1": ("cello", "test", 784.0, "320x240", "nested/deeper/-cel_B1.mp4"),
    "fluD": ("flute", "test", 880.0, "320x240", "fluD.mp4"),
    "vioH": ("violin", "test", 988.0, "320x240", "vioH.mp4"),
    "duoG": ("acoustic guitar violin", "test", 1046.0, "320x240", "duets/duoG.mp4"),
}


@pytest.fixture(scope="module")
def good_inputs(tmp_path_factory) -> dict:
  """Nine small videos (one duet), labels, splits and AlphaPose files."""
  base = tmp_path_factory.mktemp("inputs")
  solo, duet, splits = {}, {}, {"train": [], "val": [], "test": []}
  for video_id, (label, split, frequency, size, relative) in GOOD.items():
    make_video(base / "videos" / relative, frequency=frequency, size=size)
    width, height = map(int, size.split("x"))
    # One pose file in AlphaPose's own per-video output layout, the rest as <id>.json.
    pose_name = (f"{video_id}/alphapose-results.json" if video_id == "xylI"
                 else f"{video_id}.json")
    make_pose(base / "pose" / pose_name, int(SECONDS * FPS), width, height)
    (duet if video_id == "duoG" else solo).setdefault(
        label, []).append(video_id)
    splits[split].append(video_id)
  paths = write_inputs(base, solo, duet, splits)
  return {"videos": base / "videos", "pose_dir": base / "pose", **paths}


@pytest.fixture(scope="module")
def processed(good_inputs, tmp_path_factory) -> tuple[pathlib.Path, dict]:
  """The nine videos preprocessed once through the Python API."""
  out = tmp_path_factory.mktemp("root") / "music21"
  report = cli.preprocess(good_inputs["videos"], out, workers=2, progress=False,
                                 **{k: good_inputs[k] for k in ("split_dir", "solo_json",
                                                                "duet_json", "pose_dir")})
  return out, report


# ----------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------


def test_layout_labels_and_report(processed):
  root, report = processed
  assert json.loads((root / "labels.json").read_text()) == {
      "dataset": "music21", "classes": sorted(schema.MUSIC21_CLASSES),
      "sample_rate": SAMPLE_RATE, "fps": FPS}
  counts = report["counts"]
  assert counts["processed"] == 9 and counts["skipped_done"] == 0 and counts["in_index"] == 9
  assert all(counts[kind] == 0 for kind in ingest_report.FAILURE_KINDS)
  assert report["splits"] == {"train": 3, "val": 2, "test": 4}
  assert not report["val_carved_from_train"]
  assert json.loads((root / "preprocess_report.json").read_text()) == report
  assert not any((root / ".preprocess" / "tmp").glob("*"))


def test_index_rows_frames_and_pose(processed, good_inputs):
  root, _ = processed
  seen = set()
  for split in schema.SPLITS:
    header, rows = read_csv(root / "index" / f"{split}.csv")
    assert header == list(schema.INDEX_COLUMNS)
    for row in rows:
      label, expected_split, _, size, _ = GOOD[row["id"]]
      assert expected_split == split
      seen.add(row["id"])
      expected_labels = {"acoustic guitar violin": "acoustic_guitar;violin",
                         "Acoustic Guitar": "acoustic_guitar"}.get(label, label)
      assert row["labels"] == expected_labels
      assert row["category"] == expected_labels.replace(";", "+")
      assert row["duet"] == ("1" if row["id"] == "duoG" else "0")
      assert row["sources"] == ""
      assert row["audio"] == f"audio/{row['category']}/{row['id']}.wav"
      assert row["frames"] == f"frames/{row['category']}/{row['id']}"
      assert row["pose"] == f"pose/{row['category']}/{row['id']}.json"
      frames = sorted((root / row["frames"]).iterdir())
      assert [f.name for f in frames] == [f"{i:06d}.jpg" for i in range(1, len(frames) + 1)]
      assert int(row["num_frames"]) == len(frames)
      assert abs(len(frames) - SECONDS * FPS) <= 2
      with Image.open(frames[0]) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == tuple(map(int, size.split("x")))  # source resolution kept
      pose_source = (good_inputs["pose_dir"] / "xylI" / "alphapose-results.json"
                     if row["id"] == "xylI" else good_inputs["pose_dir"] / f"{row['id']}.json")
      assert (root / row["pose"]).read_bytes() == pose_source.read_bytes()
  assert seen == set(GOOD)


def test_audio_is_11025_mono_with_the_right_tone(processed):
  root, _ = processed
  for split in schema.SPLITS:
    for row in read_csv(root / "index" / f"{split}.csv")[1]:
      samples, rate = decode.read_wav_mono16(root / row["audio"])
      assert rate == SAMPLE_RATE
      assert abs(samples.size / rate - SECONDS) < 0.1
      assert abs(peak_frequency(samples, rate) - GOOD[row["id"]][2]) < 2.0
      assert np.abs(samples).max() > 1000  # a real tone, not near-silence


def test_mixture_files(processed):
  root, report = processed
  expected = {"val_mixtures_n2": 1, "val_mixtures_n3": 0, "test_mixtures_n2": 5,
              "test_mixtures_n3": 2}
  assert report["mixtures"] == expected
  for name, count in expected.items():
    split = name.split("_")[0]
    labels = {r["id"]: set(r["labels"].split(";"))
              for r in read_csv(root / "index" / f"{split}.csv")[1]}
    header, rows = read_csv(root / "index" / f"{name}.csv")
    assert header == ["mixture_id", "clips"]
    assert len(rows) == count
    groups = set()
    for number, row in enumerate(rows):
      assert row["mixture_id"] == f"{split}_n{name[-1]}_{number:04d}"
      ids = row["clips"].split(";")
      assert len(ids) == int(name[-1]) and all(i in labels for i in ids)
      union = [label for i in ids for label in labels[i]]
      assert len(union) == len(set(union))  # disjoint label sets
      groups.add(frozenset(ids))
    assert len(groups) == count
  assert any("val_mixtures_n3" in w for w in report["warnings"])


def test_output_reads_through_dataset_index(processed):
  root, _ = processed
  info = reader.read_labels(root)
  records = reader.read_index(root, "test", info.classes)
  assert len(reader.read_mixtures(root, "test", 3, records)) == 2
  for record in records:
    clip = reader.validate_clip(record, SAMPLE_RATE, FPS, 65535, 3)
    track = reader.load_pose(record.pose, record.num_frames, clip.frame_width,
                                    clip.frame_height)
    assert track.mask[0].sum() == min(record.num_frames, int(SECONDS * FPS))


def test_rerun_skips_done_and_redoes_partial(processed, good_inputs):
  root, _ = processed
  arguments = {k: good_inputs[k] for k in ("split_dir", "solo_json", "duet_json", "pose_dir")}
  report = cli.preprocess(good_inputs["videos"], root, workers=2, progress=False,
                                 **arguments)
  assert report["counts"]["processed"] == 0 and report["counts"]["skipped_done"] == 9
  # Simulate a crash midway through one video: a frame gone, a stale temporary folder.
  frames = root / "frames" / "flute" / "fluD"
  before = len(list(frames.iterdir()))
  (frames / "000003.jpg").unlink()
  (root / ".preprocess" / "tmp" / "fluD.stale").mkdir(parents=True)
  report = cli.preprocess(good_inputs["videos"], root, workers=2, progress=False,
                                 **arguments)
  assert report["counts"]["processed"] == 1 and report["counts"]["skipped_done"] == 8
  assert len(list(frames.iterdir())) == before
  assert not (root / ".preprocess" / "tmp").exists()


def test_cli_matches_python_api(processed, good_inputs, tmp_path):
  root, _ = processed
  out = tmp_path / "cli_root"
  command = [sys.executable, "-m", "data_pipeline.ingest", "--videos",
             str(good_inputs["videos"]), "--out", str(out), "--workers", "2", "--no_progress",
             "--dataset", "music21", "--fps", "8", "--sample_rate", "11025", "--seed", "0"]
  for key in ("split_dir", "solo_json", "duet_json", "pose_dir"):
    command += [f"--{key}", str(good_inputs[key])]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert "processed" in result.stdout and "full report" in result.stdout
  for name in sorted((root / "index").iterdir()):
    assert (out / "index" / name.name).read_text() == name.read_text(), name.name


# ----------------------------------------------------------------------------------------------
# Failures: counted with --allow_missing, fatal (after finishing the rest) without
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict:
  """One good video and one of each failure kind."""
  base = tmp_path_factory.mktemp("bad")
  videos, poses = base / "videos", base / "pose"
  make_video(videos / "good1.mp4")
  (videos / "corrupt1.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
  make_video(videos / "noaud1.mp4", frequency=None)
  make_video(videos / "short1.mp4", seconds=3.0)
  make_video(videos / "silent1.mp4", silent=True)
  make_video(videos / "small1.mp4", size="160x120")
  make_video(videos / "nopose1.mp4")
  make_video(videos / "badpose1.mp4")
  whole = make_video(base / "whole.mp4", seconds=16.0, faststart=True)
  (videos / "trunc1.mp4").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
  for video_id in ("good1", "corrupt1", "noaud1", "short1", "silent1", "small1", "trunc1"):
    make_pose(poses / f"{video_id}.json", 60, 320, 240)
  make_pose(poses / "badpose1.json", 60, 320, 240, keypoint_values=51)  # COCO-17, not Halpe
  solo = {"accordion": ["good1"], "cello": ["corrupt1"], "violin": ["noaud1"],
          "flute": ["short1"], "trumpet": ["silent1"], "guzheng": ["small1"],
          "tuba": ["nofile1"], "xylophone": ["nopose1"], "erhu": ["badpose1"],
          "pipa": ["trunc1"]}
  ids = [i for group in solo.values() for i in group]
  paths = write_inputs(base, solo, None, {"train": ids[:5], "val": [], "test": ids[5:]})
  return {"videos": videos, "pose_dir": poses, **paths}


def test_failures_are_named_then_counted(bad_inputs, tmp_path):
  arguments = {k: bad_inputs[k] for k in ("split_dir", "solo_json", "pose_dir")}
  root = tmp_path / "root"
  with pytest.raises(labels.PreprocessError) as raised:
    cli.preprocess(bad_inputs["videos"], root, workers=2, progress=False, **arguments)
  message = str(raised.value)
  videos = bad_inputs["videos"]
  assert str(videos / "corrupt1.mp4") in message and "[unreadable]" in message
  assert f"{videos / 'noaud1.mp4'}: no audio stream" in message
  assert str(videos / "short1.mp4") in message and "[too_short]" in message
  assert str(videos / "silent1.mp4") in message and "[silent_audio]" in message
  assert str(videos / "small1.mp4") in message and "[too_small]" in message
  assert "'nofile1'" in message and "[missing_video]" in message
  assert "'nopose1'" in message and "[no_pose]" in message
  assert str(bad_inputs["pose_dir"] / "badpose1.json") in message and "got 51" in message
  assert f"{videos / 'trunc1.mp4'}: truncated" in message
  # The good video was still finished; nothing half-made was left and no index was written.
  assert (root / ".preprocess" / "done" / "good1.json").is_file()
  assert not (root / "index").exists() and not (root / "labels.json").exists()
  for failed in ("corrupt1", "noaud1", "short1", "silent1", "small1", "trunc1"):
    assert not list(root.glob(f"*/*/{failed}*"))
  assert raised.value.report["counts"]["processed"] == 3  # good1, nopose1, badpose1 decoded

  report = cli.preprocess(bad_inputs["videos"], root, workers=2, progress=False,
                                 allow_missing=True, **arguments)
  counts = report["counts"]
  assert counts["skipped_done"] == 3 and counts["processed"] == 0
  for kind in ("no_audio", "too_short", "silent_audio", "too_small", "missing_video", "no_pose",
               "bad_pose"):
    assert counts[kind] == 1, kind
  assert counts["unreadable"] == 2  # random bytes, and a download cut in half
  assert counts["in_index"] == 1 and report["index_written"]
  rows = [r["id"] for s in schema.SPLITS for r in read_csv(root / "index" / f"{s}.csv")[1]]
  assert rows == ["good1"]


def test_cli_exits_nonzero_naming_the_corrupt_file(bad_inputs, tmp_path):
  (tmp_path / "splits").mkdir()
  (tmp_path / "splits" / "train.txt").write_text("corrupt1\n")
  (tmp_path / "splits" / "test.txt").write_text("")
  command = [sys.executable, "-m", "data_pipeline.ingest", "--no_progress",
             "--videos", str(bad_inputs["videos"]), "--out", str(tmp_path / "root"),
             "--solo_json", str(bad_inputs["solo_json"]), "--split_dir", str(tmp_path / "splits"),
             "--pose_dir", str(bad_inputs["pose_dir"])]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert f"{bad_inputs['videos'] / 'corrupt1.mp4'}" in result.stderr
  assert "error:" in result.stderr and "unreadable" in result.stderr


def test_without_pose_dir_the_pose_column_is_empty(bad_inputs, tmp_path):
  (tmp_path / "splits").mkdir()
  (tmp_path / "splits" / "train.txt").write_text("good1\n")
  (tmp_path / "splits" / "test.txt").write_text("")
  report = cli.preprocess(bad_inputs["videos"], tmp_path / "root", progress=False,
                                 solo_json=bad_inputs["solo_json"],
                                 split_dir=tmp_path / "splits")
  # No val.txt, but a single train id is too few to carve a val part from.
  assert report["counts"]["in_index"] == 1 and report["splits"]["train"] == 1
  assert any("--pose_dir" in warning for warning in report["warnings"])
  rows = read_csv(tmp_path / "root" / "index" / "train.csv")[1]
  assert [(r["id"], r["pose"]) for r in rows] == [("good1", "")]
  assert not (tmp_path / "root" / "pose").exists()


def test_keep_without_pose_keeps_the_clip_with_an_empty_pose_column(bad_inputs, tmp_path):
  (tmp_path / "splits").mkdir()
  (tmp_path / "splits" / "train.txt").write_text("good1\nnopose1\n")
  (tmp_path / "splits" / "test.txt").write_text("")
  root = tmp_path / "root"
  report = cli.preprocess(bad_inputs["videos"], root, progress=False, workers=2,
                          solo_json=bad_inputs["solo_json"], split_dir=tmp_path / "splits",
                          pose_dir=bad_inputs["pose_dir"], keep_without_pose=True)
  counts = report["counts"]
  assert counts["no_pose"] == 0 and counts["in_index"] == 2 and counts["without_pose"] == 1
  assert "without_pose" in ingest_report.format_report(report)
  rows = {r["id"]: r["pose"] for s in schema.SPLITS
          for r in read_csv(root / "index" / f"{s}.csv")[1]}
  assert rows == {"good1": "pose/accordion/good1.json", "nopose1": ""}
  records = {r.id: r for s in schema.SPLITS for r in reader.read_index(root, s)}
  assert records["nopose1"].pose is None and records["good1"].pose.is_file()
  # The reader rejects it unless config.data.require_pose is False.
  with pytest.raises(schema.BadClipError, match="pose column is empty") as raised:
    reader.validate_clip(records["nopose1"], SAMPLE_RATE, FPS, 1, 1, content=False)
  assert raised.value.path == str(root / "pose" / "xylophone" / "nopose1.json")
  clip = reader.validate_clip(records["nopose1"], SAMPLE_RATE, FPS, 1, 1, content=False,
                              require_pose=False)
  assert not clip.has_pose


def test_short_side_rescales_frames_and_pose(tmp_path):
  make_video(tmp_path / "videos" / "bigA.mp4", size="400x300")
  source_pose = make_pose(tmp_path / "pose" / "bigA.json", 60, 400, 300)
  paths = write_inputs(tmp_path, {"cello": ["bigA"]}, None, {"train": ["bigA"], "test": []})
  root = tmp_path / "root"
  cli.preprocess(tmp_path / "videos", root, short_side=256, progress=False,
                        pose_dir=tmp_path / "pose", **paths)
  with Image.open(root / "frames" / "cello" / "bigA" / "000001.jpg") as image:
    assert image.size == (341, 256)
  original = json.loads(source_pose.read_text())
  scaled = json.loads((root / "pose" / "cello" / "bigA.json").read_text())
  np.testing.assert_allclose(np.reshape(scaled[0]["keypoints"], (136, 3)),
                             np.reshape(original[0]["keypoints"], (136, 3)) * [341 / 400,
                                                                              256 / 300, 1.0],
                             rtol=1e-6)
  assert scaled[0]["image_id"] == original[0]["image_id"] and scaled[0]["idx"] == 1
  # A rerun skips the video; a changed pose file is picked up again (and rescaled again).
  (tmp_path / "pose" / "bigA.json").write_text(json.dumps(original[:5]))
  report = cli.preprocess(tmp_path / "videos", root, short_side=256, progress=False,
                                 pose_dir=tmp_path / "pose", **paths)
  assert report["counts"]["skipped_done"] == 1 and report["counts"]["processed"] == 0
  rescaled = json.loads((root / "pose" / "cello" / "bigA.json").read_text())
  assert len(rescaled) == 5 and rescaled[0]["keypoints"] == scaled[0]["keypoints"]
  # AlphaPose run on the stored (already rescaled) frames is copied unchanged.
  cli.preprocess(tmp_path / "videos", root, short_side=256, progress=False,
                        pose_dir=tmp_path / "pose", pose_on_frames=True, **paths)
  assert (root / "pose" / "cello" / "bigA.json").read_bytes() == (
      tmp_path / "pose" / "bigA.json").read_bytes()
  # The download is replaced by a broken one: the old clip must not survive the failure.
  (tmp_path / "videos" / "bigA.mp4").write_bytes(b"\0" * 4096)
  report = cli.preprocess(tmp_path / "videos", root, short_side=256, progress=False,
                                 pose_dir=tmp_path / "pose", allow_missing=True, **paths)
  assert report["counts"]["unreadable"] == 1 and report["counts"]["in_index"] == 0
  assert not (root / "frames" / "cello" / "bigA").exists()
  assert not (root / "audio" / "cello" / "bigA.wav").exists()


# ----------------------------------------------------------------------------------------------
# Bad label and split files (no decoding needed)
# ----------------------------------------------------------------------------------------------


def test_split_id_without_label_is_named(tmp_path):
  paths = write_inputs(tmp_path, {"cello": ["a1"]}, None, {"train": ["a1", "ghost9"],
                                                           "test": []})
  (tmp_path / "videos").mkdir()
  with pytest.raises(labels.PreprocessError, match="ghost9") as raised:
    cli.preprocess(tmp_path / "videos", tmp_path / "root", progress=False, **paths)
  assert str(paths["split_dir"] / "train.txt") in str(raised.value)


@pytest.mark.parametrize("content", ["{not json", '{"videos": ["a", "b"]}', "[]",
                                     '{"videos": {"cello": "a1"}}'])
def test_malformed_label_json_is_named(tmp_path, content):
  paths = write_inputs(tmp_path, {}, None, {"train": [], "test": []})
  paths["solo_json"].write_text(content)
  (tmp_path / "videos").mkdir()
  with pytest.raises(labels.PreprocessError, match="malformed label JSON") as raised:
    cli.preprocess(tmp_path / "videos", tmp_path / "root", progress=False, **paths)
  assert str(paths["solo_json"]) in str(raised.value)


def test_category_names_are_normalised():
  classes = schema.MUSIC21_CLASSES
  assert labels.parse_category("Acoustic Guitar", classes, False, "f") == ("acoustic_guitar",)
  assert labels.parse_category("acoustic guitar violin", classes, True, "f") == (
      "acoustic_guitar", "violin")
  assert labels.parse_category("saxophone acoustic_guitar", classes, True, "f") == (
      "acoustic_guitar", "saxophone")
  assert labels.parse_category("electric bass drum", classes, True, "f") == (
      "drum", "electric_bass")
  with pytest.raises(labels.PreprocessError, match="banjo"):
    labels.parse_category("banjo", schema.MUSIC_CLASSES, False, "music.json")
  with pytest.raises(labels.PreprocessError, match="two different classes"):
    labels.parse_category("violin violin", classes, True, "f")
  with pytest.raises(labels.PreprocessError, match="kazoo"):
    labels.parse_category("kazoo violin", classes, True, "f")


def test_label_conflicts_are_errors(tmp_path):
  (tmp_path / "a.json").write_text(json.dumps({"videos": {"cello": ["x1"], "tuba": ["x1"]}}))
  with pytest.raises(labels.PreprocessError, match="x1"):
    labels.load_label_file(tmp_path / "a.json", schema.MUSIC21_CLASSES, False)


def test_val_is_carved_from_train_when_absent(tmp_path):
  (tmp_path / "train.txt").write_text("".join(f"id{i:02d}\n" for i in range(20)) + "\n# note\n")
  (tmp_path / "test.txt").write_text("t1\nvideos/t2.mp4\n")
  splits, files = labels.load_splits(tmp_path, seed=3, val_fraction=0.1)
  assert len(splits["val"]) == 2 and len(splits["train"]) == 18
  assert not set(splits["val"]) & set(splits["train"])
  assert splits["test"] == ["t1", "t2"]
  assert files["val"] == files["train"]
  assert labels.load_splits(tmp_path, seed=3, val_fraction=0.1)[0] == splits
  assert labels.load_splits(tmp_path, seed=4, val_fraction=0.1)[0]["val"] != splits["val"]
  (tmp_path / "val.txt").write_text("id05\n")
  with pytest.raises(labels.PreprocessError, match="id05"):
    labels.load_splits(tmp_path, seed=3, val_fraction=0.1)


def test_make_mixtures_disjoint_unique_and_capped():
  clips = [(f"c{i}", frozenset({f"class{i % 7}"})) for i in range(60)]
  clips.append(("duet", frozenset({"class0", "class1"})))
  for num_sources, count in ((2, 40), (3, 500)):  # C(61, 3) > 50k: the sampling path
    mixtures = writer.make_mixtures(clips, num_sources, count, "s")
    assert len(mixtures) == count and len(set(map(frozenset, mixtures))) == count
    labels = dict(clips)
    for group in mixtures:
      union = [label for clip_id in group for label in labels[clip_id]]
      assert len(union) == len(set(union))
    assert writer.make_mixtures(clips, num_sources, count, "s") == mixtures
  # Only 3 classes: at most one 3-way mixture of one clip per class -> 2*2*2 = 8 groups.
  few = [(f"c{i}", frozenset({f"class{i % 3}"})) for i in range(6)]
  assert len(writer.make_mixtures(few, 3, 500, 0)) == 8
  assert writer.make_mixtures(few[:1], 2, 500, 0) == []
