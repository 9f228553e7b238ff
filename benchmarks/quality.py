"""Separation quality on the SynthMUSIC test mixtures: mixture floor, ideal-binary-mask ceiling,
Sound-of-Pixels, TriBERT and TriBERT with the pose or the visual modality erased.

  python -m benchmarks.quality                     # cpu size: up to about an hour on 2 cores
  python -m benchmarks.quality --size tiny         # smoke run (one step per model)
  python -m benchmarks.quality --models sound_of_pixels tribert --workdir runs/quality

Every model trains with its config at --size (configs/pretrain.py or configs/sound_of_pixels.py:
the same data, batch, optimiser, schedule and number of steps: equal budgets in updates, not in
FLOPs) into WORKDIR/<model>, validating on the val mixtures as in training; then its final
checkpoint is scored on every test mixture (index/test_mixtures_n2.csv) by the trainer's
evaluation. A model whose WORKDIR/<model>/eval/test_step_<steps>.json exists is not retrained
or rescored, and an interrupted training resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks import common

MODELS = ("sound_of_pixels", "tribert", "tribert_no_pose", "tribert_no_visual")


def model_config(model: str, args: argparse.Namespace):
  """The training config of one model for this comparison."""
  config = common.get_config(model, args.size)
  if args.root:
    config.data.root = args.root
  if args.steps:
    config.num_train_steps = args.steps
  return config


def train_and_score(model: str, args: argparse.Namespace) -> dict:
  """Trains (or resumes) MODEL and returns the summary of its final checkpoint on the test set."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top

  config = model_config(model, args)
  workdir = os.path.join(args.workdir, model)
  steps = int(config.num_train_steps)
  report = os.path.join(workdir, "eval", f"test_step_{steps}.json")
  if os.path.isfile(report):
    print(f"[{model}] reusing {report}", flush=True)
    with open(report) as file:
      return json.load(file)
  logging.set_verbosity(logging.INFO)  # the trainer's progress lines (loss, steps/s, ETA)
  start = time.perf_counter()
  print(f"[{model}] training {steps} steps in {workdir} ...", flush=True)
  train.train_and_evaluate(config, workdir)
  print(f"[{model}] trained in {time.perf_counter() - start:.0f} s; scoring the test "
        "mixtures ...", flush=True)
  config.data.eval_split = "test"
  config.eval.max_batches = args.max_batches
  train.evaluate_checkpoint(config, workdir, step=steps)
  with open(report) as file:
    return json.load(file)


def table(summaries: dict[str, dict]) -> str:
  """One Markdown table: floor, ceiling, then every model (mean / median)."""
  first = next(iter(summaries.values()))
  two = lambda mean, median: f"{mean:.2f} / {median:.2f}"  # noqa: E731
  rows = [["unprocessed mixture (floor)", two(first["mixture_sdr"], first["mixture_sdr_median"]),
           "", "", first["num_scored"]],
          ["ideal binary mask (ceiling)",
           two(first["ideal_mask_sdr"], first["ideal_mask_sdr_median"]),
           two(first["ideal_mask_sir"], first["ideal_mask_sir_median"]),
           two(first["ideal_mask_sar"], first["ideal_mask_sar_median"]),
           first["num_scored"] - first["ideal_mask_skipped"]]]
  for model, s in summaries.items():
    rows.append([model, two(s["sdr"], s["sdr_median"]), two(s["sir"], s["sir_median"]),
                 two(s["sar"], s["sar_median"]), s["num_scored"]])
  return common.markdown(["", "SDR mean / median (dB)", "SIR", "SAR", "mixtures scored"], rows)


def main() -> None:
  """Trains and scores each model in turn, then prints the table."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=["tiny", "cpu", "paper"])
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  parser.add_argument("--workdir", default="", help="default /tmp/tribert_quality_<size>")
  parser.add_argument("--root", default="", help="dataset root (default: the config's, "
                      "generated on first use)")
  parser.add_argument("--steps", type=int, default=0, help="override num_train_steps (0: config)")
  parser.add_argument("--max_batches", type=int, default=-1,
                      help="test batches scored (-1: every test mixture)")
  args = parser.parse_args()
  args.workdir = args.workdir or f"/tmp/tribert_quality_{args.size}"
  print(f"machine: {common.machine()}", flush=True)
  summaries = {}
  for model in args.models:
    summaries[model] = train_and_score(model, args)
  config = model_config(args.models[0], args)
  print()
  print(f"Separation on the {config.data.root} test mixtures (N = {config.data.num_mix}), size "
        f"{args.size}: {config.num_train_steps} steps of batch {config.data.batch_size} per model; "
        "floor and ceiling from the first model's run (same mixtures)")
  print()
  print(table(summaries))


if __name__ == "__main__":
  main()
