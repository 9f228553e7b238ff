"""Tests of `python -m tribert_jax.separate` (the separation demo) and of clips without pose
(config.data.require_pose).

One tiny TriBERT trained for one step and one tiny Sound-of-Pixels trained for one step on a copy
of the session's SynthMUSIC whose pose was removed for some clips (module-scoped) serve every test.
"""

import csv
import html.parser
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from configs import pretrain
from configs import sound_of_pixels
from data_pipeline.ingest import decode
from data_pipeline.layout import reader
from data_pipeline.loading import preflight
from data_pipeline.loading import sources
from tribert_jax import separate
from tribert_jax import train
from tribert_jax import validation

REPO = pathlib.Path(__file__).resolve().parents[1]
RATE = 11025
TIMEOUT_S = 420


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


@pytest.fixture(scope="module")
def tribert_workdir(synthmusic_tiny, tmp_path_factory) -> pathlib.Path:
  """A tiny TriBERT trained for one step (checkpoint 1). Global batch 8 as in test_train.py's
  pretrain runs: the same train step, so a run of the whole suite can find it in the shared
  persistent compilation cache."""
  workdir = tmp_path_factory.mktemp("separate_tribert")
  train.train_and_evaluate(_config(pretrain, synthmusic_tiny, **{"data.batch_size": 8}),
                           str(workdir))
  return workdir


@pytest.fixture(scope="module")
def videos(synthmusic_tiny, tmp_path_factory) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """Two SynthMUSIC solos rendered to mp4 (8 fps frames + audio), with their pose JSON."""
  out = tmp_path_factory.mktemp("videos")
  made = []
  for number in (0, 1):
    record = _clip(synthmusic_tiny, "test", duet=False, number=number)
    path = out / f"{record.id}.mp4"
    subprocess.run([decode.ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
                    "-framerate", "8", "-i", str(record.frames / "%06d.jpg"),
                    "-i", str(record.audio), "-c:v", "libx264", "-preset", "ultrafast",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    made.append((path, record.pose))
  return made


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


def test_players_of_a_duet_clip_from_its_pose_boxes(tribert_workdir, synthmusic_tiny, tmp_path):
  # In-process, first: the subprocess run below then finds the same program in the session's
  # persistent compilation cache.
  duet = _clip(synthmusic_tiny, "test", duet=True)
  out = tmp_path / "players"
  code = separate.main([f"--workdir={tribert_workdir}", f"--out={out}",
                        f"--players={duet.frames}", "--seconds=3"])
  assert code == 0
  record, _ = _check_outputs(out, 2, 3.0, originals=False)
  assert record["mode"] == "players" and (out / record["overview"]).is_file()
  origins = [s["origin"] for s in record["sources"]]
  assert all(o.startswith("pose track ") for o in origins) and origins[0] != origins[1]


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


def test_mix_and_separate_two_mp4_files(tribert_workdir, videos, tmp_path):
  before = sorted(os.listdir(tribert_workdir))
  out = tmp_path / "mix"
  (a, pose_a), (b, pose_b) = videos
  result = subprocess.run(
      [sys.executable, "-m", "tribert_jax.separate", f"--workdir={tribert_workdir}",
       f"--out={out}", "--mix", str(a), str(b), "--poses", str(pose_a), str(pose_b),
       "--seconds=7"], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "index.html" in result.stdout
  record, page = _check_outputs(out, 2, 7.0, originals=True)
  assert record["step"] == 1 and record["model"] == "tribert" and record["windows"] == 2
  # TriBERT exposes its visual attention: shown over the input frames.
  assert all("attention" in s and "predicted_class" in s for s in record["sources"])
  assert "SynthMUSIC" in page and "not real recordings" in page
  assert sorted(os.listdir(tribert_workdir)) == before  # nothing written outside --out


def test_errors_name_the_file(tribert_workdir, synthmusic_tiny, videos, tmp_path, capsys):
  (a, _), (b, _) = videos
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


@pytest.fixture(scope="module")
def sop_workdir(no_pose_root, tmp_path_factory):
  """Sound-of-Pixels trained one step on the copy with clips without pose."""
  root, _, _ = no_pose_root
  config = _config(sound_of_pixels, root, **{"data.require_pose": False})
  assert validation.check_config(config) == []
  workdir = tmp_path_factory.mktemp("separate_sop")
  result = train.train_and_evaluate(config, str(workdir))
  return workdir, config, result


def test_sound_of_pixels_trains_on_clips_without_pose(no_pose_root, sop_workdir):
  root, without, nobody = no_pose_root
  _, config, result = sop_workdir
  assert result["step"] == 1
  assert all(np.isfinite(v) for _, scalars in result["history"] for v in scalars.values())
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


def test_sound_of_pixels_checkpoint_separates_clips_without_pose(no_pose_root, sop_workdir,
                                                                tmp_path):
  _, without, _ = no_pose_root
  workdir, _, _ = sop_workdir
  partner = _clip(no_pose_root[0], "test", duet=False, number=1)
  out = tmp_path / "sop"
  assert separate.main([f"--workdir={workdir}", f"--out={out}", "--mix", str(without[0].frames),
                        str(partner.frames), "--seconds=2"]) == 0
  record, page = _check_outputs(out, 2, 2.0, originals=True)
  assert record["model"] == "sound_of_pixels"
  assert not any("attention" in s for s in record["sources"])
  assert "exposes no visual attention map" in page
  assert record["sources"][0]["origin"] == "no pose (masked)"
