"""Trains and scores the ablation variants of configs/ablations.py; prints one table.

  python main.py --config=configs/ablations.py:cpu --mode=ablations --workdir=runs/ablations_cpu \
      [--config.ablations.variants=default,erase_visual] [--config.data.root=PATH] \
      [--config.num_train_steps=N]

The runner config (phase "ablations") is a pretrain config plus config.ablations: the variants
to run, what each tests and its switches. Each variant is an ordinary pretrain run in
WORKDIR/<variant> through the trainer's train.train_and_evaluate (so an interrupted run resumes,
and a finished one is only scored again), then its last checkpoint is scored on
config.ablations.eval_split (test) with train.evaluate_checkpoint. Table: mean SDR / SIR / SAR
over the test mixtures per variant, with the unprocessed-mixture and ideal-binary-mask SDR of the
same mixtures; also WORKDIR/ablations.json and WORKDIR/ablations.md.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Mapping

from absl import logging
import ml_collections


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> None:
  """Sets (dotted key, value) pairs ('model.pose.enabled', False) on config; an unknown key
  raises naming it."""
  for key, value in overrides:
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise KeyError(f"override {key!r}: the config has no such key")
    node[leaf] = value


def variant_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The runner config's config.ablations.variants, checked against the known variants."""
  names = tuple(filter(None, (v.strip() for v in config.ablations.variants.split(","))))
  unknown = [v for v in names if v not in config.ablations.overrides]
  if unknown or not names:
    raise ValueError(f"config.ablations.variants: unknown ablation variants {unknown or names}; "
                     f"choose from {list(config.ablations.overrides)}")
  return names


def variant_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """The pretrain config of one variant: the runner config (its overrides included) without
  config.ablations, with the variant's switches, phase "pretrain" and config.ablation = name."""
  out = copy.deepcopy(config)
  with out.unlocked():
    overrides = out.ablations.overrides[variant]
    del out["ablations"]
    out.phase = "pretrain"
    apply_overrides(out, overrides)
    out.ablation = variant  # recorded in WORKDIR/config.json
  return out


def markdown_table(report: Mapping[str, Any]) -> str:
  """One row per variant: SDR / SIR / SAR (mean over mixtures) and the reference points."""
  f = lambda x: f"{x:.2f}"  # noqa: E731
  lines = [f"Ablations ({report['size']} size, {report['eval_split']} split, mean over "
           "mixtures; dB).", "",
           "| Variant | What changes | SDR | SIR | SAR | mixture SDR | ideal-mask SDR | "
           "steps | mixtures scored |",
           "|---|---|---|---|---|---|---|---|---|"]
  for name, row in report["variants"].items():
    lines.append(f"| {name} | {row['description']} | {f(row['sdr'])} | {f(row['sir'])} | "
                 f"{f(row['sar'])} | {f(row['mixture_sdr'])} | {f(row['ideal_mask_sdr'])} | "
                 f"{row['step']} | {row['num_scored']} of {row['num_mixtures']} |")
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) and scores each variant of the runner config; writes and prints the
  table (main.py --mode=ablations)."""
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  from tribert_jax.evaluation import reports  # pylint: disable=g-import-not-at-top
  if config.phase != "ablations":
    raise ValueError(f"--mode=ablations needs configs/ablations.py:SIZE, got phase "
                     f"{config.phase!r}")
  variants = variant_names(config)
  eval_split = config.ablations.eval_split
  report: dict[str, Any] = {"size": config.size, "eval_split": eval_split, "variants": {}}
  os.makedirs(workdir, exist_ok=True)
  for name in variants:
    variant = variant_config(config, name)
    # The table's numbers come from the test split after training; no extra validation pass.
    variant.eval.at_end = False
    variant_dir = os.path.join(workdir, name)
    start = time.monotonic()
    logging.info("ablation %s: training in %s", name, variant_dir)
    trained = train.train_and_evaluate(variant, variant_dir)
    train_seconds = time.monotonic() - start
    variant.data.eval_split = eval_split
    scores = train.evaluate_checkpoint(variant, variant_dir)
    report["variants"][name] = {
        "description": config.ablations.descriptions[name],
        "overrides": dict(config.ablations.overrides[name]),
        "step": trained["step"], "train_seconds": train_seconds,
        **{k: float(scores[k]) for k in ("sdr", "sir", "sar", "mixture_sdr", "ideal_mask_sdr")},
        "num_scored": int(scores["num_scored"]), "num_mixtures": int(scores["num_mixtures"])}
    logging.info("ablation %s: SDR %.2f SIR %.2f SAR %.2f", name, scores["sdr"], scores["sir"],
                 scores["sar"])
    # Written after every variant so a long run shows its progress.
    with open(os.path.join(workdir, "ablations.json"), "w") as handle:
      json.dump(report, handle, indent=2)
  reports.write_table_report(report, markdown_table(report), workdir, "ablations")
  return report
