"""Data / input-pipeline / spectral-feature settings shared by every training phase."""

from __future__ import annotations

import ml_collections

from configs.common import SIZES



def get_data_config(size: str = "paper") -> ml_collections.ConfigDict:
  """config.data for SIZE in {paper, cpu, tiny} (see data_pipeline/loading/pipeline.py)."""
  if size not in SIZES:
    raise ValueError(f"unknown config size {size!r}, expected one of {SIZES}")
  c = ml_collections.ConfigDict()

  # --- Dataset on disk --------------------------------------------------------------------------
  c.source = "folder"  # "folder": read the layout under root; "tfds": read its TFDS build
  c.root = ""  # dataset root (labels.json, index/, frames/, audio/, pose/); needed for "folder"
  c.tfds_name = ""  # "tfds": builder[/config], e.g. "synthmusic/tiny", "music21", "music"
  c.tfds_data_dir = ""  # "tfds": build_tfds's --data_dir; "" = TFDS default (~/tensorflow_datasets)
  c.tfds_cache_mb = 1024  # "tfds": MiB of clips' audio + JPEG bytes kept per pipeline (LRU; 0 off)
  c.num_classes = 21  # must equal len(labels.json classes): 21 MUSIC21 / SynthMUSIC, 11 MUSIC
  c.train_split = "train"  # index/<train_split>.csv feeds training
  c.eval_split = "test"  # index/<eval_split>_mixtures_n<num_mix>.csv is scored ("val" or "test")
  c.multi_source = False  # paper Table 1: False = solos only, True = solos and duets
  c.skip_bad_clips = False  # True: skip and count bad clips (logged); False: raise naming the file
  # JSON cache of clip validations (every frame decoded once; keyed by file size and mtime), so a
  # second run does not pay again. "" = WORKDIR/clip_validation.json (main.py / train.py fill it).
  c.validation_cache = ""
  # Batches carry host-only "clip_ids" [B, N] (index ids). The training loop turns this on for
  # its own stream (NonFiniteError names the batch's clips); other consumers leave it off.
  c.with_clip_ids = False

  # --- Mix-and-Separate -------------------------------------------------------------------------
  c.num_mix = 2  # N videos mixed per example (2 or 3)
  c.batch_size = 12  # global training batch (paper: 12); each host reads batch_size / hosts
  c.eval_batch_size = 12  # global evaluation batch; the last batch is padded with valid = 0
  c.volume_jitter = 0.5  # training gain per source ~ U[1 - j, 1 + j] (Sound-of-Pixels: 0.5)

  # --- Audio and spectrogram --------------------------------------------------------------------
  c.sample_rate = 11025  # Hz; wavs with another rate are bad clips
  c.audio_length = 65535  # samples per crop (~5.9 s), 256 STFT frames
  c.stft_frame_length = 1022  # Hann window = FFT size -> 512 linear frequency bins
  c.stft_hop = 256  # samples between STFT frames
  c.stft_pad_mode = "reflect"  # centre padding (librosa < 0.10 default; >= 0.10 uses "constant")
  c.warped_freq_bins = 256  # log-frequency bins after the Sound-of-Pixels warp
  c.mask_threshold = 0.5  # GT mask = source_warped > mask_threshold * mix_warped (every N)
  c.magnitude_floor = 1e-10  # added to the warped mixture magnitude so log() stays finite
  c.weight_min = 1e-3  # separation loss weight = clip(log1p(mix_warped), weight_min, weight_max)
  c.weight_max = 10.0

  # --- Frames -----------------------------------------------------------------------------------
  c.fps = 8.0  # frame rate of frames/ (must match labels.json)
  c.num_frames = 3  # T consecutive RGB frames per video, centred on the audio crop
  c.image_size = 224  # S: frames are S x S after cropping
  c.random_crop_area = (0.35, 1.0)  # training random-resized-crop area fraction range
  c.random_crop_aspect = (3.0 / 4.0, 4.0 / 3.0)  # training crop aspect-ratio range
  c.horizontal_flip = True  # training: flip frames (and pose x, left/right joints) with p = 0.5

  # --- Pose -------------------------------------------------------------------------------------
  c.pose_window = 256  # W frames of pose (8 fps) centred on the clip time (paper T = 256)
  c.max_persons = 2  # P tracks kept per clip (the ones with the most detections)
  # True: a clip without pose file (missing, or an empty `pose` column in the index) is a bad
  # clip. False: such clips are used with an all-zero pose_mask (never zero keypoints passed off
  # as a person) and counted ("clips without pose: K" in the log). Only for models that do not
  # read pose: Sound-of-Pixels, TriBERT with model.pose.enabled=False (config validation refuses
  # False for the others), and only with source="folder" (TFDS builds hold clips with pose only).
  c.require_pose = True
  # Folder of precomputed frozen ST-GCN features (data_pipeline/loading/pose_features.py): the
  # trainer sets it from config.pose_features when model.pose.stgcn_input="features"; "" = none.
  c.pose_features_dir = ""

  # --- tf.data performance ----------------------------------------------------------------------
  c.num_parallel_calls = -1  # parallel example loaders; -1 = tf.data.AUTOTUNE
  c.prefetch = 2  # host batches prefetched; -1 = AUTOTUNE

  if size == "cpu":
    c.batch_size = 8
    c.eval_batch_size = 8
    c.image_size = 64
    c.pose_window = 64
  elif size == "tiny":
    c.batch_size = 2
    c.eval_batch_size = 2
    c.image_size = 32
    c.pose_window = 16
    c.num_parallel_calls = 2
  return c
