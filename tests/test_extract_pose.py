"""Tests of data_pipeline.extract_pose: rtmlib's real code path on onnxruntime, with the tiny
ONNX models of tests/onnx_helpers.py that have the real input / output signatures (a detector
scoring fixed boxes by their brightness, a pose model with one SimCC peak per keypoint).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from data_pipeline.extract_pose import cli, extract, keypoint_map, tracking
from data_pipeline.extract_pose.estimator import ModelError, WholeBodyEstimator, resolve_models
from data_pipeline.ingest import cli as ingest_cli
from data_pipeline.ingest import pose_import
from data_pipeline.layout import reader, skeleton
from tests.media_helpers import make_video, write_inputs
from tests.onnx_helpers import BOXES_640, keypoint_score, make_detector, make_pose_model
from tests.onnx_helpers import make_raw_detector

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 224  # frame side; the detector letterboxes it to 640 (ratio 640 / 224)
RATIO = 640 / SIZE


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------


def write_frames(folder: pathlib.Path, people_per_frame: list[tuple[int, ...]]) -> None:
  """One 224x224 JPEG per entry; entry = which players (0 left, 1 right) are drawn, white."""
  folder.mkdir(parents=True, exist_ok=True)
  for number, people in enumerate(people_per_frame, start=1):
    pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
    for person in people:
      x1, y1, x2, y2 = (round(v / RATIO) for v in BOXES_640[person])
      pixels[y1:y2, x1:x2] = 255
    Image.fromarray(pixels).save(folder / f"{number:06d}.jpg", quality=95)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, pathlib.Path]:
  base = tmp_path_factory.mktemp("models")
  return {"det": make_detector(base / "det.onnx"), "pose": make_pose_model(base / "pose.onnx"),
          "raw_det": make_raw_detector(base / "raw_det.onnx"),
          "pose17": make_pose_model(base / "pose17.onnx", keypoints=17)}


DUET = [(0, 1), (0, 1), (0,), (0, 1), (0, 1), (1, 0)]  # the right player is missed in frame 3


@pytest.fixture(scope="module")
def extracted(models, tmp_path_factory) -> tuple[pathlib.Path, int, dict]:
  """A root with a duet, a solo, a video without anybody and one with a corrupt frame, run
  once through the command line (in process)."""
  root = tmp_path_factory.mktemp("root")
  write_frames(root / "frames" / "acoustic_guitar+violin" / "duoA", DUET)
  write_frames(root / "frames" / "violin" / "solB", [(0,)] * 4)
  write_frames(root / "frames" / "violin" / "empC", [()] * 3)
  write_frames(root / "frames" / "cello" / "badD", [(0,)] * 3)
  (root / "frames" / "cello" / "badD" / "000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  (root / "frames" / "cello" / "nofE").mkdir()  # no frames at all
  status = cli.main(["--root", str(root), "--det_model", str(models["det"]),
                     "--pose_model", str(models["pose"]), "--no_progress"])
  report = json.loads((root / "pose" / extract.REPORT_FILE).read_text())
  return root, status, report


# ----------------------------------------------------------------------------------------------
# The keypoint mapping, against an independent transcription by joint name
# ----------------------------------------------------------------------------------------------

COCO_BODY = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
             "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
             "r_ankle"]
# COCO-WholeBody 0..22 (body, then left foot, then right foot) and Halpe-26 (AlphaPose docs).
COCO_WB_23 = COCO_BODY + ["l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe",
                          "r_heel"]
HALPE_26 = COCO_BODY + ["head", "neck", "hip", "l_big_toe", "r_big_toe", "l_small_toe",
                        "r_small_toe", "l_heel", "r_heel"]


def test_mapping_matches_an_independent_transcription():
  expected = {}
  for halpe, name in enumerate(HALPE_26):
    if name in COCO_WB_23:
      expected[halpe] = COCO_WB_23.index(name)
  for j in range(68):
    expected[26 + j] = 23 + j  # face
  for j in range(21):
    expected[94 + j] = 91 + j  # left hand
    expected[115 + j] = 112 + j  # right hand
  table = {h: int(c) for h, c in enumerate(keypoint_map.HALPE_FROM_COCO) if c >= 0}
  assert table == expected
  assert sorted(set(range(136)) - set(expected)) == [17, 18, 19]  # head, neck, hip: derived
  # Every joint the 68-joint skeleton uses is covered.
  assert set(skeleton.HALPE_TO_TRIBERT.tolist()) <= set(expected) | {17, 18, 19}


def test_derived_joints():
  rng = np.random.default_rng(0)
  points = rng.uniform(0, 100, (2, 133, 2))
  scores = rng.uniform(0.1, 1.0, (2, 133))
  halpe = keypoint_map.to_halpe(points, scores)
  assert halpe.shape == (2, 136, 3)
  np.testing.assert_allclose(halpe[:, 18, :2], (points[:, 5] + points[:, 6]) / 2)  # neck
  np.testing.assert_allclose(halpe[:, 18, 2], np.minimum(scores[:, 5], scores[:, 6]))
  np.testing.assert_allclose(halpe[:, 19, :2], (points[:, 11] + points[:, 12]) / 2)  # hip
  eyes = (points[:, 1] + points[:, 2]) / 2
  chin = points[:, 31]  # face point 8
  np.testing.assert_allclose(halpe[:, 17, :2], eyes + (eyes - chin))  # head top
  np.testing.assert_allclose(halpe[:, 17, 2], scores[:, [1, 2, 31]].min(axis=1))
  np.testing.assert_allclose(halpe[:, 21, :2], points[:, 20])  # right big toe
  np.testing.assert_allclose(halpe[:, 115, 2], scores[:, 112])  # right hand root
  # An upright face: the head top lies above the eyes, as far as the chin lies below them.
  face = np.zeros((133, 2))
  face[[1, 2], :] = [[45, 50], [55, 50]]
  face[31] = [50, 70]
  assert keypoint_map.to_halpe(face, np.ones(133))[17, :2].tolist() == [50.0, 30.0]


# ----------------------------------------------------------------------------------------------
# Tracking
# ----------------------------------------------------------------------------------------------


def test_tracker_keeps_ids_of_two_moving_people():
  tracker = tracking.IoUTracker(min_iou=0.3, max_lost=2)
  pairs = []  # (left player's id, right player's id) per frame
  for t in range(10):  # two players drift 3 px a frame; the detector reports them in any order
    left, right = [10 + 3 * t, 10, 60 + 3 * t, 110], [120 - 3 * t, 10, 170 - 3 * t, 110]
    if t % 2:
      pairs.append(tuple(tracker.update([left, right])))
    else:
      pairs.append(tuple(tracker.update([right, left])[::-1]))
  assert pairs == [(2, 1)] * 10  # numbered in order of first report, then kept
  assert tracker.update([[93, 10, 143, 110]]) == [1]  # the right player alone: id kept


def test_tracker_bridges_short_gaps_only():
  tracker = tracking.IoUTracker(min_iou=0.3, max_lost=2)
  box = [[0, 0, 50, 100]]
  assert tracker.update(box) == [1]
  assert tracker.update([]) == [] and tracker.update([]) == []
  assert tracker.update(box) == [1]  # missed for 2 frames: same person
  for _ in range(3):
    tracker.update([])
  assert tracker.update(box) == [2]  # gone for 3 > max_lost frames: a new track
  assert tracker.update([[200, 0, 250, 100], [0, 0, 50, 100]]) == [3, 2]


# ----------------------------------------------------------------------------------------------
# The estimator on rtmlib's code path
# ----------------------------------------------------------------------------------------------


def test_estimator_decodes_boxes_and_keypoints(models):
  estimator = WholeBodyEstimator(str(models["det"]), str(models["pose"]), det_threshold=0.5)
  assert estimator.det.model_input_size == (640, 640)
  assert estimator.pose.model_input_size == (192, 256)
  image = np.zeros((SIZE, SIZE, 3), np.uint8)
  x1, y1, x2, y2 = (round(v / RATIO) for v in BOXES_640[1])
  image[y1:y2, x1:x2] = 255
  boxes, scores = estimator.detect(image)
  np.testing.assert_allclose(boxes, [np.array(BOXES_640[1]) / RATIO], atol=0.01)
  assert scores[0] > 0.9
  keypoints, confidences = estimator.estimate(image, boxes)
  assert keypoints.shape == (1, 133, 2)
  np.testing.assert_allclose(confidences[0], [keypoint_score(k) for k in range(133)], atol=1e-6)
  inside = ((keypoints[0] >= boxes[0, :2]) & (keypoints[0] <= boxes[0, 2:])).all()
  assert inside, "keypoints decode inside the person box"


def test_estimator_handles_raw_yolox_output(models):
  estimator = WholeBodyEstimator(str(models["raw_det"]), str(models["pose"]), det_threshold=0.5)
  boxes, scores = estimator.detect(np.zeros((SIZE, SIZE, 3), np.uint8))
  np.testing.assert_allclose(boxes, [np.array(BOXES_640[0]) / RATIO], atol=0.5)
  assert np.isnan(scores).all()


def test_a_body_only_pose_model_is_refused(models):
  with pytest.raises(ModelError, match="133"):
    WholeBodyEstimator(str(models["det"]), str(models["pose17"]))


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def test_written_pose_passes_the_project_readers(extracted):
  root, _, _ = extracted
  path = root / "pose" / "acoustic_guitar+violin" / "duoA.json"
  records = json.loads(path.read_text())
  pose_import._check_pose(records, path)  # what ingest --pose_dir accepts
  track = reader.load_pose(path, num_frames=len(DUET), frame_width=SIZE, frame_height=SIZE)
  assert track.num_tracks == 2 and track.frames_without_detection == 0
  assert track.mask.tolist() == [[1] * 6, [1, 1, 0, 1, 1, 1]]
  assert 0 < track.keypoints[track.mask == 1].min() and track.keypoints.max() <= 1
  # Track ids follow the players, whatever order the detector reports them in.
  by_track = {}
  for record in records:
    by_track.setdefault(record["idx"], []).append(record["box"][0])
  assert sorted(len(set(np.round(xs))) for xs in by_track.values()) == [1, 1]
  # The confidences land where the mapping says, through the real pipeline.
  points = np.array(records[0]["keypoints"]).reshape(136, 3)
  for halpe, coco in enumerate(keypoint_map.HALPE_FROM_COCO):
    if coco >= 0:
      assert points[halpe, 2] == pytest.approx(keypoint_score(coco), abs=1e-4)
  np.testing.assert_allclose(points[18, :2], (points[5, :2] + points[6, :2]) / 2, atol=0.02)
  assert set(records[0]) >= {"image_id", "keypoints", "score", "box", "idx"}


def test_report_names_no_person_and_unreadable_frames(extracted):
  root, status, report = extracted
  assert status == 1  # a video failed; the others were done
  assert report["counts"] == {"videos": 5, "written": 2, "no_person": 1, "failed": 2}
  assert report["no_person"] == ["empC"]
  assert not (root / "pose" / "violin" / "empC.json").exists()
  assert not (root / "pose" / "cello" / "badD.json").exists()
  failures = {f["id"]: f for f in report["failures"]}
  assert failures["badD"]["kind"] == "unreadable_frame"
  assert failures["badD"]["file"] == str(root / "frames" / "cello" / "badD" / "000002.jpg")
  assert failures["nofE"]["kind"] == "no_frames"
  duet = report["videos"]["duoA"]
  assert (duet["frames"], duet["frames_with_person"], duet["tracks"]) == (6, 6, 2)
  assert report["videos"]["empC"]["frames_with_person"] == 0
  assert duet["seconds"] > 0 and report["settings"]["max_persons"] == 2


def test_rerun_skips_finished_videos(extracted, models):
  root, _, _ = extracted
  written = root / "pose" / "violin" / "solB.json"
  before = written.stat().st_mtime_ns
  status = cli.main(["--root", str(root), "--det_model", str(models["det"]),
                     "--pose_model", str(models["pose"]), "--no_progress"])
  report = json.loads((root / "pose" / extract.REPORT_FILE).read_text())
  assert status == 1
  # duoA and solB have files, empC is known to hold nobody; badD and nofE are tried again.
  assert report["this_run"]["skipped_done"] == 3 and report["this_run"]["processed"] == 2
  assert written.stat().st_mtime_ns == before
  assert report["counts"]["written"] == 2


def test_out_folder_and_filters(extracted, models, tmp_path):
  root, _, _ = extracted
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  arguments = ["--root", str(root), "--det_model", str(models["det"]), "--pose_model",
               str(models["pose"]), "--no_progress", "--ids", "solB,empC"]
  assert cli.main(arguments + ["--out", str(foreign)]) == 2
  assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
  assert cli.main(arguments + ["--out", str(tmp_path / "poses")]) == 0
  assert pose_import.find_poses(tmp_path / "poses") == {
      "solB": tmp_path / "poses" / "violin" / "solB.json",
      "extract_pose_report": tmp_path / "poses" / extract.REPORT_FILE}
  assert cli.main(arguments[:-2] + ["--ids", "nosuch"]) == 2


def test_download_is_only_taken_when_asked(models):
  from rtmlib.tools.solution.wholebody import Wholebody  # pylint: disable=import-outside-toplevel
  with pytest.raises(ModelError, match="--det_model is required"):
    resolve_models(None, str(models["pose"]), None)
  det, pose = resolve_models(None, str(models["pose"]), "lightweight")  # nothing is fetched yet
  assert det == Wholebody.MODE["lightweight"]["det"] and pose == str(models["pose"])
  with pytest.raises(ModelError, match="not found"):  # a given path is never downloaded
    resolve_models("missing.onnx", None, "balanced")


def test_missing_model_file_is_one_error_line_naming_it(tmp_path, models):
  missing = tmp_path / "rtmw-x.onnx"
  result = subprocess.run(
      [sys.executable, "-m", "data_pipeline.extract_pose", "--root", str(tmp_path),
       "--det_model", str(models["det"]), "--pose_model", str(missing)],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: --pose_model {missing}: model file not found"]


def test_ingest_then_extract_then_ingest_with_pose_dir(models, tmp_path):
  """The user's path: ingest frames and audio, extract pose into ROOT/pose, ingest again with
  --pose_dir ROOT/pose --pose_on_frames: the index now names the pose files."""
  make_video(tmp_path / "videos" / "vioX.mp4", seconds=6.5)
  inputs = write_inputs(tmp_path, {"violin": ["vioX"]}, None,
                        {"train": ["vioX"], "test": []})
  root = tmp_path / "root"
  arguments = dict(split_dir=inputs["split_dir"], solo_json=inputs["solo_json"],
                   progress=False, workers=1)
  ingest_cli.preprocess(tmp_path / "videos", root, **arguments)
  assert cli.main(["--root", str(root), "--det_model", str(models["det"]), "--pose_model",
                   str(models["pose"]), "--no_progress", "--det_threshold", "0.05"]) == 0
  pose = root / "pose" / "violin" / "vioX.json"
  content = pose.read_bytes()
  report = ingest_cli.preprocess(tmp_path / "videos", root, pose_dir=root / "pose",
                                 pose_on_frames=True, **arguments)
  assert report["counts"]["skipped_done"] == 1 and report["counts"]["in_index"] == 1
  assert pose.read_bytes() == content  # copied onto itself, unchanged
  [record] = reader.read_index(root, "train")
  assert record.pose == pose
  info = reader.validate_clip(record, 11025, 8.0, 65535, 3)
  track = reader.load_pose(record.pose, record.num_frames, info.frame_width, info.frame_height)
  assert track.mask[0].all()
  assert os.path.getsize(pose) > 0
