"""Bad-input corpus, data side (issue 18): every damaged dataset gives an error naming the file or
the config key, or with data.skip_bad_clips a counted skip; dataset roots not made by a command
are never written by it. Function level (preflight / prepare_dataset / pipelines / ingest);
the exit-code tests of main.py live with the training loop's tests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil

import ml_collections
import numpy as np
import pytest
import soundfile

from data_pipeline import prepare
from data_pipeline.layout import ownership, reader, schema
from data_pipeline.loading import preflight
from tests import layout_fixtures

SPLITS = ("train", "test")

# Cost: every damaged dataset is a hard-linked copy of one small base layout (only the damaged
# file is new), built once per module and shared by its "raise" and "skip" tests, which also share
# a validation cache: the first check decodes every clip, the second re-checks only what changed
# (the damaged file's size / mtime differ, and failures are never cached, so the cache cannot hide
# the damage; each check asserts that the bad clip was checked again).


@pytest.fixture(scope="module")
def base(tmp_path_factory):
  """A minimal layout written once (train: 4 solos + 2 duets; test: 4 solos + 1 duet)."""
  return layout_fixtures.write_layout(tmp_path_factory.mktemp("bad_data") / "base",
                                      splits=SPLITS, train_solos_per_class=1)


def _tree(root: pathlib.Path, content: bool = True) -> dict[str, tuple]:
  """(size, mtime, inode[, content hash]) of every file under root (os.walk: run after every
  test, over ~800 files)."""
  out = {}
  top = str(root)
  for folder, _, files in os.walk(top):
    for name in files:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      entry = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
      if content:
        with open(path, "rb") as handle:
          entry += (hashlib.sha1(handle.read()).hexdigest(),)
      out[os.path.relpath(path, top)] = entry
  return out


@pytest.fixture(scope="module")
def base_tree(base):
  return _tree(base, content=False)


@pytest.fixture(autouse=True)
def base_unchanged(request, base, base_tree):
  """Nothing outside the test's own folder changes (the shared base layout included: copies are
  hard links, so an edit in place would show in the base's size / mtime)."""
  yield
  assert _tree(base, content=False) == base_tree


def _link_copy(base: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
  """A copy of base whose files are hard links (damage replaces files, never edits them)."""
  shutil.copytree(base, out, copy_function=os.link)
  return out


@pytest.fixture
def root(base, tmp_path):
  """A private copy of the base layout."""
  return _link_copy(base, tmp_path / "root")


def _replace(path: pathlib.Path, data: bytes) -> None:
  path.unlink()
  path.write_bytes(data)


def _config(root, **overrides):
  return layout_fixtures.data_config(root, **overrides)


def _damage(root: pathlib.Path, how: str) -> tuple[pathlib.Path, str]:
  """Damages clip train000 (or an index file); returns (the file the error must name, the skip
  kind of a clip case or the config key an index case must name)."""
  record = reader.read_index(root, "train")[0]
  n = int(6.5 * layout_fixtures.SAMPLE_RATE)
  rate = layout_fixtures.SAMPLE_RATE
  tone = layout_fixtures.tone(record.labels, n)
  if how in ("nan_wav", "inf_wav"):
    tone[1234] = np.nan if how == "nan_wav" else np.inf
    record.audio.unlink()
    soundfile.write(record.audio, tone, rate, subtype="FLOAT")
    return record.audio, "nonfinite_audio"
  if how == "silent_wav":
    record.audio.unlink()
    soundfile.write(record.audio, np.zeros(n, np.float32), rate, subtype="PCM_16")
    return record.audio, "silent_audio"
  if how == "short_wav":
    record.audio.unlink()
    soundfile.write(record.audio, tone[:1000], rate, subtype="PCM_16")
    return record.audio, "audio_too_short"
  if how == "wrong_rate":
    record.audio.unlink()
    soundfile.write(record.audio, tone, 16000, subtype="PCM_16")
    return record.audio, "wrong_sample_rate"
  if how == "zero_jpeg_first":
    _replace(record.frame_path(0), b"")
    return record.frame_path(0), "corrupt_frame"
  if how == "zero_jpeg_mid":
    _replace(record.frame_path(20), b"")
    return record.frame_path(20), "corrupt_frame"
  if how == "random_jpeg_mid":
    rng = np.random.default_rng(0)
    _replace(record.frame_path(20), b"\xff\xd8\xff" + rng.bytes(3000) + b"\xff\xd9")
    return record.frame_path(20), "corrupt_frame"
  if how == "missing_frame":
    record.frame_path(20).unlink()
    return record.frame_path(20), "missing_frames"
  if how == "nan_pose":
    entries = json.loads(record.pose.read_text())
    entries[3]["keypoints"][10] = float("nan")
    record.pose.unlink()
    record.pose.write_text(json.dumps(entries))  # json writes NaN, as numpy-based tools do
    return record.pose, "nonfinite_pose"
  if how == "malformed_pose":
    _replace(record.pose, b'[{"image_id": "000001.jpg", "keypoints": [1, 2')
    return record.pose, "corrupt_pose"
  if how == "missing_pose":
    record.pose.unlink()
    return record.pose, "missing_pose"
  if how == "unknown_clip":
    path = root / "index" / "test_mixtures_n2.csv"
    _replace(path, path.read_bytes() + b"test_n2_9999,test000;no_such_clip\n")
    return path, "no_such_clip"
  if how == "missing_index":
    path = root / "index" / "test.csv"
    path.unlink()
    return path, "config.data.eval_split"
  if how == "missing_train_index":
    path = root / "index" / "train.csv"
    path.unlink()
    return path, "config.data.train_split"
  if how == "num_mix_without_list":  # nothing damaged: the run asks for num_mix = 4
    return root / "index" / "test_mixtures_n4.csv", "config.data.num_mix"
  raise ValueError(how)


@dataclasses.dataclass
class Damaged:
  root: pathlib.Path
  bad_file: pathlib.Path
  kind: str  # skip kind (clip cases) or config key (index cases)
  cache: pathlib.Path  # validation cache shared by the tests of this dataset
  tree: dict

  def unchanged(self) -> bool:
    return _tree(self.root, content=False) == self.tree


@pytest.fixture(scope="module")
def damaged(base, tmp_path_factory):
  """damaged(how): the dataset damaged by `how`, built once per module (read-only in tests)."""
  made: dict[str, Damaged] = {}

  def make(how: str) -> Damaged:
    if how not in made:
      folder = tmp_path_factory.mktemp(how)
      root = _link_copy(base, folder / "root")
      bad_file, kind = _damage(root, how)
      made[how] = Damaged(root, bad_file, kind, folder / "clip_validation.json",
                          _tree(root, content=False))
    return made[how]

  return make


CLIP_CASES = ("nan_wav", "inf_wav", "silent_wav", "short_wav", "wrong_rate", "zero_jpeg_first",
              "zero_jpeg_mid", "random_jpeg_mid", "missing_frame", "nan_pose", "malformed_pose",
              "missing_pose")


@pytest.mark.parametrize("skip", [False, True], ids=["raise", "skip"])
@pytest.mark.parametrize("how", CLIP_CASES)
def test_bad_clip_preflight(damaged, how, skip):
  d = damaged(how)
  config = _config(d.root, skip_bad_clips=skip)
  if not skip:
    with pytest.raises(preflight.PreflightError) as error:
      preflight.check(config, SPLITS, 2, d.cache)
    assert str(d.bad_file) in str(error.value)
    assert "skip_bad_clips" in str(error.value) and error.value.path == str(d.bad_file)
  else:
    report = preflight.check(config, SPLITS, 2, d.cache)
    assert report["skipped_clips"] == {d.kind: 1}
    assert len(report["bad_files"]) == 1 and str(d.bad_file) in report["bad_files"][0]
    assert report["cache"]["misses"] >= 1  # the damaged clip is checked, cache or not
  assert d.unchanged()


@pytest.mark.parametrize("skip", [False, True], ids=["raise", "skip"])
@pytest.mark.parametrize("how", ["nan_wav", "random_jpeg_mid", "nan_pose"])
def test_bad_clip_pipeline(damaged, how, skip):
  """The pipeline's own start-up validation applies the same checks and skip policy (one case
  per kind of file: audio, frame, pose)."""
  from data_pipeline.loading import pipeline

  d = damaged(how)
  config = _config(d.root, skip_bad_clips=skip, validation_cache=str(d.cache))
  if not skip:
    with pytest.raises(schema.BadClipError, match=str(d.bad_file)):
      pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  else:
    built = pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
    assert built.stats.skipped_clips == {d.kind: 1}
    assert str(d.bad_file) in built.stats.bad_files[0]
  assert d.unchanged()


def _break_frames(record, how: str) -> None:
  """Replaces every frame of the clip: whatever an example of it reads is broken."""
  rng = np.random.default_rng(1)
  for i in range(record.num_frames):
    _replace(record.frame_path(i),
             b"" if how == "zero_jpeg" else b"\xff\xd8\xff" + rng.bytes(2000) + b"\xff\xd9")


@pytest.fixture(scope="module")
def eval_after_validation(base, tmp_path_factory):
  """An evaluation pipeline built (and validated) on a private copy, shared by the raise cases;
  each of them breaks the same clip's frames its own way, then iterates afresh."""
  from data_pipeline.loading import pipeline

  root = _link_copy(base, tmp_path_factory.mktemp("stream") / "root")
  config = _config(root, with_clip_ids=True)
  return pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)


@pytest.mark.parametrize("how", ["zero_jpeg", "random_jpeg"])
def test_frame_broken_after_validation_raises(eval_after_validation, how):
  """A frame that breaks after validation fails inside tf.data: the error names the file."""
  built = eval_after_validation
  first = next(built.plan())
  record = built.records[int(first["clip_index"][0])]
  _break_frames(record, how)
  with pytest.raises(schema.BadClipError) as error:
    list(built)
  assert str(record.frames) in str(error.value) and error.value.kind == "corrupt_frame"


@pytest.mark.parametrize("how", ["zero_jpeg", "random_jpeg"])
def test_frame_broken_after_validation_skip(root, how):
  """With skip_bad_clips the training stream drops the example and counts it."""
  from data_pipeline.loading import pipeline

  config = _config(root, skip_bad_clips=True, with_clip_ids=True)
  built = pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  first = next(built.plan())
  record = built.records[int(first["clip_index"][0])]
  _break_frames(record, how)
  batch = next(iter(built))
  assert record.id not in set(batch["clip_ids"].ravel())
  assert built.stats.skipped_examples >= 1
  assert built.stats.skipped_clips == {"corrupt_frame": 1}
  assert str(record.frames) in built.stats.bad_files[0]


def test_clip_ids_are_opt_in(base):
  from data_pipeline.loading import pipeline

  config = _config(base)
  built = pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  batch = next(iter(built))
  assert "clip_ids" not in batch and "_sequence" not in batch
  config.with_clip_ids = True  # read when iteration starts
  batch = next(iter(built))
  ids = [r.id for r in reader.read_index(base, "test")]
  assert batch["clip_ids"].shape == batch["clip_index"].shape
  assert batch["clip_ids"].tolist() == [[ids[i] for i in row] for row in batch["clip_index"]]


def test_validation_cache_second_run_pays_nothing(root, tmp_path):
  cache = tmp_path / "work" / "clip_validation.json"
  first = preflight.check(_config(root), SPLITS, 2, cache)
  assert first["cache"]["misses"] > 0 and cache.is_file()
  second = preflight.check(_config(root), SPLITS, 2, cache)
  assert second["cache"]["misses"] == 0 and second["cache"]["hits"] == first["cache"]["misses"]
  bad_file, _ = _damage(root, "random_jpeg_mid")  # a changed file is checked again
  with pytest.raises(preflight.PreflightError, match=str(bad_file)):
    preflight.check(_config(root), SPLITS, 2, cache)


# ---- Index files, mixture lists and config keys -------------------------------------------------


@pytest.mark.parametrize("skip", [False, True], ids=["raise", "skip"])
@pytest.mark.parametrize("how", ["unknown_clip", "missing_index", "missing_train_index",
                                 "num_mix_without_list"])
def test_index_problems_name_file_and_key(damaged, how, skip):
  d = damaged(how)
  num_mix = 4 if how == "num_mix_without_list" else 2
  with pytest.raises(preflight.PreflightError) as error:
    preflight.check(_config(d.root, skip_bad_clips=skip, num_mix=num_mix), SPLITS, num_mix,
                    d.cache)
  assert str(d.bad_file) in str(error.value) and d.kind in str(error.value)
  assert d.unchanged()


# ---- Data loss: roots are written only by their owner -------------------------------------------


def _run_config(root, dataset="synthmusic", classes=(), source_root=""):
  config = ml_collections.ConfigDict()
  config.dataset = dataset
  config.synthmusic_size = "tiny"
  config.synthmusic_seed = 0
  config.data = ml_collections.ConfigDict({"root": str(root)})
  config.class_subset = ml_collections.ConfigDict(
      {"classes": list(classes), "source_root": str(source_root), "dataset_name": "subset"})
  return config


def test_prepare_refuses_a_dataset_not_made_by_synthmusic(root):
  (root / "notes.txt").write_text("mine")
  before = _tree(root)
  with pytest.raises(ownership.DatasetRootError) as error:
    prepare.prepare_dataset(_run_config(root), process_index=0)
  message = str(error.value)
  assert str(root) in message and "config.data.root" in message
  assert "--config.dataset=music21" in message
  assert _tree(root) == before
  assert sorted(p.name for p in root.parent.iterdir()) == ["root"]  # no staging left behind


def test_class_subset_refuses_a_non_empty_target(root, tmp_path):
  target = tmp_path / "view"
  target.mkdir()
  (target / "keep.txt").write_text("mine")
  before = _tree(target)
  config = _run_config(target, dataset="music21", classes=("cello", "flute"), source_root=root)
  with pytest.raises(ownership.DatasetRootError, match="config.data.root"):
    prepare.prepare_dataset(config, process_index=0)
  assert _tree(target) == before
  # An empty target gets the view (and is then a dataset root).
  empty = tmp_path / "empty"
  empty.mkdir()
  prepare.prepare_dataset(_run_config(empty, "music21", ("cello", "flute"), root), 0)
  assert reader.read_labels(empty).classes == ("cello", "flute")


def test_synthmusic_refuses_an_unowned_out_folder(tmp_path):
  from data_pipeline import synthmusic

  out = tmp_path / "out"
  (out / "audio").mkdir(parents=True)
  (out / "audio" / "take1.wav").write_bytes(b"precious")
  before = _tree(out)
  with pytest.raises(ownership.DatasetRootError, match="--out"):
    synthmusic.generate(out, size="tiny", seed=0, progress=False)
  assert _tree(out) == before


def test_ingest_refuses_an_unowned_out_folder(tmp_path):
  from data_pipeline.ingest import cli

  out = tmp_path / "out"
  out.mkdir()
  (out / "thesis.tex").write_text("mine")
  before = _tree(out)
  with pytest.raises(ownership.DatasetRootError) as error:
    cli.preprocess(tmp_path / "videos", out, split_dir=tmp_path / "splits",
                   solo_json=tmp_path / "solo.json", progress=False)
  assert str(out) in str(error.value) and "--out" in str(error.value)
  assert _tree(out) == before
  assert cli.main(["--videos", str(tmp_path), "--out", str(out), "--split_dir",
                   str(tmp_path), "--solo_json", str(tmp_path / "x.json")]) == 1
  assert _tree(out) == before
