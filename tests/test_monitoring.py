"""Tests of tribert_jax.monitoring: TensorBoard scalars, audio, images and hparams read back."""

import glob

import ml_collections
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from tribert_jax import monitoring


def _example(rng, num_sources=2, length=2048):
  return dict(mixture=rng.uniform(-1, 1, length), sources=rng.uniform(-1, 1, (num_sources, length)),
              predictions=rng.uniform(-2, 2, (num_sources, length)),
              mix_mag=rng.uniform(0, 3, (512, 16)),
              pred_masks=rng.uniform(0, 1, (num_sources, 256, 16)),
              gt_masks=(rng.uniform(0, 1, (num_sources, 256, 16)) > 0.5).astype(np.float32),
              frames=rng.standard_normal((num_sources, 3, 32, 32, 3)),
              attention=rng.uniform(0, 1, (num_sources, 3, 7, 7)))


def read_events(logdir):
  """{tag: plugin name} of every tensor summary, and the accumulator."""
  files = glob.glob(f"{logdir}/events.out.tfevents.*")
  assert files, f"no event file in {logdir}"
  accumulator = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
  accumulator.Reload()
  plugins = {tag: accumulator.SummaryMetadata(tag).plugin_data.plugin_name
             for tag in accumulator.Tags()["tensors"]}
  return plugins, accumulator


def test_event_files_hold_scalars_audio_images_and_hparams(tmp_path):
  writer = monitoring.create_writer(str(tmp_path))
  config = ml_collections.ConfigDict({"optim": {"learning_rate": 1e-5}, "phase": "pretrain"})
  writer.write_hparams(monitoring.flat_hparams(config))
  writer.write_scalars(3, {"train/loss": 0.5, "eval/sdr": 4.25})
  rng = np.random.default_rng(0)
  monitoring.write_separation_examples(writer, 3, [_example(rng)], sample_rate=11025)
  writer.flush()
  writer.close()
  plugins, accumulator = read_events(str(tmp_path))
  assert plugins["train/loss"] == "scalars"
  event = accumulator.Tensors("eval/sdr")[0]
  assert event.step == 3 and float(tensor_util.make_ndarray(event.tensor_proto)) == 4.25
  for name in ("mixture", "source_0_ground_truth", "source_1_predicted"):
    assert plugins[f"examples/mixture_0/{name}"] == "audio"
  for name in ("spectrogram_mixture", "mask_0_predicted", "mask_1_ground_truth",
               "visual_attention_1"):
    assert plugins[f"examples/mixture_0/{name}"] == "images"
  audio = tensor_util.make_ndarray(
      accumulator.Tensors("examples/mixture_0/mixture")[0].tensor_proto)
  assert audio.shape[0] == 1  # one encoded clip (WAV bytes + label)
  assert _has_hparams(tmp_path)


def _has_hparams(logdir):
  """hparams are written as a separate summary event; look for the plugin in the raw events."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=g-import-not-at-top
  for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "hparams":
          return True
  return False


def test_images_are_rgb_in_range_with_low_frequencies_at_the_bottom():
  magnitude = np.zeros((512, 8))
  magnitude[0] = 1.0  # only the DC bin is loud
  image = monitoring.spectrogram_image(magnitude)
  assert image.shape == (512, 8, 3) and image.min() >= 0 and image.max() <= 1
  assert image[-1].mean() > image[0].mean()  # bright row drawn at the bottom
  overlay = monitoring.attention_overlay(np.zeros((3, 16, 16, 3)), np.random.rand(3, 4, 4))
  assert overlay.shape == (16, 48, 3)


def test_flat_hparams_flattens_nested_configs():
  config = ml_collections.ConfigDict({"a": {"b": 1, "c": (1, 2)}, "d": None, "e": "x"})
  assert monitoring.flat_hparams(config) == {"a.b": 1, "a.c": "(1, 2)", "d": "None", "e": "x"}
