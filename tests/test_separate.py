"""The real-video chain of README "Real MUSIC21 / MUSIC data" end to end (issue 16), tests of
`python -m tribert_jax.separate` (the separation demo) and of clips without pose
(config.data.require_pose).

The chain runs the documented commands as subprocesses, with tiny settings, on mp4 files
rendered from the session's SynthMUSIC (h264 + AAC, as downloaded videos are):

  1. python -m data_pipeline.ingest         frames and audio, index without pose
  2. python -m data_pipeline.extract_pose   the tiny ONNX models of tests/onnx_helpers.py
  3. python -m data_pipeline.ingest ... --pose_dir ROOT/pose --pose_on_frames   (index with pose)
  4. python main.py                         one step of TriBERT and one of Sound-of-Pixels (at once)
  5. python -m tribert_jax.separate         two of the mp4 files mixed, with their pose
  6. python -m tribert_jax.score            the estimates against the videos' own audio

One training video is black, so the detector finds nobody there: step 3 keeps it without pose
(--keep_without_pose), Sound-of-Pixels trains on it (--config.data.require_pose=False) and
TriBERT, which reads pose, skips it (--config.data.skip_bad_clips=True). The chain's two
workdirs serve every test of this file: each model is trained once here (module-scoped).
"""

from __future__ import annotations

import csv
import dataclasses
import html.parser
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import pytest
import soundfile

from configs import pretrain
from configs import sound_of_pixels
from data_pipeline.ingest import labels as ingest_labels
from data_pipeline.layout import reader
from data_pipeline.layout import schema
from data_pipeline.loading import preflight
from data_pipeline.loading import sources
from tests import media_helpers
from tests import onnx_helpers
from tests.train_helpers import BATCH
from tribert_jax import separate
from tribert_jax import validation

REPO = pathlib.Path(__file__).resolve().parents[1]
RATE = 11025
TIMEOUT_S = 420
# The chain's videos: solos of TRAIN_CLASSES + TEST_CLASSES (one class each, so any two clips
# of a split can be mixed) and one duet in test. VAL_FRACTION of the train ids become val
# (no val.txt, as in the README): 2 of 6, so val has a 2-source mixture list.
NUM_TRAIN, NUM_TEST = 6, 2
VAL_FRACTION = 0.3
# The chain's detector: one person box in the middle of the 640 x 640 detector input (where
# SynthMUSIC draws its player on 256 x 256 frames); its score is the box's mean brightness
# (~0.47 on SynthMUSIC frames, 0 on a black frame), hence --det_threshold 0.2.
PERSON_BOX_640 = ((192, 32, 448, 608),)
DET_THRESHOLD = "0.2"


def _config(module, root, **overrides):
  config = module.get_config("tiny")
  config.data.root = str(root)
  config.num_train_steps = 1
  config.eval.at_end = False
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _clip(root, split: str, duet: bool, number: int = 0):
  """The number-th solo (or duet) record of index/<split>.csv."""
  return [r for r in reader.read_index(root, split) if r.duet == duet][number]


def _start(*arguments: str) -> tuple[subprocess.Popen, Any, tuple[str, ...]]:
  """Starts `python ARGUMENTS` in the repository, as a user types it (output to a file, so
  commands run side by side never block on a full pipe)."""
  output = tempfile.TemporaryFile("w+")
  process = subprocess.Popen([sys.executable, *arguments], cwd=REPO, stdout=output,
                             stderr=subprocess.STDOUT, text=True)
  return process, output, arguments


def _finish(*started: tuple[subprocess.Popen, Any, tuple[str, ...]]) -> list[str]:
  """Waits for started commands (bounded: a hang is a failure); their output (stdout and
  stderr), or a failure showing the output of each command that did not exit 0."""
  outputs, problems = [], []
  for process, file, arguments in started:
    status = ""
    try:
      process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
      status = f"ran over {TIMEOUT_S} s and was killed"
    file.seek(0)
    outputs.append(file.read())
    file.close()
    if status or process.returncode != 0:
      problems.append(f"python {' '.join(arguments)} {status or f'exited {process.returncode}'}"
                      f":\n{outputs[-1][-5000:]}")
  if problems:
    pytest.fail("\n\n".join(problems))
  return outputs


def _run(*arguments: str) -> str:
  """`python ARGUMENTS` run to the end: its output; a failure unless it exits 0."""
  return _finish(_start(*arguments))[0]


# ----------------------------------------------------------------------------------------------
# The chain, steps 1-3: mp4 files -> a dataset root with pose
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Chain:
  """The ingested dataset root and what made it."""

  videos: pathlib.Path  # <id>.mp4 files
  root: pathlib.Path  # ingest --out
  train: tuple[str, ...]  # video ids per split, as ingestion carved them
  val: tuple[str, ...]
  test: tuple[str, ...]  # solos, then the duet
  dark: str  # the black training video: nobody detected, no pose
  categories: dict[str, str]  # id -> category folder
  reports: dict[str, dict]  # ingest, extract_pose, ingest_pose: the reports the steps wrote
  logs: dict[str, str]  # step -> its stdout + stderr


@pytest.fixture(scope="module")
def chain(synthmusic_tiny, tmp_path_factory) -> Chain:
  """Steps 1-3 of the chain on mp4 files rendered from the session's SynthMUSIC."""
  base = tmp_path_factory.mktemp("chain")
  solos = {}  # category -> its first SynthMUSIC solo
  for split in schema.SPLITS:
    for record in reader.read_index(synthmusic_tiny, split):
      if not record.duet:
        solos.setdefault(record.category, record)
  classes = sorted(solos)[:NUM_TRAIN + NUM_TEST]
  duet = _clip(synthmusic_tiny, "test", duet=True)
  picked = {solos[c].id: solos[c] for c in classes}
  picked[duet.id.replace("+", "-")] = duet  # '+' is not a video id character
  ids = list(picked)
  train_ids, test_ids = ids[:NUM_TRAIN], ids[NUM_TRAIN:]
  # Label JSONs and split files in the MUSIC dataset's formats (category names with spaces).
  inputs = media_helpers.write_inputs(
      base, {picked[i].category.replace("_", " "): [i] for i in ids[:-1]},
      {duet.category.replace("+", " ").replace("_", " "): [ids[-1]]},
      {"train": train_ids, "test": test_ids})
  # The splits as ingestion will carve them (checked against its index below): the black video
  # must stay in train.
  carved, _ = ingest_labels.load_splits(inputs["split_dir"], 0, VAL_FRACTION)
  dark = carved["train"][-1]
  for video_id, record in picked.items():
    media_helpers.render_clip(record.frames, record.audio, base / "videos" / f"{video_id}.mp4",
                              dark=video_id == dark)
  models = base / "models"
  models.mkdir()
  det = onnx_helpers.make_detector(models / "det.onnx", boxes=PERSON_BOX_640)
  pose_model = onnx_helpers.make_pose_model(models / "pose.onnx")

  root = base / "music21"
  ingest = ["-m", "data_pipeline.ingest", "--dataset", "music21", "--videos",
            str(base / "videos"), "--out", str(root), "--solo_json", str(inputs["solo_json"]),
            "--duet_json", str(inputs["duet_json"]), "--split_dir", str(inputs["split_dir"]),
            "--val_fraction", str(VAL_FRACTION), "--workers", "2", "--allow_missing",
            "--no_progress"]
  logs, reports = {}, {}
  # 1) frames and audio
  logs["ingest"] = _run(*ingest)
  reports["ingest"] = json.loads((root / "preprocess_report.json").read_text())
  # 2) pose on the stored frames -> ROOT/pose
  logs["extract_pose"] = _run("-m", "data_pipeline.extract_pose", "--root", str(root),
                              "--det_model", str(det), "--pose_model", str(pose_model),
                              "--det_threshold", DET_THRESHOLD, "--no_progress")
  reports["extract_pose"] = json.loads((root / "pose" / "extract_pose_report.json").read_text())
  # 3) the index with pose; the video without anybody stays, without pose
  logs["ingest_pose"] = _run(*ingest, "--pose_dir", str(root / "pose"), "--pose_on_frames",
                             "--keep_without_pose")
  reports["ingest_pose"] = json.loads((root / "preprocess_report.json").read_text())
  return Chain(videos=base / "videos", root=root, train=tuple(carved["train"]),
               val=tuple(carved["val"]), test=tuple(test_ids), dark=dark,
               categories={i: r.category for i, r in picked.items()}, reports=reports,
               logs=logs)


def _video(chain: Chain, video_id: str) -> tuple[pathlib.Path, pathlib.Path]:
  """(mp4 file, the pose JSON extract_pose wrote for it) of a chain video."""
  return (chain.videos / f"{video_id}.mp4",
          chain.root / "pose" / chain.categories[video_id] / f"{video_id}.json")


def test_chain_ingests_mp4_files_and_extracts_pose(chain):
  first, extracted, second = (chain.reports[k] for k in ("ingest", "extract_pose", "ingest_pose"))
  total = NUM_TRAIN + NUM_TEST + 1
  assert first["counts"]["processed"] == total and first["counts"]["in_index"] == total
  assert first["counts"]["without_pose"] == total  # no --pose_dir yet
  assert first["splits"] == {"train": NUM_TRAIN - 2, "val": 2, "test": NUM_TEST + 1}
  assert first["val_carved_from_train"] and not first.get("failures")
  # Pose: everybody but the black video; that one is named, without a file.
  assert extracted["counts"] == {"videos": total, "written": total - 1, "no_person": 1,
                                 "failed": 0}
  assert extracted["no_person"] == [chain.dark] and chain.dark in chain.logs["extract_pose"]
  assert not _video(chain, chain.dark)[1].exists()
  # The rerun decodes nothing again and points the index at the pose files.
  assert second["counts"]["skipped_done"] == total and second["counts"]["processed"] == 0
  assert second["counts"]["without_pose"] == 1 and not second.get("failures")
  assert second["splits"] == first["splits"]
  assert second["mixtures"]["val_mixtures_n2"] == 1 and second["mixtures"]["test_mixtures_n2"] > 0
  info = reader.read_labels(chain.root)
  assert info.dataset == "music21" and info.sample_rate == RATE and info.fps == 8
  for split, ids in (("train", chain.train), ("val", chain.val), ("test", chain.test)):
    records = reader.read_index(chain.root, split)
    assert sorted(r.id for r in records) == sorted(ids)
    for record in records:
      clip = reader.validate_clip(record, RATE, 8.0, 65535, 3, require_pose=False)
      assert record.num_frames == 80 and (clip.frame_width, clip.frame_height) == (256, 256)
      if record.id == chain.dark:
        assert record.pose is None and not clip.has_pose
        continue
      assert record.pose == _video(chain, record.id)[1]
      track = reader.load_pose(record.pose, record.num_frames, 256, 256)
      assert track.num_tracks == 1 and track.mask[0].all()
  [duet] = [r for r in reader.read_index(chain.root, "test") if r.duet]
  assert duet.category == chain.categories[chain.test[-1]] and len(duet.labels) == 2


# ----------------------------------------------------------------------------------------------
# Step 4: one training step of each model on the ingested root
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
  workdir: pathlib.Path
  log: str  # stdout + stderr of main.py


@pytest.fixture(scope="module")
def trainings(chain, tmp_path_factory) -> dict[str, Run]:
  """One step of TriBERT (tiny) and one of Sound-of-Pixels (tiny) on the chain's root, both
  processes at once (each compiles on its own core).

  TriBERT: global batch BATCH as in test_train.py's pretrain runs, the same train step, so a run of
  the whole suite can find it in the shared persistent compilation cache; it reads pose, so the
  video without pose is skipped. Sound-of-Pixels trains on that video too (pose masked)."""
  common = ("--config.dataset=music21", f"--config.data.root={chain.root}",
            "--config.num_train_steps=1", "--config.eval.at_end=False")
  workdirs = {"tribert": tmp_path_factory.mktemp("chain_tribert"),
              "sop": tmp_path_factory.mktemp("chain_sop")}
  started = [
      _start("main.py", "--config=configs/pretrain.py:tiny", f"--workdir={workdirs['tribert']}",
             *common, f"--config.data.batch_size={BATCH}", "--config.data.skip_bad_clips=True"),
      _start("main.py", "--config=configs/sound_of_pixels.py:tiny",
             f"--workdir={workdirs['sop']}", *common, "--config.data.require_pose=False")]
  logs = _finish(*started)
  return {name: Run(workdirs[name], log) for name, log in zip(workdirs, logs)}


@pytest.fixture(scope="module")
def tribert_run(trainings) -> Run:
  return trainings["tribert"]


@pytest.fixture(scope="module")
def tribert_workdir(tribert_run) -> pathlib.Path:
  return tribert_run.workdir


@pytest.fixture(scope="module")
def sop_run(trainings) -> Run:
  return trainings["sop"]


def _check_trained(run: Run, phase: str) -> None:
  """Checkpoint 1 and the run's config in the workdir, a finite loss in the log."""
  assert (run.workdir / "checkpoints" / "1").is_dir(), sorted(os.listdir(run.workdir))
  config = json.loads((run.workdir / "config.json").read_text())
  assert config["phase"] == phase and config["dataset"] == "music21"
  losses = re.findall(r"step 1/1: loss (\S+),", run.log)
  assert len(losses) == 1 and math.isfinite(float(losses[0])), run.log[-3000:]


def test_chain_trains_tribert_skipping_the_video_without_pose(chain, tribert_run):
  _check_trained(tribert_run, "pretrain")
  assert f"skipping bad clip {chain.dark}" in tribert_run.log, tribert_run.log[-3000:]


def test_sound_of_pixels_trains_on_clips_without_pose(chain, sop_run):
  _check_trained(sop_run, "sound_of_pixels")
  assert "clips without pose: 1;" in sop_run.log, sop_run.log[-3000:]
  assert "skipping bad clip" not in sop_run.log


# ----------------------------------------------------------------------------------------------
# Steps 5-6: separate two of the mp4 files, score the estimates against their own audio
# ----------------------------------------------------------------------------------------------


class _Links(html.parser.HTMLParser):
  """Every src / href of a page."""

  def __init__(self):
    super().__init__()
    self.links = []

  def handle_starttag(self, tag, attrs):
    self.links += [(tag, v) for k, v in attrs if k in ("src", "href")]


def _check_outputs(out: pathlib.Path, num_sources: int, seconds: float, originals: bool):
  """wavs (count, rate, length, finite, audible or said silent) and a page whose links exist."""
  record = json.loads((out / "separation.json").read_text())
  assert len(record["sources"]) == num_sources
  wavs = sorted(p.name for p in out.glob("*.wav"))
  assert len(wavs) == 1 + num_sources * (2 if originals else 1)
  length = int(round(seconds * RATE))
  for name in wavs:
    samples, rate = soundfile.read(str(out / name), dtype="float32")
    assert rate == RATE and samples.ndim == 1 and samples.shape[0] == length, name
    assert np.all(np.isfinite(samples))
  for source in record["sources"]:
    samples, _ = soundfile.read(str(out / source["wav"]), dtype="float32")
    assert source["silent"] == (not np.any(samples)), source  # audible, or said silent
  page = (out / "index.html").read_text()
  parser = _Links()
  parser.feed(page)
  parser.close()
  linked = {link for _, link in parser.links}
  assert {"mixture.wav", *(s["wav"] for s in record["sources"])} <= linked
  assert sum(tag == "audio" for tag, _ in parser.links) == len(wavs)
  for link in linked:  # relative, inside --out, existing: the page works offline
    assert "://" not in link and not link.startswith("/"), link
    assert (out / link).is_file(), link
  assert not (out / ".decoding").exists()
  return record, page


@pytest.fixture
def synthmusic_labelled_workdir(tribert_workdir, tmp_path) -> pathlib.Path:
  """The chain's TriBERT run as if trained on SynthMUSIC (config.json's dataset): what the
  demo says about such checkpoints. Checkpoints are hard links; the chain's run is unchanged."""
  workdir = tmp_path / "synthmusic_run"
  shutil.copytree(tribert_workdir, workdir, copy_function=os.link,
                  ignore=shutil.ignore_patterns("config.json"))
  config = json.loads((tribert_workdir / "config.json").read_text())
  (workdir / "config.json").write_text(json.dumps({**config, "dataset": "synthmusic"}))
  return workdir


def test_players_of_a_duet_clip_from_its_pose_boxes(synthmusic_labelled_workdir,
                                                    synthmusic_tiny, tmp_path):
  # In-process, before the subprocess of step 5: that run then finds the same program in the
  # session's persistent compilation cache.
  duet = _clip(synthmusic_tiny, "test", duet=True)
  out = tmp_path / "players"
  code = separate.main([f"--workdir={synthmusic_labelled_workdir}", f"--out={out}",
                        f"--players={duet.frames}", "--seconds=3"])
  assert code == 0
  record, page = _check_outputs(out, 2, 3.0, originals=False)
  assert record["mode"] == "players" and (out / record["overview"]).is_file()
  origins = [s["origin"] for s in record["sources"]]
  assert all(o.startswith("pose track ") for o in origins) and origins[0] != origins[1]
  assert "SynthMUSIC" in page and "not real recordings" in page


def test_players_from_given_boxes_take_the_overlapping_track(synthmusic_tiny, tmp_path):
  from tribert_jax.separation_demo import media, players  # pylint: disable=g-import-not-at-top

  duet = _clip(synthmusic_tiny, "test", duet=True)
  video = media.open_video(duet.frames, tmp_path, RATE, 8.0)
  by_pose = players.find_players(video, 2, 2)
  boxes = players.parse_boxes("150,60,80,180; 20,60,60,170")  # right player first
  given = players.find_players(video, 2, 2, boxes)
  assert [p.origin.split(", ")[-1] for p in given] == [
      p.origin.split(" (")[0] for p in reversed(by_pose)]  # matched by overlap
  for player in given:
    top, left, height, width = player.box
    assert height == width and top >= 0 and left >= 0
    assert top + height <= video.frame_height and left + width <= video.frame_width
    assert player.track.mask[0].any() and not player.track.mask[1:].any()
  np.testing.assert_array_equal(given[0].track.keypoints, by_pose[1].track.keypoints)
  with pytest.raises(players.PlayerError, match="x,y,w,h"):
    players.parse_boxes("1,2,3")


@dataclasses.dataclass(frozen=True)
class Separated:
  out: pathlib.Path
  output: str  # the command's stdout and stderr
  workdir_before: list[str]
  workdir_after: list[str]


@pytest.fixture(scope="module")
def separated(chain, tribert_workdir, tmp_path_factory) -> Separated:
  """Step 5: two test-split mp4 files mixed and separated by the chain's TriBERT, with the pose
  JSONs of step 2."""
  (a, pose_a), (b, pose_b) = (_video(chain, i) for i in chain.test[:2])
  out = tmp_path_factory.mktemp("separated") / "mix"
  before = sorted(os.listdir(tribert_workdir))
  output = _run("-m", "tribert_jax.separate", f"--workdir={tribert_workdir}", f"--out={out}",
                "--mix", str(a), str(b), "--poses", str(pose_a), str(pose_b), "--seconds=7")
  return Separated(out, output, before, sorted(os.listdir(tribert_workdir)))


def test_mix_and_separate_two_mp4_files(chain, separated):
  out = separated.out
  assert "index.html" in separated.output
  record, page = _check_outputs(out, 2, 7.0, originals=True)
  assert record["step"] == 1 and record["model"] == "tribert" and record["windows"] == 2
  assert [s["name"] for s in record["sources"]] == list(chain.test[:2])
  assert [s["origin"] for s in record["sources"]] == [
      f"central square, pose {i}.json" for i in chain.test[:2]]
  # TriBERT exposes its visual attention: shown over the input frames.
  assert all("attention" in s and "predicted_class" in s for s in record["sources"])
  assert "trained on (music21)" in page and "SynthMUSIC" not in page
  assert separated.workdir_after == separated.workdir_before  # nothing written outside --out


def test_score_the_separated_wavs_against_the_videos_own_audio(separated, tmp_path):
  """Step 6: the estimates against the originals that went into the mix (mode a writes them),
  in score's <mixture>/<source>.wav convention."""
  out = separated.out
  estimates, references, mixtures = (tmp_path / name for name in ("est", "ref", "mix"))
  for folder in (estimates / "mix1", references / "mix1", mixtures):
    folder.mkdir(parents=True)
  for original in sorted(out.glob("original_*.wav")):
    name = original.name[len("original_"):]
    shutil.copy(original, references / "mix1" / name)
    shutil.copy(out / f"estimate_{name}", estimates / "mix1" / name)
  shutil.copy(out / "mixture.wav", mixtures / "mix1.wav")
  record = json.loads((out / "separation.json").read_text())
  assert sorted(os.listdir(references / "mix1")) == sorted(
      s["wav"][len("estimate_"):] for s in record["sources"])
  report_dir = tmp_path / "score"
  output = _run("-m", "tribert_jax.score", f"--estimates={estimates}",
                f"--references={references}", f"--mixtures={mixtures}", f"--out={report_dir}",
                "--num_workers=1")
  report = json.loads((report_dir / "score.json").read_text())
  assert not report["skipped"], report["skipped"]  # no silent estimate
  assert len(report["files"]) == 2
  finite = lambda x: x is not None and math.isfinite(x)  # noqa: E731  (NaN is written null)
  for row in report["files"]:
    assert row["status"] == "ok" and finite(row["sdr"]) and finite(row["mixture_sdr"]), row
  summary = report["summary"]
  assert summary["num_scored"] == 1 and finite(summary["sdr"]) and finite(
      summary["sdr_improvement"]), summary
  table = (report_dir / "score.md").read_text()
  assert "## Per file" in table and all(f"| mix1 | {n} |" in table
                                        for n in os.listdir(references / "mix1"))
  assert "## Per file" in output
  assert sorted(os.listdir(report_dir)) == ["score.json", "score.md"]


def test_errors_name_the_file(tribert_workdir, chain, synthmusic_tiny, tmp_path, capsys):
  a, b = (_video(chain, i)[0] for i in chain.test[:2])
  missing = tmp_path / "nope.mp4"
  assert separate.main([f"--workdir={tribert_workdir}", f"--out={tmp_path / 'o1'}",
                        "--mix", str(missing), str(b)]) == 1
  assert str(missing) in capsys.readouterr().err
  # A workdir without checkpoint.
  empty = tmp_path / "empty_run"
  empty.mkdir()
  shutil.copy(tribert_workdir / "config.json", empty / "config.json")
  assert separate.main([f"--workdir={empty}", f"--out={tmp_path / 'o2'}", "--mix", str(a),
                        str(b)]) == 1
  assert f"no checkpoint in {empty}/checkpoints" in capsys.readouterr().err
  # Mode (b): nobody detected in the pose JSON and no --boxes.
  nobody = tmp_path / "nobody.json"
  nobody.write_text("[]")
  assert separate.main([f"--workdir={tribert_workdir}", f"--out={tmp_path / 'o3'}",
                        f"--players={a}", f"--pose={nobody}"]) == 1
  err = capsys.readouterr().err
  assert str(nobody) in err and "no person detected" in err and "--boxes" in err
  # An unreadable frame of a clip folder.
  record = _clip(synthmusic_tiny, "test", duet=False)
  root = tmp_path / "broken"
  frames = root / "frames" / record.category / record.id
  shutil.copytree(record.frames, frames, copy_function=os.link)
  (root / "audio" / record.category).mkdir(parents=True)
  os.link(record.audio, root / "audio" / record.category / f"{record.id}.wav")
  (frames / "000001.jpg").unlink()
  (frames / "000001.jpg").write_bytes(b"not a jpeg")
  assert separate.main([f"--workdir={tribert_workdir}", f"--out={tmp_path / 'o4'}", "--mix",
                        str(frames), str(b), "--allow_missing_pose"]) == 1
  assert str(frames / "000001.jpg") in capsys.readouterr().err
  # TriBERT reads pose: an input without pose JSON is refused, naming it.
  assert separate.main([f"--workdir={tribert_workdir}", f"--out={tmp_path / 'o5'}", "--mix",
                        str(a), str(b)]) == 1
  err = capsys.readouterr().err
  assert str(a) in err and "reads pose" in err


# ----------------------------------------------------------------------------------------------
# Clips without pose (config.data.require_pose)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_pose_root(synthmusic_tiny, tmp_path_factory):
  """A hard-linked copy of the tiny dataset: two train solos lose their pose file, one gets an
  empty pose column in index/train.csv, one a pose file where nobody is detected."""
  root = tmp_path_factory.mktemp("no_pose") / "tiny"
  shutil.copytree(synthmusic_tiny, root, copy_function=os.link)
  solos = [r for r in reader.read_index(root, "train") if not r.duet]
  without = solos[:3]
  for record in solos[:2]:
    record.pose.unlink()
  index = root / "index" / "train.csv"
  with index.open(newline="") as handle:
    rows = list(csv.DictReader(handle))
  for row in rows:
    if row["id"] == solos[2].id:
      row["pose"] = ""
  index.unlink()  # a new file: the shared dataset's index stays as it is
  with index.open("w", newline="") as handle:
    out = csv.DictWriter(handle, fieldnames=list(rows[0]))
    out.writeheader()
    out.writerows(rows)
  solos[3].pose.unlink()
  solos[3].pose.write_text("[]")  # a pose file that detects nobody
  return root, without, solos[3]


def test_require_pose_refuses_clips_without_pose(no_pose_root):
  root, without, _ = no_pose_root
  config = _config(sound_of_pixels, root)
  with pytest.raises(preflight.PreflightError) as raised:
    preflight.check(config.data, ["train"], 2, "")
  message = str(raised.value)
  assert str(without[0].pose) in message and str(without[1].pose) in message
  assert f"pose/{without[2].category}/{without[2].id}.json" in message
  assert "require_pose=False" in message


def test_validation_refuses_require_pose_false_for_models_that_read_pose():
  tribert = pretrain.get_config("tiny")
  tribert.data.require_pose = False
  problems = validation.check_config(tribert)
  assert any(p.startswith("config.data.require_pose=False") and "model.pose.enabled" in p
             for p in problems), problems
  tribert.model.pose.enabled = False  # pose erased (the erase_pose ablation): allowed
  assert not [p for p in validation.check_config(tribert) if "require_pose" in p]
  sop = sound_of_pixels.get_config("tiny")
  sop.data.require_pose = False
  assert not [p for p in validation.check_config(sop) if "require_pose" in p]
  sop.data.source, sop.data.tfds_name = "tfds", "synthmusic/tiny"
  assert any("require_pose" in p and "source='folder'" in p
             for p in validation.check_config(sop))
  with pytest.raises(ValueError, match="require_pose"):
    sources.open_source(sop.data, "train", sources.PipelineStats())


def test_clips_without_pose_or_detection_are_counted_and_masked(no_pose_root):
  root, without, nobody = no_pose_root
  config = _config(sound_of_pixels, root, **{"data.require_pose": False})
  assert validation.check_config(config) == []
  report = preflight.check(config.data, ["train"], 2, "")
  assert report["splits"]["train"]["clips_without_pose"] == 3
  assert report["splits"]["train"]["clips_without_detection"] == 1
  # What the batches carry for them: an all-zero pose mask (and zero keypoints), counted.
  stats = sources.PipelineStats()
  _, records, store = sources.open_source(config.data, "train", stats)
  rows = {r.id: r.row for r in records}
  store.prepare([rows[r.id] for r in without] + [rows[nobody.id]])
  assert stats.clips_without_pose == 3 and stats.clips_without_detection == 1
  for record in without + [nobody]:
    keypoints, mask = store.pose_window(rows[record.id], 40)
    assert not mask.any() and not keypoints.any(), record.id


def test_sound_of_pixels_checkpoint_separates_clips_without_pose(chain, sop_run, tmp_path):
  # The chain's black video (no pose file) as a clip folder of the root, with a partner.
  dark = chain.root / "frames" / chain.categories[chain.dark] / chain.dark
  partner = chain.root / "frames" / chain.categories[chain.test[0]] / chain.test[0]
  out = tmp_path / "sop"
  assert separate.main([f"--workdir={sop_run.workdir}", f"--out={out}", "--mix", str(dark),
                        str(partner), "--seconds=2"]) == 0
  record, page = _check_outputs(out, 2, 2.0, originals=True)
  assert record["model"] == "sound_of_pixels"
  assert not any("attention" in s for s in record["sources"])
  assert "exposes no visual attention map" in page
  assert [s["origin"] for s in record["sources"]] == [
      "no pose (masked)", f"central square, pose {chain.test[0]}.json"]
