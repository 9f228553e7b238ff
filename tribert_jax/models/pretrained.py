"""Loading pretrained weights in another framework's format into this project's variables.

- ImageNet ResNet-50 (TriBERT's visual encoder) or ResNet-18 (Sound-of-Pixels' video network and
  the frame classifier of its frame pre-training) from a torchvision-style state dict saved as
  .npz (no torch needed here): conv1.weight, bn1.{weight,bias,running_mean,running_var},
  layer1.0.conv1.weight, ..., layer1.0.downsample.{0,1}.*; conv kernels OIHW -> HWIO; fc.* and
  num_batches_tracked ignored. Bottleneck blocks (ResNet-50: conv1..3, bn1..3) and basic blocks
  (ResNet-18: conv1, conv2, bn1, bn2) use the same key pattern; the dilated ResNet-18 of
  Sound-of-Pixels has torchvision's kernel shapes (dilation changes no weight). Make the .npz
  once with: `np.savez(path, **{k: v.numpy() for k, v in
  torchvision.models.resnet50(weights="IMAGENET1K_V1").state_dict().items()})` (resnet18 and
  "IMAGENET1K_V1" for the ResNet-18).
(Checkpoints of this project's own runs, e.g. a PoseClassifier's ST-GCN, are mapped by
tribert_jax/initialization.py.)
"""

from __future__ import annotations

import copy
import logging
import pathlib
import re
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from flax.core import meta

# torchvision BatchNorm field -> (collection, flax name)
_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _torch_to_flax_path(key: str) -> tuple[str, tuple[str, ...]] | None:
  """torchvision ResNet key -> (collection, module path inside the ResNet), None if unused."""
  parts = key.split(".")
  if parts[0] == "fc" or parts[-1] == "num_batches_tracked":
    return None
  m = re.fullmatch(r"layer(\d+)", parts[0])
  if m:  # layer{s}.{b}.<conv|bn>{i}.field or layer{s}.{b}.downsample.{0|1}.field
    block = f"layer{m.group(1)}_{parts[1]}"
    if parts[2] == "downsample":
      module = "downsample_conv" if parts[3] == "0" else "downsample_bn"
      field = parts[4]
    else:
      module, field = parts[2], parts[3]
    path: tuple[str, ...] = (block, module)
  else:  # conv1.weight, bn1.*
    module, field = parts[0], parts[1]
    path = (module,)
  if module.startswith("conv") or module == "downsample_conv":
    if field != "weight":
      raise ValueError(f"unexpected ResNet key {key!r}")
    return "params", path + ("kernel",)
  collection, name = _BN_FIELDS[field]
  return collection, path + (name,)


def _get(tree: Any, path: Sequence[str], where: str) -> Any:
  for p in path:
    if not isinstance(tree, dict) or p not in tree:
      raise KeyError(f"{where}: no variable {'/'.join(path)} (missing {p!r})")
    tree = tree[p]
  return tree


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
  for p in path[:-1]:
    tree = tree[p]
  old = tree[path[-1]]
  # Keep logical-partitioning boxes (nn.Partitioned) around the new value.
  tree[path[-1]] = old.replace_boxed(value) if isinstance(old, meta.AxisMetadata) else value


def load_resnet_npz(variables: dict, path: str | pathlib.Path,
                    resnet_path: Sequence[str] = ("visual_encoder", "resnet")) -> dict:
  """Returns a copy of `variables` with the ResNet at `resnet_path` loaded from a torchvision .npz.

  Every ResNet variable must be covered by the file with the same shape (else ValueError naming
  the file and key); unused keys (fc.*) are logged.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"pretrained ResNet file not found: {path}")
  state = np.load(path)
  out = {c: copy.deepcopy(dict(v)) if isinstance(v, dict) else v for c, v in variables.items()}
  loaded, skipped = set(), []
  for key in state.files:
    target = _torch_to_flax_path(key)
    if target is None:
      skipped.append(key)
      continue
    collection, inner = target
    full = tuple(resnet_path) + inner
    old = _get(out.get(collection, {}), full, f"{path} key {key!r} -> {collection}")
    old_value = old.unbox() if isinstance(old, meta.AxisMetadata) else old
    value = np.asarray(state[key])
    if inner[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if value.shape != tuple(old_value.shape):
      raise ValueError(f"{path} key {key!r}: shape {value.shape} does not match "
                       f"{collection}/{'/'.join(full)} {tuple(old_value.shape)} "
                       "(config.model.visual resnet sizes must match the checkpoint)")
    _set(out[collection], full, jnp.asarray(value, old_value.dtype))
    loaded.add((collection,) + full)
  # Every ResNet variable must have come from the file.
  for collection in ("params", "batch_stats"):
    subtree = _get(out.get(collection, {}), resnet_path, f"variables[{collection!r}]")
    for leaf_path in _leaf_paths(subtree):
      if (collection,) + tuple(resnet_path) + leaf_path not in loaded:
        raise ValueError(f"{path}: no entry for {collection}/{'/'.join(resnet_path + tuple(leaf_path))}")
  logging.info("loaded %d ResNet tensors from %s (ignored %d: %s)", len(loaded), path,
               len(skipped), ", ".join(sorted(skipped)[:4]))
  return out


def _leaf_paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  if isinstance(tree, dict):
    return [p for k, v in tree.items() for p in _leaf_paths(v, prefix + (k,))]
  return [prefix]


# config.model.name -> where its ResNet trunk lives in the variables.
RESNET_PATHS = {"tribert": ("visual_encoder", "resnet"),
                "sound_of_pixels": ("video_network", "resnet"),
                "frame_classifier": ("resnet",),
                "visual_classifier": ("visual_encoder", "resnet"),
                "separation_pretrain": ("visual_encoder", "resnet")}


def pretrained_resnet_path(config: Any) -> str:
  """config.model.visual.pretrained_path when the model has a ResNet trunk that will load it,
  else "" (no visual keys, visual stream erased, no path)."""
  if config.get("name") not in RESNET_PATHS or "visual" not in config:
    return ""
  if not config.visual.get("enabled", True):
    return ""
  path = config.visual.get("pretrained_path", "")
  if path and config.get("visual_source", "frames") != "frames":
    raise ValueError(f"config.model.visual.pretrained_path={path!r}: "
                     f"config.model.visual_source={config.visual_source!r} has no ResNet trunk "
                     "to load it into")
  return path


def load_pretrained(variables: dict, config: Any) -> dict:
  """Applies the pretrained weights named in config.model (visual.pretrained_path) if any."""
  path = pretrained_resnet_path(config)
  if path:
    variables = load_resnet_npz(variables, path, RESNET_PATHS[config.name])
  return variables
