"""Tests of the SynthMUSIC generator: layout, determinism, and real signal in every modality."""

from __future__ import annotations

import csv
import json
import pathlib
import wave

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data_pipeline.layout import schema
from data_pipeline.synthmusic import audio as synth_audio
from data_pipeline.synthmusic import generator, instruments

SR = 11025
FPS = 8


def _rows(root: pathlib.Path, name: str) -> list[dict]:
  with open(root / "index" / name, newline="") as f:
    return list(csv.DictReader(f))


def _read_wav(path: pathlib.Path) -> np.ndarray:
  with wave.open(str(path), "rb") as f:
    assert f.getnchannels() == 1 and f.getsampwidth() == 2 and f.getframerate() == SR, path
    return np.frombuffer(f.readframes(f.getnframes()), "<i2")


def _pose(root: pathlib.Path, row: dict) -> list[dict]:
  return json.loads((root / row["pose"]).read_text())


def _log_spectrogram(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
  """Log-magnitude STFT [frames, n_fft/2+1] with a Hann window (numpy only: no numba warm-up)."""
  x = x.astype(np.float64) / 32768
  count = 1 + (len(x) - n_fft) // hop
  frames = np.lib.stride_tricks.as_strided(x, (count, n_fft), (x.strides[0] * hop, x.strides[0]))
  return np.log(np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) + 1e-4)


def _solos(root: pathlib.Path, splits=("train", "val", "test")) -> list[dict]:
  return [r for s in splits for r in _rows(root, f"{s}.csv") if r["duet"] == "0"]


# ----------------------------------------------------------------------------------------------
# Layout and file formats
# ----------------------------------------------------------------------------------------------


def test_layout_and_indices(synthmusic_tiny):
  root = synthmusic_tiny
  labels = json.loads((root / "labels.json").read_text())
  assert labels == {"dataset": "synthmusic", "classes": sorted(instruments.CLASSES),
                    "sample_rate": SR, "fps": FPS}
  assert len(labels["classes"]) == 21
  ids = {}
  for split in ("train", "val", "test"):
    rows = _rows(root, f"{split}.csv")
    assert list(rows[0]) == list(schema.INDEX_COLUMNS)
    ids[split] = {r["id"] for r in rows}
    assert len(ids[split]) == len(rows)
    solo_classes = {r["labels"] for r in rows if r["duet"] == "0"}
    assert solo_classes == set(labels["classes"]), split  # every class in every split
    assert any(r["duet"] == "1" for r in rows), split
    for r in rows:
      names = r["labels"].split(";")
      assert r["category"] == "+".join(sorted(names))
      assert len(names) == (2 if r["duet"] == "1" else 1)
      assert set(names) <= set(labels["classes"])
      assert (root / r["audio"]).is_file() and (root / r["pose"]).is_file()
      frames = sorted((root / r["frames"]).glob("*.jpg"))
      assert len(frames) == int(r["num_frames"]) >= 80
      assert frames[0].name == "000001.jpg" and frames[-1].name == f"{len(frames):06d}.jpg"
      sources = [s for s in r["sources"].split(";") if s]
      assert len(sources) == (2 if r["duet"] == "1" else 0)
      for k, (source, name) in enumerate(zip(sources, names)):
        assert source.endswith(f"/{k}_{name}.wav") and (root / source).is_file()
  assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
  assert not (ids["val"] & ids["test"])
  with Image.open(root / _rows(root, "train.csv")[0]["frames"] / "000001.jpg") as image:
    assert image.mode == "RGB" and min(image.size) >= 224
  label_of = {r["id"]: r["labels"].split(";") for s in ("val", "test")
              for r in _rows(root, f"{s}.csv")}
  for split in ("val", "test"):
    for n in (2, 3):
      mixtures = _rows(root, f"{split}_mixtures_n{n}.csv")
      assert mixtures and list(mixtures[0]) == ["mixture_id", "clips"]
      seen = set()
      for m in mixtures:
        clips = m["clips"].split(";")
        assert len(clips) == n and set(clips) <= ids[split]
        names = [c for clip in clips for c in label_of[clip]]
        assert len(names) == len(set(names)), m  # disjoint label sets
        seen.add(frozenset(clips))
      assert len(seen) == len(mixtures)


def test_audio_format_and_duet_stems_sum_to_mix(synthmusic_tiny):
  root = synthmusic_tiny
  rows = [r for s in ("train", "val", "test") for r in _rows(root, f"{s}.csv")]
  for r in rows:
    audio = _read_wav(root / r["audio"])
    assert len(audio) >= 10 * SR
    assert len(audio) == int(r["num_frames"]) * SR // FPS
    rms = np.sqrt(np.mean((audio / 32768.0) ** 2))
    assert rms > 0.01, r["id"]  # clearly audible, not silence
    assert np.abs(audio).max() < 32767  # no clipping
    if r["duet"] == "1":
      stems = [_read_wav(root / s) for s in r["sources"].split(";")]
      assert all(np.sqrt(np.mean((s / 32768.0) ** 2)) > 0.005 for s in stems), r["id"]
      np.testing.assert_array_equal(np.sum([s.astype(np.int32) for s in stems], 0), audio)
      # The two players differ: the stems are far from identical.
      assert np.corrcoef(stems[0], stems[1])[0, 1] < 0.5


def test_pose_json_format(synthmusic_tiny):
  root = synthmusic_tiny
  detected, expected = 0, 0
  for r in _solos(root)[::3] + [r for r in _rows(root, "train.csv") if r["duet"] == "1"]:
    records = _pose(root, r)
    num_frames = int(r["num_frames"])
    persons = 2 if r["duet"] == "1" else 1
    frame_names = {p.name for p in (root / r["frames"]).glob("*.jpg")}
    seen = set()
    for rec in records:
      assert set(rec) == {"image_id", "category_id", "keypoints", "score", "box", "idx"}
      assert rec["image_id"] in frame_names and rec["category_id"] == 1
      assert len(rec["keypoints"]) == 136 * 3 and len(rec["box"]) == 4
      assert rec["idx"] in range(1, persons + 1)
      assert (rec["image_id"], rec["idx"]) not in seen
      seen.add((rec["image_id"], rec["idx"]))
      kp = np.array(rec["keypoints"]).reshape(136, 3)
      assert np.all((kp[:, 2] > 0) & (kp[:, 2] <= 1))
      assert np.all((kp[:, :2] >= 0) & (kp[:, :2] < 256))
      x, y, w, h = rec["box"]
      assert w > 0 and h > 0
    detected += len(records)
    expected += num_frames * persons
  # Like a real estimator: most frames detected, some missed.
  assert 0.85 < detected / expected < 0.995


# ----------------------------------------------------------------------------------------------
# Determinism
# ----------------------------------------------------------------------------------------------


def _tree(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_byte_deterministic(tmp_path):
  plan = generator.build_plan("tiny", seed=3)
  assert plan == generator.build_plan("tiny", seed=3)
  # A drum solo, a bowed solo and a duet, rendered inline and by a 2-process pool.
  subset = [next(c for c in plan if c.category == "drum"),
            next(c for c in plan if c.category == "erhu"),
            next(c for c in plan if len(c.classes) == 2)]
  soundfont = synth_audio.default_soundfont()
  generator._render_all(tmp_path / "a", subset, 3, soundfont, workers=1, progress=False)
  generator._render_all(tmp_path / "b", subset[::-1], 3, soundfont, workers=2, progress=False)
  generator.write_indices(tmp_path / "a", plan, "tiny", 3)
  generator.write_indices(tmp_path / "b", plan, "tiny", 3)
  a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
  assert len(a) > 3 * 80 and a.keys() == b.keys()
  assert [k for k in a if a[k] != b[k]] == []
  # Another seed gives other content.
  generator._render_all(tmp_path / "c", subset[:1], 4, soundfont, workers=1, progress=False)
  c = _tree(tmp_path / "c")
  audio = subset[0].paths()["audio"]
  assert c[audio] != a[audio]


def test_complete_marker_skips_and_unmarked_dir_is_refused(tmp_path, monkeypatch):
  from data_pipeline.layout import ownership

  with pytest.raises(ValueError, match="size"):
    generator.build_plan("huge", 0)
  plan = generator.build_plan("tiny", seed=0)
  small = [c for c in plan if c.category == "flute"][:1]
  monkeypatch.setattr(generator, "build_plan", lambda size, seed: small)
  monkeypatch.setattr(generator, "write_indices", lambda root, plan, size, seed: None)
  root = tmp_path / "ds"
  stale = root / "audio" / "flute" / "stale.wav"
  stale.parent.mkdir(parents=True)
  stale.write_bytes(b"partial")  # a folder without the .complete marker: not SynthMUSIC's
  with pytest.raises(ownership.DatasetRootError, match="--out"):
    generator.generate(root, size="tiny", seed=0, progress=False, workers=1)
  assert stale.read_bytes() == b"partial" and not (root / ".complete").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging folder left
  stale.unlink()
  stale.parent.rmdir()
  stale.parent.parent.rmdir()  # an empty folder is fine
  generator.generate(root, size="tiny", seed=0, progress=False, workers=1)
  assert (root / ".complete").is_file()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # staging renamed into place
  wav = root / small[0].paths()["audio"]
  before = wav.stat().st_mtime_ns
  generator.generate(root, size="tiny", seed=0, progress=False, workers=1)
  assert wav.stat().st_mtime_ns == before  # complete: nothing rewritten


# ----------------------------------------------------------------------------------------------
# Signal: audio classes, pose follows onsets, frames show the instrument
# ----------------------------------------------------------------------------------------------


def _audio_features(x: np.ndarray) -> np.ndarray:
  """Mean and spread of log energy in 40 log-spaced bands (timbre + register)."""
  spec = _log_spectrogram(x)  # [frames, 513]
  freqs = np.fft.rfftfreq(1024, 1 / SR)
  edges = np.geomspace(50, SR / 2, 41)
  bands = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].mean(1) if np.any(
      (freqs >= lo) & (freqs < hi)) else spec[:, np.argmin(abs(freqs - lo))]
                    for lo, hi in zip(edges[:-1], edges[1:])], 1)
  bands = bands - bands.max(1, keepdims=True)  # loudness-invariant shape
  return np.concatenate([bands.mean(0), bands.std(0)])


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y, standardise=True) -> float:
  """Accuracy of a nearest-class-mean classifier fitted on the train features."""
  train_x, test_x = np.asarray(train_x), np.asarray(test_x)
  if standardise:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  classes = sorted(set(train_y))
  centroids = np.stack([train_x[[y == c for y in train_y]].mean(0) for c in classes])
  predicted = [classes[i] for i in np.argmin(((test_x[:, None] - centroids[None]) ** 2).sum(-1), 1)]
  return float(np.mean([p == y for p, y in zip(predicted, test_y)]))


def test_audio_classes_are_separable(synthmusic_tiny):
  root = synthmusic_tiny
  train = _solos(root, ("train",))
  test = _solos(root, ("val", "test"))
  feats = lambda rows: [_audio_features(_read_wav(root / r["audio"])) for r in rows]  # noqa: E731
  accuracy = _nearest_centroid_accuracy(feats(train), [r["labels"] for r in train],
                                        feats(test), [r["labels"] for r in test])
  assert accuracy > 0.5, accuracy  # chance is 1/21


def _onset_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """Spectral flux summed over each video frame interval (t_{f-1}, t_f]. [num_frames]"""
  hop = 128
  spec = _log_spectrogram(audio, n_fft=512, hop=hop)
  flux = np.maximum(np.diff(spec, axis=0), 0).sum(1)
  times = (np.arange(1, len(spec)) * hop + 256) / SR
  bins = np.ceil(times * FPS).astype(int)
  out = np.zeros(num_frames)
  np.add.at(out, np.clip(bins, 0, num_frames - 1), flux)
  return out


def _hand_speed(records: list[dict], num_frames: int, person: int = 1) -> np.ndarray:
  """Mean displacement of the wrists and hand keypoints since the previous frame (nan if either
  frame was missed). [num_frames]"""
  joints = [9, 10] + list(range(94, 136))
  pose = np.full((num_frames, len(joints), 2), np.nan)
  for rec in records:
    if rec["idx"] == person:
      kp = np.array(rec["keypoints"]).reshape(136, 3)
      pose[int(rec["image_id"][:6]) - 1] = kp[joints, :2]
  speed = np.full(num_frames, np.nan)
  speed[1:] = np.median(np.linalg.norm(pose[1:] - pose[:-1], axis=-1), axis=1)
  return speed


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation over the frames both series have (clips may differ in length)."""
  n = min(len(a), len(b))
  a, b = a[:n], b[:n]
  ok = np.isfinite(a) & np.isfinite(b)
  return float(np.corrcoef(a[ok], b[ok])[0, 1])


def test_pose_motion_follows_note_onsets(synthmusic_tiny):
  root = synthmusic_tiny
  rows = _solos(root)
  envelopes, speeds = [], []
  for r in rows:
    n = int(r["num_frames"])
    envelopes.append(_onset_envelope(_read_wav(root / r["audio"]), n))
    speeds.append(_hand_speed(_pose(root, r), n))
  matched = [_correlation(s, e) for s, e in zip(speeds, envelopes)]
  # Control: the same pose against another clip's audio.
  shuffled = [_correlation(s, envelopes[(i + 7) % len(rows)]) for i, s in enumerate(speeds)]
  assert np.mean(matched) > 0.3, np.mean(matched)
  assert np.mean(matched) - np.mean(shuffled) > 0.25, (np.mean(matched), np.mean(shuffled))
  # Every class, on average over its clips, moves with its own onsets.
  per_class: dict[str, list[float]] = {}
  for r, c in zip(rows, matched):
    per_class.setdefault(r["labels"], []).append(c)
  weakest = min(per_class, key=lambda k: np.mean(per_class[k]))
  assert np.mean(per_class[weakest]) > 0.1, (weakest, per_class[weakest])


def _instrument_crop_features(root: pathlib.Path, row: dict) -> np.ndarray:
  """Colour histogram (8x8x8) of the non-background pixels around the hands, over 8 frames."""
  records = [rec for rec in _pose(root, row) if rec["idx"] == 1]
  hists = []
  for rec in records[::10]:
    kp = np.array(rec["keypoints"]).reshape(136, 3)
    hands = kp[[9, 10] + list(range(94, 136)), :2]
    lo = np.maximum(hands.min(0) - 10, 0).astype(int)
    hi = np.minimum(hands.max(0) + 10, 255).astype(int)
    with Image.open(root / row["frames"] / rec["image_id"]) as image:
      pixels = np.asarray(image).astype(int)
    # Background colours sampled on the top, left and right borders, where no player stands.
    border = np.concatenate([pixels[:6].reshape(-1, 3), pixels[:, :6].reshape(-1, 3),
                             pixels[:, -6:].reshape(-1, 3)])
    # Colours within ~16 levels per channel of a border colour count as background.
    background = np.zeros((32, 32, 32), bool)
    background[tuple((border // 8).T)] = True
    background = ndimage.binary_dilation(background, np.ones((5, 5, 5), bool))
    crop = pixels[lo[1]:hi[1], lo[0]:hi[0]].reshape(-1, 3)
    crop = crop[~background[tuple((crop // 8).T)]]
    q = crop // 32
    index = (q[:, 0] * 8 + q[:, 1]) * 8 + q[:, 2]
    hists.append(np.bincount(index, minlength=512) / max(len(index), 1))
  return np.sqrt(np.mean(hists, 0))


def test_frames_show_the_class_instrument(synthmusic_tiny):
  root = synthmusic_tiny
  train = _solos(root, ("train",))
  test = _solos(root, ("val", "test"))
  feats = lambda rows: [_instrument_crop_features(root, r) for r in rows]  # noqa: E731
  accuracy = _nearest_centroid_accuracy(feats(train), [r["labels"] for r in train],
                                        feats(test), [r["labels"] for r in test],
                                        standardise=False)
  assert accuracy > 0.35, accuracy  # chance is 1/21


def _pose_features(records: list[dict]) -> np.ndarray:
  """Where the arms and hands are relative to the body (torso-normalised), mean and spread."""
  vectors = []
  for rec in records:
    if rec["idx"] != 1:
      continue
    kp = np.array(rec["keypoints"]).reshape(136, 3)[:, :2]
    neck, hip = kp[18], kp[19]
    scale = max(np.linalg.norm(neck - hip), 1.0)
    parts = kp[[7, 8, 9, 10, 13, 14, 15, 16]]
    hands = np.stack([kp[94:115].mean(0), kp[115:136].mean(0)])
    vectors.append(((np.concatenate([parts, hands]) - neck) / scale).reshape(-1))
  vectors = np.array(vectors)
  return np.concatenate([np.median(vectors, 0), vectors.std(0)])


def test_pose_identifies_the_instrument(synthmusic_tiny):
  root = synthmusic_tiny
  train = _solos(root, ("train",))
  test = _solos(root, ("val", "test"))
  feats = lambda rows: [_pose_features(_pose(root, r)) for r in rows]  # noqa: E731
  accuracy = _nearest_centroid_accuracy(feats(train), [r["labels"] for r in train],
                                        feats(test), [r["labels"] for r in test])
  assert accuracy > 0.5, accuracy  # chance is 1/21
