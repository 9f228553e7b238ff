"""Config checks that run before any heavy work (pure Python: no TensorFlow, no JAX import).

main.py calls `check_config` right after flag parsing (a bad value fails in about two seconds,
not after minutes of compilation), `check_devices` right after `import jax` (before anything is
compiled), and `preflight_data` for the dataset files the mode will read. Every error names the
config key and says what is expected:

  config.data.batch_size=0: must be a positive multiple of config.grad_accum_steps=1

`ConfigError` carries every problem found, one per line.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable, Sequence

# Values accepted by the enum-like keys (the modules that read them raise on anything else, but
# only once training has started).
ENUMS = {
    "dataset": ("synthmusic", "music21", "music"),
    "phase": ("pose_pretrain", "separation_pretrain", "pretrain", "finetune", "sound_of_pixels",
              "sound_of_pixels_frames", "visual_pretrain", "retrieval", "probe", "ablations",
              "amnet_ame", "amnet"),
    "data.source": ("folder", "tfds"),
    "data.eval_split": ("train", "val", "test"),
    "data.train_split": ("train", "val", "test"),
    "model.name": ("tribert", "sound_of_pixels", "separation_pretrain", "frame_classifier",
                   "visual_classifier", "amnet", "amnet_ame"),
    "model.init": ("sound_of_pixels", "flax"),
    "model.visual_source": ("frames", "oracle"),
    # AMnet (configs/amnet.py; tribert_jax/models/amnet.py STAGES / FUSIONS).
    "model.stage": ("appearance", "motion"),
    "model.motion_stage.fusion": ("relocate", "self"),
    "model.appearance.activation": ("sigmoid", "none"),
    "optim.name": ("adam", "adamw", "sgd", "bert_adam"),
    "optim.decay": ("constant", "cosine", "step", "warmup_linear"),
    "eval.mask_type": ("binary", "ratio"),
    "eval.silent_policy": ("skip", "error"),
    "eval.backend": ("mir_eval", "fast_bss_eval"),
    "eval.quick_backend": ("mir_eval", "fast_bss_eval"),
    "eval.quick_split": ("train", "val", "test"),
    "init.which": ("best", "latest"),
    "model.pose.stgcn_input": ("pose", "features"),
    "model.unet.deconv_impl": ("conv_transpose", "matmul"),
    "pose_features.which": ("best", "latest"),
}
# Keys that must be > 0 (integers or floats) when the config has them.
POSITIVE = ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
            "keep_checkpoints", "max_steps_in_flight", "grad_accum_steps", "data.eval_batch_size",
            "data.num_frames", "data.image_size", "data.pose_window", "data.max_persons",
            "data.sample_rate", "data.audio_length", "export.batch_size", "retrieval.batch_size",
            "retrieval.num_epochs", "probe.batch_size", "probe.num_epochs", "eval.quick_batches",
            "model.ame.temperature", "model.ame.min_shift", "model.refinement.num_heads")
# Keys that must be >= 0.
NON_NEGATIVE = ("optim.warmup_steps", "optim.grad_clip_norm", "optim.weight_decay",
                "eval.num_workers", "optim.end_lr_factor", "eval.quick_every_steps")
# Learning rates: > 0 and finite.
LEARNING_RATES = ("optim.learning_rate", "retrieval.learning_rate", "probe.learning_rate")
NUM_MIX = (2, 3)


class ConfigError(ValueError):
  """One or more config values are invalid; the message has one line per problem."""

  def __init__(self, problems: Sequence[str]):
    self.problems = list(problems)
    super().__init__("\n".join(self.problems))


def lookup(config: Any, key: str) -> tuple[bool, Any]:
  """(present, value) of a dotted key ('data.batch_size') in a ConfigDict (or nested dicts)."""
  node = config
  for part in key.split("."):
    try:
      if part not in node:
        return False, None
      node = node[part]
    except TypeError:
      return False, None
  return True, node


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(config: Any) -> list[str]:
  """Problems of config's values (device-independent), one line each naming the key; [] if
  none. Keys a phase config does not have are skipped."""
  problems: list[str] = []

  def bad(key: str, value: Any, expected: str) -> None:
    problems.append(f"config.{key}={value!r}: {expected}")

  for key, allowed in ENUMS.items():
    present, value = lookup(config, key)
    if present and value not in allowed:
      bad(key, value, f"expected one of {list(allowed)}")
  for key in POSITIVE:
    present, value = lookup(config, key)
    if present and (not _is_number(value) or not value > 0):
      bad(key, value, "must be > 0")
  for key in NON_NEGATIVE:
    present, value = lookup(config, key)
    if present and (not _is_number(value) or not value >= 0):
      bad(key, value, "must be >= 0")
  for key in LEARNING_RATES:
    present, value = lookup(config, key)
    if present and (not _is_number(value) or not math.isfinite(value) or value <= 0):
      bad(key, value, "a learning rate must be finite and > 0")
  present, seconds = lookup(config, "max_train_seconds")
  if present and seconds is not None and (not _is_number(seconds) or not math.isfinite(seconds)
                                          or seconds < 0):
    bad("max_train_seconds", seconds, "a training budget in seconds must be finite and >= 0 "
        "(0 or None = no budget)")
  present, num_mix = lookup(config, "data.num_mix")
  if present and num_mix not in NUM_MIX:
    bad("data.num_mix", num_mix, f"N videos mixed per example must be one of {list(NUM_MIX)}")
  present, accum = lookup(config, "grad_accum_steps")
  accum = accum if present and _is_number(accum) and accum > 0 else 1
  present, batch = lookup(config, "data.batch_size")
  if present and (not isinstance(batch, int) or batch <= 0 or batch % accum):
    bad("data.batch_size", batch,
        f"must be a positive multiple of config.grad_accum_steps={accum}")
  present, whole = lookup(config, "init.checkpoint")
  _, parts = lookup(config, "init.parts")
  for name in sorted(parts or {}):
    if present and whole and parts[name].get("checkpoint"):
      bad(f"init.parts.{name}.checkpoint", parts[name].checkpoint,
          f"cannot be combined with config.init.checkpoint={whole!r} (the whole model from "
          "one checkpoint): set one of them")
  problems.extend(_check_optimizer(config))
  present, stgcn_input = lookup(config, "model.pose.stgcn_input")
  _, pose_on = lookup(config, "model.pose.enabled")
  _, feature_source = lookup(config, "pose_features.checkpoint")
  if present and stgcn_input == "features" and pose_on and not feature_source:
    bad("pose_features.checkpoint", feature_source,
        "config.model.pose.stgcn_input='features' reads features of a frozen ST-GCN: set it to "
        "a pose_pretrain workdir")
  present, source = lookup(config, "data.source")
  _, root = lookup(config, "data.root")
  if present and source == "folder" and not root:
    bad("data.root", root, "the dataset root is needed with config.data.source='folder'")
  present, require_pose = lookup(config, "data.require_pose")
  if present and require_pose is False:
    if model_uses_pose(config):
      bad("data.require_pose", False, "the model reads pose (" + model_uses_pose(config) + "), "
          "so every clip needs its pose file; False is for models that do not read pose "
          "(Sound-of-Pixels, or TriBERT with config.model.pose.enabled=False)")
    if source == "tfds":
      bad("data.require_pose", False, "needs config.data.source='folder': a TFDS build holds "
          "only clips with a pose file, so it cannot serve clips without pose")
  elif present and not isinstance(require_pose, bool):
    bad("data.require_pose", require_pose, "expected True or False")
  _, name = lookup(config, "model.name")
  if name in ("amnet", "amnet_ame"):
    check_amnet(config, bad)
  return problems


def _check_optimizer(config: Any) -> list[str]:
  """Problems of the keys of optim.name="sgd", optim.decay="step" and optim.lr_multipliers."""
  problems: list[str] = []

  def bad(key: str, value: Any, expected: str) -> None:
    problems.append(f"config.{key}={value!r}: {expected}")

  present, momentum = lookup(config, "optim.momentum")
  if present and (not _is_number(momentum) or not 0 <= momentum < 1):
    bad("optim.momentum", momentum, "SGD momentum must be in [0, 1)")
  _, decay = lookup(config, "optim.decay")
  present, factor = lookup(config, "optim.decay_factor")
  if present and (not _is_number(factor) or not factor > 0):
    bad("optim.decay_factor", factor, "the step decay's factor must be > 0")
  present, steps = lookup(config, "optim.decay_steps")
  steps = tuple(steps) if present and isinstance(steps, (tuple, list)) else steps
  if present and (not isinstance(steps, tuple)
                  or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                             for s in steps)):
    bad("optim.decay_steps", steps, "expected a tuple of update counts (integers >= 0)")
  present_f, fractions = lookup(config, "optim.decay_fractions")
  fractions = (tuple(fractions) if present_f and isinstance(fractions, (tuple, list))
               else fractions)
  if present_f and (not isinstance(fractions, tuple)
                    or not all(_is_number(f) and 0 < f <= 1 for f in fractions)):
    bad("optim.decay_fractions", fractions,
        "expected a tuple of fractions of num_train_steps in (0, 1]")
  if decay == "step" and not (steps or fractions):
    bad("optim.decay", decay, "needs config.optim.decay_steps or config.optim.decay_fractions "
        "(the update counts where the learning rate drops)")
  _, multipliers = lookup(config, "optim.lr_multipliers")
  for key in sorted(multipliers or {}):
    value = multipliers[key]
    if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/") \
        or "//" in key:
      bad(f"optim.lr_multipliers[{key!r}]", value,
          "keys are parameter path prefixes such as 'video_network' or 'video_network/resnet'")
    elif not _is_number(value) or not math.isfinite(value) or value < 0:
      bad(f"optim.lr_multipliers[{key!r}]", value, "a learning-rate factor must be finite and "
          ">= 0")
  return problems


def check_amnet(config: Any, bad: Any) -> None:
  """AMnet's shape constraints and the motion stage's parts (bad(key, value, expected))."""
  _, frames = lookup(config, "data.num_frames")
  present, stage_strides = lookup(config, "model.motion.stage_strides")
  _, stem_strides = lookup(config, "model.motion.stem_strides")
  if present and _is_number(frames) and frames > 0:
    stride = stem_strides[0] * math.prod(s[0] for s in stage_strides)
    if frames % stride or frames // stride < 2:
      bad("data.num_frames", frames, f"the Motion Network's temporal stride is {stride} "
          "(config.model.motion.stem_strides / stage_strides): T must be a multiple of it with "
          "T / stride >= 2 (a Pearson correlation needs two time steps)")
  present, blocks = lookup(config, "model.spectrogram.blocks")
  _, size = lookup(config, "data.warped_freq_bins")
  if present and size and size % (2 * math.prod(b[3] for b in blocks)):
    bad("model.spectrogram.blocks", blocks, f"2 x the product of the strides must divide the "
        f"{size}-bin spectrogram")
  present, channels = lookup(config, "model.refinement.channels")
  _, heads = lookup(config, "model.refinement.num_heads")
  if present and _is_number(heads) and heads > 0 and channels[-1] % heads:
    bad("model.refinement.channels", channels, f"the last width must be a multiple of "
        f"config.model.refinement.num_heads={heads}")
  if present and size and size % 2 ** len(channels):
    bad("model.refinement.channels", channels, f"2 ** len(channels) must divide {size}")
  _, stage = lookup(config, "model.stage")
  _, name = lookup(config, "model.name")
  if name == "amnet" and stage == "motion":
    for part in ("appearance", "motion"):
      present, checkpoint = lookup(config, f"init.parts.{part}.checkpoint")
      if not (present and checkpoint):
        bad(f"init.parts.{part}.checkpoint", checkpoint if present else None,
            "config.model.stage='motion' loads the appearance stage and the AME Motion Network: "
            "set it to that phase's workdir")


def model_uses_pose(config: Any) -> str:
  """Why config's model reads pose (e.g. "config.model.pose.enabled=True"), or "" when it does
  not (Sound-of-Pixels, TriBERT with pose erased)."""
  _, phase = lookup(config, "phase")
  if phase == "pose_pretrain":
    return "config.phase='pose_pretrain' trains the pose classifier"
  _, name = lookup(config, "model.name")
  present, enabled = lookup(config, "model.pose.enabled")
  if name == "tribert" and present and enabled:
    return "config.model.name='tribert' with config.model.pose.enabled=True"
  return ""


def check_devices(config: Any, device_count: int, process_count: int = 1) -> list[str]:
  """Problems of the batch sizes against the devices (every mesh axis splits the batch); []."""
  problems = []
  _, accum = lookup(config, "grad_accum_steps")
  accum = int(accum or 1)
  for key, multiple, what in (
      ("data.batch_size", device_count * accum,
       f"{device_count} devices x config.grad_accum_steps={accum}"),
      ("data.eval_batch_size", device_count, f"{device_count} devices"),
      ("export.batch_size", device_count, f"{device_count} devices")):
    present, value = lookup(config, key)
    if present and isinstance(value, int) and value > 0 and value % multiple:
      problems.append(f"config.{key}={value}: must be a positive multiple of {what} "
                      f"(= {multiple}) over {process_count} process(es)")
  present, mesh_data = lookup(config, "mesh.data")
  _, mesh_fsdp = lookup(config, "mesh.fsdp")
  if present and isinstance(mesh_fsdp, int) and mesh_fsdp > 0:
    if device_count % mesh_fsdp:
      problems.append(f"config.mesh.fsdp={mesh_fsdp}: must divide the {device_count} devices")
    elif mesh_data not in (-1, device_count // mesh_fsdp):
      problems.append(f"config.mesh.data={mesh_data}: must be -1 or {device_count // mesh_fsdp}"
                      f" ({device_count} devices / config.mesh.fsdp={mesh_fsdp})")
  return problems


def raise_if(problems: Iterable[str]) -> None:
  """ConfigError with every problem, if any."""
  problems = list(problems)
  if problems:
    raise ConfigError(problems)


# ----------------------------------------------------------------------------------------------
# Data: which splits a mode reads, and the preflight over their files.
# ----------------------------------------------------------------------------------------------


def will_evaluate(config: Any) -> bool:
  """Whether a training run of config scores its evaluation split at some point."""
  steps = int(lookup(config, "num_train_steps")[1] or 0)
  every = lookup(config, "eval_every_steps")[1] or 0
  at_end = bool(lookup(config, "eval.at_end")[1])
  quick = lookup(config, "eval.quick_every_steps")[1] or 0
  return at_end or (every > 0 and every <= steps) or (quick > 0 and quick <= steps)


def splits_needed(config: Any, mode: str) -> dict[str, str]:
  """{split: "clips" | "mixtures"}: what a mode reads ("mixtures": the split's index and its
  fixed mixture list index/<split>_mixtures_n<num_mix>.csv; "clips": the index only)."""
  data = config.data
  needed: dict[str, str] = {}
  if mode == "train":
    needed[data.train_split] = "clips"
    if will_evaluate(config) and config.phase != "pose_pretrain":
      needed[data.eval_split] = "mixtures"
      quick_on, quick_every = lookup(config, "eval.quick_every_steps")
      if quick_on and quick_every:
        needed[lookup(config, "eval.quick_split")[1] or "val"] = "mixtures"
    elif will_evaluate(config):
      needed.setdefault(data.eval_split, "clips")
  elif mode == "evaluate":
    needed[data.eval_split] = "clips" if config.phase == "pose_pretrain" else "mixtures"
  elif mode in ("retrieval", "probe"):
    for split in lookup(config, "export.splits")[1] or ():
      needed[split] = "clips"
  return needed


# A clip-validation cache shared by every run that does not name one (many runs on one dataset,
# a test session): entries are keyed by file path, size and mtime, so sharing is safe.
SHARED_VALIDATION_CACHE_ENV = "TRIBERT_VALIDATION_CACHE"


def default_validation_cache(workdir: str | None) -> str:
  """Where clip validations are cached when config.data.validation_cache is "":
  $TRIBERT_VALIDATION_CACHE if set, else WORKDIR/clip_validation.json ("" without either)."""
  shared = os.environ.get(SHARED_VALIDATION_CACHE_ENV, "")
  if shared:
    return shared
  return os.path.join(workdir, "clip_validation.json") if workdir else ""


def preflight_data(config: Any, mode: str, cache_path: str | None) -> str | None:
  """Checks every index file, mixture list and clip `mode` will read (data_pipeline's preflight;
  raises naming the file and the config key). Returns its report, or None when the dataset is
  not on disk yet (SynthMUSIC generated on first use) or not a folder layout."""
  data = config.data
  if data.source != "folder" or not os.path.isfile(os.path.join(data.root, "labels.json")):
    return None
  needed = splits_needed(config, mode)
  if not needed:
    return None
  index = os.path.join(data.root, "index")
  for split, what in needed.items():
    key = ("export.splits" if mode in ("retrieval", "probe") else
           "data.train_split" if split == data.train_split else
           "data.eval_split" if split == data.eval_split else "eval.quick_split")
    files = [f"{split}.csv"] + ([f"{split}_mixtures_n{data.num_mix}.csv"]
                                if what == "mixtures" else [])
    for name in files:
      if not os.path.isfile(os.path.join(index, name)):
        raise ConfigError([f"config.{key}={split!r} (config.data.num_mix={data.num_mix}): "
                           f"{os.path.join(index, name)} does not exist"])
  from data_pipeline.loading import preflight  # pylint: disable=g-import-not-at-top
  # The training split and mixture lists at num_mix; other splits read whole (num_mix None).
  mixed = [s for s, what in needed.items() if what == "mixtures" or s == data.train_split
           and mode == "train"]
  whole = [s for s in needed if s not in mixed]
  lines = []
  for splits, num_mix in ((mixed, int(data.num_mix)), (whole, None)):
    if splits:
      lines.append(format_report(preflight.check(data, splits, num_mix, cache_path or "")))
  return "; ".join(lines)


def format_report(report: Any) -> str:
  """A preflight report (dict) as one line: clips, bad clips and mixtures per split."""
  if not isinstance(report, dict) or "splits" not in report:
    return str(report)
  parts = []
  for split, counts in report["splits"].items():
    parts.append(f"{split}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
  cache = report.get("cache") or {}
  if cache.get("path"):
    parts.append(f"cache {cache['path']} ({cache.get('hits', 0)} hits)")
  return "; ".join(parts) or str(report)


def checkpoint_steps_on_disk(workdir: str | None) -> list[int]:
  """Steps with a folder under WORKDIR/checkpoints (a file listing: nothing is created)."""
  directory = os.path.join(workdir or "", "checkpoints")
  if not workdir or not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory)
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))
