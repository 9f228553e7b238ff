"""Trains and scores the ablation variants of configs/ablations.py; prints one table.

  python -m tribert_jax.ablations --size=cpu --workdir=runs/ablations_cpu \
      [--variants=default,erase_visual] [--data_root=PATH] [--num_train_steps=N]

Each variant is an ordinary pretrain run in WORKDIR/<variant> through the trainer's
train.train_and_evaluate (so an interrupted run resumes, and a finished one is only scored
again), then its last checkpoint is scored on config.ablations.eval_split (test) with
train.evaluate_checkpoint. Table: mean SDR / SIR / SAR over the test mixtures per variant, with
the unprocessed-mixture and ideal-binary-mask SDR of the same mixtures; also
WORKDIR/ablations.json and WORKDIR/ablations.md.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections

from configs import ablations as ablations_config


def variant_config(size: str, variant: str, data_root: str | None = None,
                   num_train_steps: int | None = None) -> ml_collections.ConfigDict:
  """The pretrain config of one variant at `size`, with the runner's overrides."""
  config = ablations_config.get_config(f"{size},{variant}")
  if data_root:
    config.data.root = data_root
  if num_train_steps is not None:
    config.num_train_steps = int(num_train_steps)
  # The table's numbers come from the test split after training; no extra validation pass.
  config.eval.at_end = False
  return config


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


def run(size: str, workdir: str, variants: Sequence[str] | None = None,
        data_root: str | None = None, num_train_steps: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) and scores each variant; writes and prints the table."""
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  base = ablations_config.get_config(size)
  variants = tuple(variants or base.ablations.variants)
  unknown = [v for v in variants if v not in ablations_config.VARIANTS]
  if unknown:
    raise ValueError(f"unknown ablation variants {unknown}; choose from "
                     f"{list(ablations_config.VARIANTS)}")
  report: dict[str, Any] = {"size": size, "eval_split": base.ablations.eval_split,
                            "variants": {}}
  os.makedirs(workdir, exist_ok=True)
  for name in variants:
    config = variant_config(size, name, data_root, num_train_steps)
    variant_dir = os.path.join(workdir, name)
    start = time.monotonic()
    logging.info("ablation %s: training in %s", name, variant_dir)
    trained = train.train_and_evaluate(config, variant_dir)
    train_seconds = time.monotonic() - start
    config.data.eval_split = base.ablations.eval_split
    scores = train.evaluate_checkpoint(config, variant_dir)
    report["variants"][name] = {
        "description": ablations_config.VARIANTS[name][0],
        "overrides": {k: v for k, v in ablations_config.VARIANTS[name][1].items()},
        "step": trained["step"], "train_seconds": train_seconds,
        **{k: float(scores[k]) for k in ("sdr", "sir", "sar", "mixture_sdr", "ideal_mask_sdr")},
        "num_scored": int(scores["num_scored"]), "num_mixtures": int(scores["num_mixtures"])}
    logging.info("ablation %s: SDR %.2f SIR %.2f SAR %.2f", name, scores["sdr"], scores["sir"],
                 scores["sar"])
    # Written after every variant so a long run shows its progress.
    with open(os.path.join(workdir, "ablations.json"), "w") as handle:
      json.dump(report, handle, indent=2)
  table = markdown_table(report)
  with open(os.path.join(workdir, "ablations.md"), "w") as handle:
    handle.write(table)
  print(table)
  return report


def run_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The runner driven by a configs/ablations.py:SIZE config (main.py --mode=ablations):
  its size, ablations.variants, data.root and num_train_steps."""
  if config.phase != "ablations":
    raise ValueError(f"--mode=ablations needs configs/ablations.py:SIZE, got phase "
                     f"{config.phase!r}")
  return run(config.size, workdir, tuple(config.ablations.variants), config.data.root,
             config.num_train_steps)


def main(argv: Sequence[str]) -> None:
  """absl entry point (flags: --size, --workdir, --variants, --data_root, --num_train_steps)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  f = flags.FLAGS
  run(f.size, f.workdir, f.variants or None, f.data_root or None, f.num_train_steps)


def define_flags() -> None:
  """The runner's command-line flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_enum("size", "cpu", ["paper", "cpu", "tiny"], "Config size of every variant.")
  flags.DEFINE_string("workdir", None, "Output directory (one sub-folder per variant).")
  flags.DEFINE_list("variants", [], "Variants to run (default: all, in configs/ablations.py "
                    f"order): {', '.join(ablations_config.VARIANTS)}.")
  flags.DEFINE_string("data_root", "", "Dataset root (default: the config's).")
  flags.DEFINE_integer("num_train_steps", None, "Training steps per variant (default: the "
                       "config's).")
  flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
