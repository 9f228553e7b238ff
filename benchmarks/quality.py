"""Separation quality on the SynthMUSIC test mixtures with equal training budgets: mixture floor,
ideal-binary-mask ceiling, Sound-of-Pixels, TriBERT and TriBERT with the pose or the visual
modality erased, AMnet's two stages (MODELS: one entry per model, so later baselines are one line
each).

  python -m benchmarks.quality                        # cpu size, both budgets (~2 h 10 min)
  python -m benchmarks.quality --size long --budget updates   # ~2 h on 2 cores
  python -m benchmarks.quality --size tiny            # smoke run (a few updates per model)
  python -m benchmarks.quality --models sound_of_pixels tribert --budget seconds --seconds 300
  python -m benchmarks.quality --models amnet_appearance amnet --amnet_ame_workdir runs/amnet_ame_cpu

AMnet trains in stages: `amnet_appearance` is its audio-appearance stage (configs/amnet.py
stage=appearance) under the budget; `amnet` is its audio-motion stage (stage=motion) under the
same budget again, initialised from the amnet_appearance run of the same budget (list it first,
or pass --amnet_appearance_workdir) and from the AME pre-training of --amnet_ame_workdir (a
finished configs/amnet_ame.py run, which needs no labels and no separation budget). Its row's
updates are the motion stage's own.

Protocol. Every model trains with its own config at the size's preset (configs/pretrain.py,
configs/sound_of_pixels.py, ...: the same data and batch; each model's own optimiser at that
preset, e.g. Sound-of-Pixels the original's SGD at paper size and Adam at cpu size) under two
budgets, each in its own workdir WORKDIR/<budget>/<model>:
  updates  the same number of optimiser updates for every model (--steps; the size's default);
  seconds  the same training wall-clock for every model (--seconds; config.max_train_seconds:
           compilation, evaluations and checkpoint saves are not counted, tribert_jax/
           train_clock.py). The schedule's horizon (num_train_steps: cosine decay, warm-up
           fractions, step-decay points all follow it) is the number of updates the model is
           expected to make in that time: --horizon MODEL=STEPS, else --horizon_steps, else
           from its finished updates run (updates / training seconds x --seconds x
           HORIZON_MARGIN), else 10 x the updates budget.
During training a quick evaluation every num_train_steps / --points updates (and at the last
one) scores the first --quick_batches batches of the TEST mixture list (the same mixtures every
time; fast_bss_eval, config.eval.quick_split="test"): the SDR-vs-updates and SDR-vs-seconds
curves. Only at the end is every test mixture (index/test_mixtures_n2.csv) scored, with the
trainer's full evaluation (mir_eval, ideal binary mask). A run finished under the same budget
(WORKDIR/<budget>/<model>/train_end.json and its test report) is reused; an interrupted one, or
one finished under another budget, resumes from its checkpoint.

Sound-of-Pixels starts, as the original does from ImageNet, from a pre-trained ResNet-18 trunk:
the frame pre-training (configs/sound_of_pixels_frames.py at the size's preset; cpu: 3000
updates, ~3.5 min) runs once in WORKDIR/sound_of_pixels_frames before every budget and outside
them (--sop_frames_workdir: a finished one; --sop_frames scratch: none).

Output: one Markdown table per budget; OUTPUT_DIR/quality_<size>.json (per budget and model: the
config's budget, the run's end (updates, training seconds, reason), the final test summary and
every quick-evaluation point with mean/median SDR/SIR/SAR, updates and training seconds);
OUTPUT_DIR/quality_<size>_<budget>.png per budget run: quick-evaluation SDR vs updates and vs
training seconds, the budget's own axis in the top row. Timings depend on the machine's load: on
a shared machine the seconds budget buys fewer updates; the JSON records the machine line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

from benchmarks import common

# The size's config preset and budgets: updates, seconds per model; quick-evaluation points per
# run and batches per point. `long` is the cpu preset trained longer: ~2 h for the four models on
# 2 cores per budget (TriBERT ~1.3 s/update at cpu size, Sound-of-Pixels faster, plus ~2.5 min
# of final scoring per model).
SIZES = {
    "tiny": dict(config_size="tiny", steps=2, seconds=2.0, points=2, quick_batches=1),
    "cpu": dict(config_size="cpu", steps=720, seconds=600.0, points=12, quick_batches=4),
    "long": dict(config_size="cpu", steps=1200, seconds=1200.0, points=20, quick_batches=4),
    # The config's own num_train_steps (420k updates); a day of training for the seconds budget.
    "paper": dict(config_size="paper", steps=0, seconds=86_400.0, points=50, quick_batches=4),
}
BUDGETS = ("updates", "seconds")
# The seconds budget's schedule horizon is this many times the updates the model is expected to
# make in it: a little slack so that a model that speeds up is stopped by the clock, not by
# num_train_steps (the cosine schedule is then at ~10 % of its peak when the clock stops it).
HORIZON_MARGIN = 1.25
# Curve points in the JSON and the plots (the quick evaluation's own keys).
POINT_KEYS = ("sdr", "sdr_median", "sir", "sir_median", "sar", "sar_median", "mixture_sdr",
              "mixture_sdr_median", "num_scored")


@dataclasses.dataclass(frozen=True)
class Model:
  """A model of the comparison: (config_size, args, budget) -> its training config (any phase
  config)."""
  build: Callable[[str, argparse.Namespace, str], Any]
  description: str


def _variant(name: str) -> Callable[[str, argparse.Namespace, str], Any]:
  return lambda size, args, budget: common.get_config(name, size)


def _amnet_motion(size: str, args: argparse.Namespace, budget: str):
  """AMnet's audio-motion stage on top of the amnet_appearance run of the same budget (or
  --amnet_appearance_workdir) and the AME pre-training of --amnet_ame_workdir."""
  from configs import amnet  # pylint: disable=g-import-not-at-top
  if not getattr(args, "amnet_ame_workdir", ""):
    raise ValueError("model amnet needs --amnet_ame_workdir (a finished configs/amnet_ame.py "
                     "run: the Motion Network's AME pre-training)")
  config = amnet.get_config(f"{size},stage=motion")
  config.init.parts.motion.checkpoint = args.amnet_ame_workdir
  config.init.parts.appearance.checkpoint = (getattr(args, "amnet_appearance_workdir", "")
                                             or workdir_of(args, budget, "amnet_appearance"))
  return config


def _staged_tribert(size: str, args: argparse.Namespace, budget: str):
  """TriBERT trained the release's way (configs/pretrain.py recipe=staged) from the pre-training
  workdirs given by --pose_pretrain_workdir and --separation_pretrain_workdir."""
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  missing = [flag for flag in ("pose_pretrain_workdir", "separation_pretrain_workdir")
             if not getattr(args, flag, "")]
  if missing:
    raise ValueError(f"model tribert_staged needs --{' and --'.join(missing)} (finished "
                     "configs/pose_pretrain.py / configs/separation_pretrain.py workdirs)")
  config = pretrain.get_config(f"{size},recipe=staged")
  config.pose_features.checkpoint = args.pose_pretrain_workdir
  config.init.parts.separation.checkpoint = args.separation_pretrain_workdir
  return config


def sop_frames_workdir(args: argparse.Namespace) -> str:
  """The frame pre-training run Sound-of-Pixels starts from: --sop_frames_workdir, else the one
  this benchmark trains in WORKDIR/sound_of_pixels_frames."""
  return (getattr(args, "sop_frames_workdir", "")
          or os.path.join(args.workdir, "sound_of_pixels_frames"))


def _sound_of_pixels(size: str, args: argparse.Namespace, budget: str):
  """Sound-of-Pixels at the size's preset; its ResNet-18 trunk from the frame pre-training
  (configs/sound_of_pixels_frames.py, the stand-in for the original's ImageNet weights) unless
  --sop_frames scratch."""
  from configs import sound_of_pixels  # pylint: disable=g-import-not-at-top
  frames = getattr(args, "sop_frames", "pretrained")
  config = sound_of_pixels.get_config(f"{size},frames={frames}")
  if frames == "pretrained":
    config.init.parts.frames.checkpoint = sop_frames_workdir(args)
  return config


def pretrain_sop_frames(args: argparse.Namespace) -> dict[str, Any]:
  """Trains Sound-of-Pixels' frame trunk once (configs/sound_of_pixels_frames.py at the size's
  preset) in WORKDIR/sound_of_pixels_frames, outside every budget (as the original's ImageNet
  pre-training is); a finished run is reused, a --sop_frames_workdir is taken as given. Its
  record for the JSON."""
  from configs import sound_of_pixels_frames  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  from tribert_jax import train_clock  # pylint: disable=g-import-not-at-top
  workdir = sop_frames_workdir(args)
  config = sound_of_pixels_frames.get_config(SIZES[args.size]["config_size"])
  if args.root:
    config.data.root = args.root
  end = train_clock.read_end(workdir)
  if getattr(args, "sop_frames_workdir", ""):
    print(f"[sound_of_pixels_frames] using the frame pre-training in {workdir}", flush=True)
  elif end is not None and end["step"] >= config.num_train_steps:
    print(f"[sound_of_pixels_frames] finished run in {workdir} taken as it is", flush=True)
  else:
    print(f"[sound_of_pixels_frames] pre-training the frame trunk ({config.num_train_steps} "
          f"updates, outside the budgets) in {workdir} ...", flush=True)
    end = train.train_and_evaluate(config, workdir)["end"]
  return {"workdir": workdir, "end": end}


MODELS: dict[str, Model] = {
    "sound_of_pixels": Model(_sound_of_pixels, "Sound-of-Pixels (Zhao et al. 2018; trunk from "
                             "the frame pre-training unless --sop_frames scratch)"),
    "tribert": Model(_variant("tribert"), "TriBERT from scratch"),
    "tribert_no_pose": Model(_variant("tribert_no_pose"), "TriBERT, pose erased"),
    "tribert_no_visual": Model(_variant("tribert_no_visual"), "TriBERT, visual erased"),
    "tribert_staged": Model(_staged_tribert, "TriBERT, the release's staged recipe "
                            "(needs --pose_pretrain_workdir, --separation_pretrain_workdir)"),
    "amnet_appearance": Model(lambda size, args, budget: common.get_config("amnet", size),
                              "AMnet (Zhu & Rahtu), audio-appearance stage"),
    "amnet": Model(_amnet_motion, "AMnet, audio-motion stage: the budget again on top of "
                   "amnet_appearance's, with the AME-pretrained Motion Network (needs "
                   "--amnet_ame_workdir)"),
}
DEFAULT_MODELS = ("sound_of_pixels", "tribert", "tribert_no_pose", "tribert_no_visual")


def workdir_of(args: argparse.Namespace, budget: str, model: str) -> str:
  return os.path.join(args.workdir, budget, model)


def updates_budget(args: argparse.Namespace, config) -> int:
  """The updates budget: --steps, else the size's, else (paper) the config's num_train_steps."""
  return int(args.steps or SIZES[args.size]["steps"] or config.num_train_steps)


def seconds_horizon(args: argparse.Namespace, model: str, steps: int) -> tuple[int, str]:
  """(num_train_steps of the seconds run, where it comes from): --horizon MODEL=STEPS, else
  --horizon_steps, else the model's speed in its finished updates run, else 10 x the updates
  budget (no speed known yet)."""
  per_model = horizons(getattr(args, "horizon", None) or [])
  if model in per_model:
    return per_model[model], f"--horizon {model}={per_model[model]}"
  if args.horizon_steps:
    return int(args.horizon_steps), "--horizon_steps"
  from tribert_jax import train_clock  # pylint: disable=g-import-not-at-top
  end = train_clock.read_end(workdir_of(args, "updates", model))
  if end and end["train_seconds"] > 0 and end["step"] > 0:
    per_second = end["step"] / end["train_seconds"]
    return (max(1, math.ceil(args.seconds * per_second * HORIZON_MARGIN)),
            f"updates run: {per_second:.3f} updates/s x {HORIZON_MARGIN}")
  return 10 * steps, "no updates run to measure speed: 10 x the updates budget"


def horizons(values: list[str]) -> dict[str, int]:
  """--horizon MODEL=STEPS values -> {model: steps}; a clear error for anything else."""
  out = {}
  for value in values:
    model, _, steps = value.partition("=")
    if model not in MODELS or not steps.isdigit() or int(steps) < 1:
      raise ValueError(f"--horizon {value!r}: expected MODEL=STEPS with MODEL one of "
                       f"{list(MODELS)} and STEPS a positive integer")
    out[model] = int(steps)
  return out


def model_config(model: str, budget: str, args: argparse.Namespace):
  """The training config of MODEL under BUDGET (module docstring), and a note on its horizon."""
  size = SIZES[args.size]
  config = MODELS[model].build(size["config_size"], args, budget)
  if args.root:
    config.data.root = args.root
  steps = updates_budget(args, config)
  note = "updates budget"
  if budget == "updates":
    config.num_train_steps, config.max_train_seconds = steps, 0.0
  else:
    horizon, note = seconds_horizon(args, model, steps)
    config.num_train_steps, config.max_train_seconds = horizon, float(args.seconds)
  # Every test mixture once, at the end; the quick evaluation's fixed test subset in between.
  config.data.eval_split = "test"
  config.eval_every_steps = int(config.num_train_steps)
  config.eval.at_end = True
  config.eval.max_batches = args.max_batches
  config.eval.quick_split = "test"
  config.eval.quick_every_steps = max(1, int(config.num_train_steps) // args.points)
  config.eval.quick_batches = args.quick_batches or size["quick_batches"]
  return config, note


def read_curve(workdir: str) -> list[dict[str, float]]:
  """The quick-evaluation points of a run (a step replayed after a resume: its last point)."""
  path = os.path.join(workdir, "eval", "quick_test.jsonl")
  points: dict[int, dict[str, float]] = {}
  if os.path.isfile(path):
    with open(path) as file:
      for line in file:
        record = json.loads(line)
        points[int(record["step"])] = {"step": int(record["step"]),
                                       "train_seconds": float(record["train_seconds"]),
                                       **{k: record[k] for k in POINT_KEYS if k in record}}
  return [points[step] for step in sorted(points)]


def train_and_score(model: str, budget: str, args: argparse.Namespace) -> dict[str, Any]:
  """Trains (or resumes, or reuses) MODEL under BUDGET; its record for the JSON."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  from tribert_jax import train_clock  # pylint: disable=g-import-not-at-top

  config, note = model_config(model, budget, args)
  workdir = workdir_of(args, budget, model)
  end = train_clock.read_end(workdir)
  if end is not None and (end["num_train_steps"] != config.num_train_steps
                          or (end["max_train_seconds"] or 0.0) != config.max_train_seconds):
    print(f"[{budget}/{model}] {workdir} finished another budget ({end['num_train_steps']} "
          f"updates, {end['max_train_seconds']} s): resuming it under this one", flush=True)
    end = None
  if end is None:
    logging.set_verbosity(logging.INFO)  # the trainer's progress lines (loss, steps/s, ETA)
    start = time.perf_counter()
    print(f"[{budget}/{model}] training up to {config.num_train_steps} updates"
          + (f" or {config.max_train_seconds:.0f} s" if config.max_train_seconds else "")
          + f" in {workdir} ({note}) ...", flush=True)
    end = train.train_and_evaluate(config, workdir)["end"]
    print(f"[{budget}/{model}] {end['step']} updates, {end['train_seconds']:.0f} s of training "
          f"({time.perf_counter() - start:.0f} s in all, stopped by {end['reason']})", flush=True)
  report = os.path.join(workdir, "eval", f"test_step_{end['step']}.json")
  if not os.path.isfile(report):  # trained, but the final scoring did not finish
    print(f"[{budget}/{model}] scoring the test mixtures at update {end['step']} ...", flush=True)
    train.evaluate_checkpoint(config, workdir, step=int(end["step"]))
  else:
    print(f"[{budget}/{model}] reusing {report}", flush=True)
  with open(report) as file:
    summary = json.load(file)
  return {"description": MODELS[model].description, "workdir": workdir,
          "num_train_steps": int(config.num_train_steps),
          "max_train_seconds": float(config.max_train_seconds), "horizon": note, "end": end,
          "final": {k: summary[k] for k in summary if isinstance(summary[k], (int, float))},
          "curve": read_curve(workdir)}


def table(records: dict[str, dict]) -> str:
  """One Markdown table: floor, ceiling (the first model's test run), then every model."""
  first = next(iter(records.values()))["final"]
  two = lambda s, key: f"{s[key]:.2f} / {s[key + '_median']:.2f}"  # noqa: E731
  rows = [["unprocessed mixture (floor)", two(first, "mixture_sdr"), "", "", "", "",
           first["num_scored"]],
          ["ideal binary mask (ceiling)", two(first, "ideal_mask_sdr"),
           two(first, "ideal_mask_sir"), two(first, "ideal_mask_sar"), "", "",
           first["num_scored"] - first["ideal_mask_skipped"]]]
  for model, record in records.items():
    s, end = record["final"], record["end"]
    rows.append([model, two(s, "sdr"), two(s, "sir"), two(s, "sar"), end["step"],
                 f"{end['train_seconds']:.0f}", s["num_scored"]])
  notes = [f"- {model}: {record['description']}; schedule horizon {record['num_train_steps']} "
           f"updates ({record['horizon']})" for model, record in records.items()]
  return "\n".join([common.markdown(["", "SDR mean / median (dB)", "SIR", "SAR", "updates",
                                     "training s", "mixtures scored"], rows), ""] + notes)


def plot(records: dict[str, dict], budget: str, title: str, path: str) -> None:
  """Quick-evaluation SDR (mean and median) of every model against updates (top row) and
  against training seconds (bottom row), whatever the budget: an equal-updates run read along
  the seconds axis shows what each model had reached at any wall-clock up to the shortest run,
  and an equal-seconds run read along the updates axis how many updates that bought. The
  unprocessed mixture's SDR on the same mixtures dashed. The budget's own axis comes first."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  axes_keys = [("step", "updates"),
               ("train_seconds", "training seconds (compilation, evaluation excluded)")]
  if budget != "updates":
    axes_keys.reverse()
  fig, axes = plt.subplots(2, 2, figsize=(12, 8), squeeze=False, constrained_layout=True)
  for row, (x_key, x_label) in enumerate(axes_keys):
    for axis, key, name in ((axes[row][0], "sdr", "mean"), (axes[row][1], "sdr_median",
                                                            "median")):
      floor = None
      for model, record in records.items():
        curve = [p for p in record["curve"] if key in p and x_key in p]
        if curve:
          axis.plot([p[x_key] for p in curve], [p[key] for p in curve], marker="o",
                    markersize=3, label=model)
          floor = floor if floor is not None else curve[0].get(f"mixture_{key}")
      if floor is not None:
        axis.axhline(floor, color="grey", linestyle="--", label="unprocessed mixture")
      axis.set_xlabel(x_label)
      axis.set_ylabel(f"{name} SDR (dB), quick-evaluation test subset")
      axis.grid(alpha=0.3)
      axis.legend(fontsize=8)
  fig.suptitle(title, fontsize=10)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  """Trains and scores each model under each budget, then writes the tables, JSON and plots."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=list(SIZES))
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODELS))
  parser.add_argument("--budget", default="both", choices=[*BUDGETS, "both"])
  parser.add_argument("--steps", type=int, default=0, help="updates budget (0: the size's)")
  parser.add_argument("--seconds", type=float, default=0.0,
                      help="training seconds budget per model (0: the size's)")
  parser.add_argument("--horizon_steps", type=int, default=0, help="num_train_steps (schedule "
                      "horizon) of the seconds runs (0: from each model's updates run)")
  parser.add_argument("--horizon", nargs="+", default=[], metavar="MODEL=STEPS",
                      help="per-model schedule horizon of the seconds runs (over --horizon_steps)")
  parser.add_argument("--points", type=int, default=0,
                      help="quick evaluations per run (0: the size's)")
  parser.add_argument("--quick_batches", type=int, default=0,
                      help="test batches per quick evaluation (0: the size's)")
  parser.add_argument("--workdir", default="", help="default /tmp/tribert_quality_<size>")
  parser.add_argument("--output_dir", default=os.path.join(common.REPO, "benchmarks", "results"),
                      help="where quality_<size>.json and the PNGs go")
  parser.add_argument("--root", default="", help="dataset root (default: the config's, "
                      "generated on first use)")
  parser.add_argument("--max_batches", type=int, default=-1,
                      help="test batches scored at the end (-1: every test mixture)")
  parser.add_argument("--pose_pretrain_workdir", default="", help="tribert_staged only")
  parser.add_argument("--separation_pretrain_workdir", default="", help="tribert_staged only")
  parser.add_argument("--sop_frames", default="pretrained", choices=["pretrained", "scratch"],
                      help="Sound-of-Pixels' ResNet-18 trunk: from the frame pre-training "
                      "(trained once in WORKDIR/sound_of_pixels_frames, outside the budgets) or "
                      "from scratch")
  parser.add_argument("--sop_frames_workdir", default="", help="a finished "
                      "configs/sound_of_pixels_frames.py run to use instead")
  parser.add_argument("--amnet_ame_workdir", default="", help="amnet only: the AME pre-training")
  parser.add_argument("--amnet_appearance_workdir", default="", help="amnet only (default: the "
                      "amnet_appearance run of the same budget in --workdir)")
  args = parser.parse_args()
  size = SIZES[args.size]
  args.workdir = args.workdir or f"/tmp/tribert_quality_{args.size}"
  args.seconds = args.seconds or size["seconds"]
  args.points = args.points or size["points"]
  budgets = list(BUDGETS) if args.budget == "both" else [args.budget]
  machine = common.machine()
  print(f"machine: {machine}", flush=True)
  frames = (pretrain_sop_frames(args) if "sound_of_pixels" in args.models
            and args.sop_frames == "pretrained" else None)
  # Updates first: the seconds runs take their schedule horizon from the models' speed there.
  results = {budget: {model: train_and_score(model, budget, args) for model in args.models}
             for budget in budgets}
  config, _ = model_config(args.models[0], budgets[0], args)
  steps = updates_budget(args, config)
  protocol = {"size": args.size, "config_size": size["config_size"], "data_root":
              config.data.root, "num_mix": int(config.data.num_mix),
              "batch_size": int(config.data.batch_size), "updates": steps,
              "seconds": args.seconds, "quick_points": args.points,
              "quick_batches": int(config.eval.quick_batches),
              "eval_batch_size": int(config.data.eval_batch_size),
              "horizon_margin": HORIZON_MARGIN, "max_batches": args.max_batches,
              "sound_of_pixels_frames": frames}
  os.makedirs(args.output_dir, exist_ok=True)
  json_path = os.path.join(args.output_dir, f"quality_{args.size}.json")
  with open(json_path, "w") as file:
    json.dump({"machine": machine, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "protocol": protocol, "budgets": results}, file, indent=1)
  for budget, records in results.items():
    what = (f"{steps} updates" if budget == "updates" else
            f"{args.seconds:.0f} s of training")
    title = (f"{os.path.basename(os.path.normpath(config.data.root))} test mixtures (N = {config.data.num_mix}), size {args.size}: "
             f"{what} of batch {config.data.batch_size} per model")
    print()
    print(f"Equal {budget}: separation on the {title}; floor and ceiling from the first model's "
          "run (same mixtures)")
    print()
    print(table(records))
    png = os.path.join(args.output_dir, f"quality_{args.size}_{budget}.png")
    plot(records, budget, f"Equal {budget}: {title}", png)
    print(f"\ncurves: {png}")
  print(f"figures: {json_path}")


if __name__ == "__main__":
  main()
