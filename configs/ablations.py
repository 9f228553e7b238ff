"""Ablations as pretrain variants: supp. Table 1 (erase visual / erase pose / 15% token masking
on-off), supp. Table 2 (fusion by concatenation vs multiplication), paper Table 1 (single-source
vs multi-source training).

  # all variants at cpu size, trained and scored one after another, one table at the end:
  python main.py --config=configs/ablations.py:cpu --mode=ablations --workdir=runs/ablations_cpu \
      [--config.ablations.variants=default,erase_pose]
  # one variant as an ordinary pretrain run:
  python main.py --config=configs/ablations.py:cpu,erase_pose --workdir=runs/ablations_cpu/erase_pose

Argument: SIZE (paper, cpu, tiny; the runner's config, phase "ablations") or SIZE,VARIANT (a
pretrain config with that variant's switches, phase "pretrain"). Overrides of the runner config
(--config.data.root, --config.num_train_steps, ...) apply to every variant. Every variant
differs from "default" (configs/pretrain.py) by the keys listed in VARIANTS. The paper's
Table 1/2 of the supplement fine-tune on MUSIC with solos + duets; here every variant is a
pretrain run on the configured dataset (solos, like paper Table 1's single-source row, unless
the variant says so).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import common
from configs import pretrain
from tribert_jax import ablations

# name -> (what it tests, {dotted config key: value}); "default" is the paper's model.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("paper defaults: 15% masking, concat fusion, solos", {}),
    "erase_visual": ("visual modality erased (supp. Table 1)", {"model.visual.enabled": False}),
    "erase_pose": ("pose modality erased (supp. Table 1)", {"model.pose.enabled": False}),
    "no_masking": ("no random token masking (supp. Table 1)",
                   {"model.transformer.mask_probability": 0.0}),
    "fusion_multiply": ("fusion by multiplication (supp. Table 2)",
                        {"model.heads.fusion": "multiply"}),
    "multi_source": ("solos + duets training (paper Table 1)", {"data.multi_source": True}),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg = SIZE (runner config) or SIZE,VARIANT (that variant's pretrain config)."""
  size_arg, _, variant = (arg or "").partition(",")
  size = common.parse_size(size_arg)
  config = pretrain.get_config(size)
  config.phase = "ablations"
  a = config.ablations = ml_collections.ConfigDict()
  a.variants = ",".join(VARIANTS)  # comma-separated, trained in this order
  a.eval_split = "test"  # the table's split (training validates on data.eval_split)
  # What each variant tests, and its switches as (dotted key, value) pairs.
  a.descriptions = ml_collections.ConfigDict({k: v[0] for k, v in VARIANTS.items()})
  a.overrides = ml_collections.ConfigDict(
      {k: tuple(v[1].items()) for k, v in VARIANTS.items()})
  if not variant:
    return config
  if variant not in VARIANTS:
    raise ValueError(f"configs/ablations.py: unknown variant {variant!r}; choose from "
                     f"{sorted(VARIANTS)}")
  return ablations.variant_config(config, variant)
