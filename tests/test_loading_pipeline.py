"""Tests of data_pipeline.loading.pipeline: contract, determinism, hosts, eval coverage, errors."""

import importlib.util
import itertools
import pathlib

import numpy as np
import pytest
import soundfile
import tensorflow as tf
from PIL import Image

from data_pipeline.layout import reader, schema, skeleton
from data_pipeline.loading import pipeline as input_pipeline
from tests import layout_fixtures

L = 65535


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> pathlib.Path:
  return layout_fixtures.write_layout(tmp_path_factory.mktemp("pipeline") / "root")


def _contract(config, batch_size):
  """Expected {key: (shape, dtype)} of a host batch."""
  n, t, s, w, c = config.num_mix, config.num_frames, config.image_size, config.pose_window, \
      config.num_classes
  return dict(frames=((batch_size, n, t, s, s, 3), np.float32),
              pose=((batch_size, n, 2, w, 68, 3), np.float32),
              pose_mask=((batch_size, n, 2, w), np.float32),
              pose_frame_index=((batch_size, n, t), np.int32),
              labels=((batch_size, n, c), np.float32), waveform=((batch_size, n, L), np.float32),
              mixture=((batch_size, L), np.float32), valid=((batch_size,), np.float32),
              clip_index=((batch_size, n), np.int32), mixture_index=((batch_size,), np.int32))


def _check_batch(batch, config, batch_size, records, classes):
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == _contract(config, batch_size)
  np.testing.assert_allclose(batch["mixture"], batch["waveform"].sum(axis=1), atol=1e-6)
  assert not batch["pose"][batch["pose_mask"] == 0].any()
  assert batch["pose"][..., :2].min() >= 0 and batch["pose"][..., :2].max() <= 1
  expected_index = config.pose_window // 2 - config.num_frames // 2 + np.arange(config.num_frames)
  np.testing.assert_array_equal(batch["pose_frame_index"],
                                np.broadcast_to(expected_index, batch["pose_frame_index"].shape))
  for b, n in itertools.product(range(batch_size), range(config.num_mix)):
    labels = records[batch["clip_index"][b, n]].labels
    np.testing.assert_array_equal(batch["labels"][b, n], schema.multi_hot(labels, classes))


@pytest.mark.parametrize("num_mix, multi_source", [(2, True), (3, False)])
def test_train_batches_follow_contract_and_mixing_protocol(layout, num_mix, multi_source):
  config = layout_fixtures.data_config(layout, num_mix=num_mix, multi_source=multi_source)
  pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  records = reader.read_index(layout, "train")
  plans = list(itertools.islice(pipeline.plan(), 4))
  batches = list(itertools.islice(iter(pipeline), 2))
  for batch, index in zip(batches, (0, 2)):
    _check_batch(batch, config, 2, records, layout_fixtures.CLASSES)
    assert np.all(batch["valid"] == 1) and np.all(batch["mixture_index"] == -1)
    # waveform = clip(source crop * gain, -1, 1) / N, read straight from the wav.
    plan = plans[index]
    for n in range(num_mix):
      source, _ = soundfile.read(records[plan["clip_index"][n]].audio, start=plan["audio_start"][n],
                                 frames=L, dtype="float32")
      expected = np.clip(source * plan["gain"][n], -1, 1) / num_mix
      np.testing.assert_allclose(batch["waveform"][0, n], expected, atol=1e-6)
  duets = {r.row for r in records if r.duet}
  seen = {int(x) for plan in itertools.islice(pipeline.plan(), 60) for x in plan["clip_index"]}
  assert bool(seen & duets) == multi_source
  for plan in itertools.islice(pipeline.plan(), 60):  # partners have disjoint label sets
    labels = [x for r in plan["clip_index"] for x in records[r].labels]
    assert len(labels) == len(set(labels))
  assert pipeline.stats.examples == 4 and pipeline.stats.pose_positions_masked > 0


def test_eager_and_tf_data_give_the_same_examples(layout):
  config = layout_fixtures.data_config(layout, num_parallel_calls=2)
  pipeline = input_pipeline.build_train_pipeline(config, seed=3, process_index=0, process_count=1)
  plans = list(itertools.islice(pipeline.plan(), 6))
  batches = list(itertools.islice(iter(pipeline), 3))
  assert {int(p["flip"].max()) for p in plans} == {0, 1}  # both branches exercised
  for i, plan in enumerate(plans):
    eager = pipeline.load_example({k: tf.constant(v) for k, v in plan.items()})
    for key, value in eager.items():
      np.testing.assert_allclose(batches[i // 2][key][i % 2], value.numpy(), atol=1e-6,
                                 err_msg=key)


def test_flip_mirrors_frames_and_pose_together(layout):
  config = layout_fixtures.data_config(layout)
  pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  plan = next(pipeline.plan())
  examples = []
  for flip in (0, 1):
    variant = dict(plan, flip=np.full_like(plan["flip"], flip))
    examples.append(pipeline.load_example({k: tf.constant(v) for k, v in variant.items()}))
  plain, flipped = [{k: v.numpy() for k, v in e.items()} for e in examples]
  np.testing.assert_allclose(flipped["frames"], plain["frames"][:, :, :, ::-1], atol=1e-6)
  perm = skeleton.FLIP_PERMUTATION
  mask = plain["pose_mask"][..., None]  # [N, P, W, 1]
  np.testing.assert_allclose(flipped["pose"][..., 0], (1 - plain["pose"][..., perm, 0]) * mask,
                             atol=1e-6)
  np.testing.assert_allclose(flipped["pose"][..., 1:], plain["pose"][..., perm, 1:], atol=1e-6)
  np.testing.assert_array_equal(flipped["waveform"], plain["waveform"])


def test_same_seed_same_batches_for_any_parallelism(layout):
  def first_batches(seed, calls):
    config = layout_fixtures.data_config(layout, num_parallel_calls=calls)
    pipeline = input_pipeline.build_train_pipeline(config, seed=seed, process_index=0,
                                                   process_count=1)
    return list(itertools.islice(iter(pipeline), 2))

  reference = first_batches(7, 1)
  for batch, other in zip(reference, first_batches(7, 3)):
    for key in batch:
      np.testing.assert_array_equal(batch[key], other[key], err_msg=key)
  different = first_batches(8, 1)
  assert not all(np.array_equal(a["waveform"], b["waveform"]) for a, b in zip(reference, different))


def test_start_batch_resumes_the_same_stream(layout):
  config = layout_fixtures.data_config(layout)
  full = input_pipeline.build_train_pipeline(config, seed=5, process_index=0, process_count=1)
  resumed = input_pipeline.build_train_pipeline(config, seed=5, start_batch=9, process_index=0,
                                                process_count=1)
  # 9 batches of 2 = 18 examples: two epochs of 8 solo anchors, then 2 into the third.
  expected = list(itertools.islice(full.plan(), 18, 24))
  for got, want in zip(itertools.islice(resumed.plan(), 6), expected):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  batch = next(iter(resumed))
  np.testing.assert_array_equal(batch["clip_index"], [p["clip_index"] for p in expected[:2]])


def test_training_hosts_read_disjoint_complete_shards(layout):
  config = layout_fixtures.data_config(layout, batch_size=4, multi_source=True)
  eligible = {r.row for r in reader.read_index(layout, "train")}
  shards = []
  for process in range(2):
    pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=process,
                                                   process_count=2)
    assert pipeline.host_batch_size == 2
    plans = list(itertools.islice(pipeline.plan(), 2 * pipeline.examples_per_epoch))
    first_epoch = [int(p["clip_index"][0]) for p in plans[:pipeline.examples_per_epoch]]
    assert len(first_epoch) == len(set(first_epoch))  # every anchor once per epoch
    used = {int(x) for p in plans for x in p["clip_index"]}
    assert used == set(first_epoch)  # partners come from the same host's shard
    shards.append(used)
  assert not shards[0] & shards[1] and shards[0] | shards[1] == eligible


@pytest.mark.parametrize("num_mix, eval_batch, processes", [(2, 3, 1), (2, 6, 2), (3, 2, 1)])
def test_eval_visits_every_mixture_once(layout, num_mix, eval_batch, processes):
  config = layout_fixtures.data_config(layout, num_mix=num_mix, eval_batch_size=eval_batch)
  records = reader.read_index(layout, "test")
  num_mixtures = len(reader.read_mixtures(layout, "test", num_mix, records))
  seen, batch_counts = [], []
  for process in range(processes):
    pipeline = input_pipeline.build_eval_pipeline(config, "test", process_index=process,
                                                  process_count=processes)
    batches = list(pipeline)
    batch_counts.append(len(batches))
    assert len(batches) == pipeline.num_batches
    for batch in batches:
      _check_batch(batch, config, eval_batch // processes, records, layout_fixtures.CLASSES)
      real = batch["valid"] == 1
      assert np.all(batch["mixture_index"][~real] == -1)
      seen += batch["mixture_index"][real].tolist()
    again = list(pipeline)  # a second pass is identical (fixed list, centred crops)
    np.testing.assert_array_equal(again[0]["frames"], batches[0]["frames"])
  assert len(set(batch_counts)) == 1  # every host runs the same number of batches
  assert sorted(seen) == list(range(num_mixtures))


def test_eval_alignment_and_pose_window_edges(layout):
  config = layout_fixtures.data_config(layout, pose_window=64, eval_batch_size=8)
  pipeline = input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  batch = next(iter(pipeline))
  # Centred crop: start = (71662 - 65535) // 2 = 3063, centre time 3.25 s -> frame 26 (0-based).
  plan = next(pipeline.plan())
  assert list(plan["audio_start"]) == [3063, 3063] and list(plan["center_frame"]) == [26, 26]
  # The fixture's left stripe encodes the frame number (4 grey levels per frame): the top-left
  # pixel equals that of JPEG files 000026..000028 (frames 25..27) inside the central crop.
  pixels = (batch["frames"][..., 0, 0, 0] * input_pipeline.IMAGENET_STD[0]
            + input_pipeline.IMAGENET_MEAN[0]) * 255  # [B, N, T] top-left red value
  records = reader.read_index(layout, "test")
  for b, n in itertools.product(range(8), range(2)):
    record = records[batch["clip_index"][b, n]]
    expected = [np.asarray(Image.open(record.frame_path(f)))[:2, 8:10, 0].mean()
                for f in (25, 26, 27)]
    np.testing.assert_allclose(pixels[b, n], expected, atol=1.5)
    assert np.all(np.diff(expected) > 2.5)  # neighbouring frames are told apart
  # Window = frames -6 .. 57 of a 52-frame clip: 6 positions before, 6 after are masked.
  mask = batch["pose_mask"]
  assert not mask[..., :6].any() and not mask[..., 58:].any()
  frames = np.arange(64) - 6
  inside = (frames >= 0) & (frames < 52)
  np.testing.assert_array_equal(mask[..., 0, :], np.broadcast_to(inside & (frames % 5 != 4),
                                                                 mask[..., 0, :].shape))
  assert pipeline.stats.pose_frames_without_detection == 5 * 10  # frames % 5 == 4 of 5 clips
  assert pipeline.stats.pose_positions_masked > 0
  stats = pipeline.stats.as_dict()
  assert stats["examples"] == 8 and stats["clips"] == 5


@pytest.fixture
def damaged_layout(tmp_path) -> pathlib.Path:
  return layout_fixtures.write_layout(tmp_path / "root", train_solos_per_class=1)


def test_bad_clip_raises_or_is_skipped_and_counted(damaged_layout):
  records = reader.read_index(damaged_layout, "test")
  records[0].audio.unlink()
  config = layout_fixtures.data_config(damaged_layout)
  with pytest.raises(schema.BadClipError, match=str(records[0].audio)):
    input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  config.skip_bad_clips = True
  pipeline = input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  assert pipeline.stats.skipped_clips == {"missing_audio": 1}
  assert pipeline.stats.skipped_mixtures == 3  # test000 (cello) is in 3 of the 8 mixtures
  assert str(records[0].audio) in pipeline.stats.bad_files[0]
  seen = [i for b in pipeline for i, v in zip(b["mixture_index"], b["valid"]) if v]
  assert len(seen) == len(set(seen)) == 5
  train = reader.read_index(damaged_layout, "train")
  soundfile.write(train[1].audio, np.zeros(5000, np.float32), 11025, subtype="PCM_16")
  with pytest.raises(schema.BadClipError, match="shorter than"):
    input_pipeline.build_train_pipeline(dict_config(config, skip_bad_clips=False), seed=0,
                                        process_index=0, process_count=1)
  pipeline = input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  assert pipeline.stats.skipped_clips == {"audio_too_short": 1}
  rows = {int(x) for p in itertools.islice(pipeline.plan(), 40) for x in p["clip_index"]}
  assert 1 not in rows and rows


def dict_config(config, **overrides):
  """Copy of a ConfigDict with overrides."""
  copy = config.copy_and_resolve_references()
  for key, value in overrides.items():
    setattr(copy, key, value)
  return copy


def test_truncated_jpeg_mid_clip_names_the_file_at_build_time(damaged_layout):
  """Every frame of a clip is decoded when the pipeline is built (not only frame 1), so a
  truncated frame in the middle of a clip is a BadClipError naming it before any batch."""
  record = reader.read_index(damaged_layout, "test")[0]
  frame = record.frame_path(26)  # the centre frame of the eval crop
  frame.write_bytes(frame.read_bytes()[:200])
  config = layout_fixtures.data_config(damaged_layout)
  with pytest.raises(schema.BadClipError, match=str(frame)) as error:
    input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  assert error.value.kind == "corrupt_frame"


def test_config_mismatch_names_the_key(layout):
  config = layout_fixtures.data_config(layout, num_classes=21)
  with pytest.raises(ValueError, match="num_classes"):
    input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  with pytest.raises(ValueError, match="batch_size"):
    input_pipeline.build_train_pipeline(layout_fixtures.data_config(layout, batch_size=3), seed=0,
                                        process_index=0, process_count=2)


@pytest.mark.skipif(importlib.util.find_spec("data_pipeline.synthmusic") is None,
                    reason="data_pipeline.synthmusic has not landed yet")
def test_synthmusic_tiny_batches(synthmusic_tiny):
  info = reader.read_labels(synthmusic_tiny)
  config = layout_fixtures.data_config(synthmusic_tiny, num_classes=len(info.classes),
                                       multi_source=True)
  records = reader.read_index(synthmusic_tiny, "train")
  train = input_pipeline.build_train_pipeline(config, seed=0, process_index=0, process_count=1)
  _check_batch(next(iter(train)), config, 2, records, info.classes)
  evaluation = input_pipeline.build_eval_pipeline(config, "test", process_index=0, process_count=1)
  mixtures = reader.read_mixtures(synthmusic_tiny, "test", 2,
                                         reader.read_index(synthmusic_tiny, "test"))
  seen = [i for b in evaluation for i, v in zip(b["mixture_index"], b["valid"]) if v]
  assert sorted(seen) == list(range(len(mixtures)))


# ---- build_clip_pipeline: every clip once, N = 1, the evaluation protocol ---------------------


@pytest.mark.parametrize("solos_only", [False, True])
def test_clip_pipeline_yields_every_clip_once(layout, solos_only):
  # num_mix = 3 in the config: the clip pipeline uses N = 1 whatever the caller's num_mix is.
  config = layout_fixtures.data_config(layout, num_mix=3, eval_batch_size=3)
  records = reader.read_index(layout, "test")
  expected = [r.row for r in records if not (solos_only and r.duet)]
  assert len(expected) == (4 if solos_only else 5)  # 4 solos + 1 duet: padding either way
  pipeline = input_pipeline.build_clip_pipeline(config, "test", solos_only=solos_only,
                                                process_index=0, process_count=1)
  batches = list(pipeline)
  assert len(batches) == pipeline.num_batches == 2
  assert pipeline.examples_per_epoch == len(expected)
  one = dict_config(config, num_mix=1)
  rows, positions = [], []
  for batch in batches:
    _check_batch(batch, one, 3, records, layout_fixtures.CLASSES)  # N axes of size 1
    np.testing.assert_array_equal(batch["mixture"], batch["waveform"][:, 0])
    real = batch["valid"] == 1
    assert np.all(batch["mixture_index"][~real] == -1)
    rows += batch["clip_index"][real, 0].tolist()
    positions += batch["mixture_index"][real].tolist()
  assert rows == expected  # every clip exactly once, in index order
  assert positions == list(range(len(expected)))  # mixture_index: position in the clip list
  assert sum(int(b["valid"].sum()) for b in batches) == len(expected)
  assert sum(int((b["valid"] == 0).sum()) for b in batches) == 6 - len(expected)
  assert config.num_mix == 3  # the caller's config is left alone


def test_clip_pipeline_equals_eval_pipeline_on_one_clip_mixtures(tmp_path):
  root = layout_fixtures.write_layout(tmp_path / "root", splits=("test",))
  records = reader.read_index(root, "test")
  with (root / "index" / "test_mixtures_n1.csv").open("w") as handle:
    handle.write("mixture_id,clips\n" + "".join(f"m{r.row},{r.id}\n" for r in records))
  config = layout_fixtures.data_config(root, num_mix=1, eval_batch_size=2)
  evaluation = input_pipeline.build_eval_pipeline(config, "test", process_index=0,
                                                  process_count=1)
  clips = input_pipeline.build_clip_pipeline(dict_config(config, num_mix=2), "test",
                                             process_index=0, process_count=1)
  for got, want in zip(clips.plan(), evaluation.plan(), strict=True):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  eval_batches, clip_batches = list(evaluation), list(clips)
  assert len(clip_batches) == len(eval_batches) == 3
  for got, want in zip(clip_batches, eval_batches):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  # The evaluation protocol itself: centred crop, no flip, gain 1, central frame square.
  plan = next(clips.plan())
  assert list(plan["audio_start"]) == [3063] and list(plan["center_frame"]) == [26]
  assert list(plan["flip"]) == [0] and list(plan["gain"]) == [1.0]
  assert list(plan["crop_box"][0]) == [0, 8, 40, 40]  # central square of 40 x 56 frames
  source, _ = soundfile.read(records[0].audio, start=3063, frames=L, dtype="float32")
  np.testing.assert_allclose(clip_batches[0]["waveform"][0, 0], source, atol=1e-6)


@pytest.mark.parametrize("solos_only", [False, True])
def test_clip_pipeline_hosts_cover_every_clip_once(synthmusic_tiny, solos_only):
  info = reader.read_labels(synthmusic_tiny)
  config = layout_fixtures.data_config(synthmusic_tiny, num_classes=len(info.classes),
                                       eval_batch_size=8)
  records = reader.read_index(synthmusic_tiny, "test")
  expected = [r.row for r in records if not (solos_only and r.duet)]
  assert any(r.duet for r in records)
  rows, batch_counts = [], []
  for process in range(2):
    pipeline = input_pipeline.build_clip_pipeline(config, "test", solos_only=solos_only,
                                                  process_index=process, process_count=2)
    assert pipeline.host_batch_size == 4
    batches = list(pipeline)
    batch_counts.append(len(batches))
    for batch in batches:
      assert batch["clip_index"].shape == (4, 1) and batch["waveform"].shape[1] == 1
      rows += batch["clip_index"][batch["valid"] == 1, 0].tolist()
  assert batch_counts[0] == batch_counts[1]
  assert sorted(rows) == expected  # together every clip once


def test_clip_pipeline_bad_clip_raises_or_is_skipped_and_counted(damaged_layout):
  records = reader.read_index(damaged_layout, "test")
  records[0].audio.unlink()
  config = layout_fixtures.data_config(damaged_layout, eval_batch_size=2)
  with pytest.raises(schema.BadClipError, match=str(records[0].audio)):
    input_pipeline.build_clip_pipeline(config, "test", process_index=0, process_count=1)
  config.skip_bad_clips = True
  pipeline = input_pipeline.build_clip_pipeline(config, "test", process_index=0, process_count=1)
  assert pipeline.stats.skipped_clips == {"missing_audio": 1}
  assert pipeline.stats.skipped_mixtures == 1
  assert str(records[0].audio) in pipeline.stats.bad_files[0]
  rows = [int(r) for b in pipeline for r, v in zip(b["clip_index"][:, 0], b["valid"]) if v]
  assert rows == [1, 2, 3, 4]
