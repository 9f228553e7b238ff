"""Like for like with the authors' PyTorch release: our step doing the release's work, our default
step, and the release's own figures, at batch 1 and 2.

  python -m benchmarks.versus_release                        # paper size, batch 1 and 2
  python -m benchmarks.versus_release --size tiny --batch_sizes 2 --modes train --steps 1

Rows (each configuration measured in a fresh interpreter, so peak RSS is its own):
  * "ours, default": configs/pretrain.py:SIZE, the project's paper-variant step (Adam, the
    ST-GCN trained end to end over the 256-frame pose window).
  * "ours, release's work": configs/pretrain.py:SIZE,variant=release with RELEASE_WORK_OVERRIDES
    (BertAdam, 3 frames, frozen ST-GCN over a 3-frame pose window standing in for the release's
    precomputed pose features).
  * "PyTorch release (quoted)": RELEASE_FIGURES, measured outside this project (paper size only).
Modes: `train` = the trainer's jitted step (tribert_jax.train_step.make_train_step: spectral
features, forward, backward, optimiser update), `forward` = spectral features + evaluation-mode
forward. Step time = median of --steps timed steps after --warmup; peak RSS = the subprocess's
lifetime peak (the Python and XLA runtimes and compilation included; the step's modules import
neither TensorFlow nor the tf.data pipeline), "steps" = the peak while stepping, after
compilation (Linux only); GFLOP/example from XLA's cost analysis of the compiled program.
Float32 throughout (the release runs float32 on CPU).
"""

from __future__ import annotations

import argparse
import importlib
import json

from benchmarks import common

DEFAULT_CONFIG = "configs/pretrain.py:{size}"
RELEASE_WORK_CONFIG = "configs/pretrain.py:{size},variant=release"
# What turns our release-variant step into the release's work per step. One list, applied as
# main.py's --config.KEY=VALUE would be (benchmarks.common.apply_overrides).
RELEASE_WORK_OVERRIDES = (
    "optim.name=bert_adam",  # BertAdam (configs/parts/train.py use_bert_adam)
    "data.num_frames=3",  # 3 RGB frames per video
    # The release's precomputed features of a frozen ST-GCN (the staged recipe's way: the
    # batch carries pose_features, the model has no ST-GCN; common.synthetic_batch adds them),
    # and pose keypoints only at the 3 RGB frames (the release reads per-frame pose boxes).
    "model.pose.stgcn_input=features",
    "data.pose_window=3",
)

# The authors' PyTorch release (github ubc-vision/TriBERT, paper-size model, N = 2, 3 frames,
# float32), measured outside this project; keyed by (mode, batch). step_s is a median where one
# was recorded, step_range_s the spread of the runs; peak RSS as the sources give it ("GB"; ours
# are printed in GiB).
RELEASE_SOURCE_B1 = ("PyTorch release on an idle 2-core VM, 2026-11-30 (load average 1.5-1.8); "
                     "274.5 M parameters")
RELEASE_SOURCE_B2 = ("../shared/ENVIRONMENT.md ('~13.9 s at batch 2, peak ~7.6 GB'; the same "
                     "notes give ~8.3 s at batch 1, so its session ran faster than 2026-11-30's)")
RELEASE_PARAMS = 274.5e6
RELEASE_FIGURES = {
    ("train", 1): dict(step_s=13.2, step_range_s=(12.7, 14.6), peak_rss_gb=6.2,
                       gflop_per_example=948.0, source=RELEASE_SOURCE_B1),
    ("forward", 1): dict(step_s=None, step_range_s=(3.3, 3.5), peak_rss_gb=1.6,
                         gflop_per_example=317.0, source=RELEASE_SOURCE_B1),
    ("train", 2): dict(step_s=13.9, step_range_s=None, peak_rss_gb=7.6, gflop_per_example=None,
                       source=RELEASE_SOURCE_B2),
}


def load_config(spec: str, overrides=()):
  """'configs/pretrain.py:paper,variant=release' -> that config, with overrides applied."""
  path, _, arg = spec.partition(":")
  module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
  return common.apply_overrides(module.get_config(arg or None), overrides)


def configurations(size: str) -> list[tuple[str, str, tuple[str, ...]]]:
  """(row name, config spec, overrides) of the two measured rows."""
  return [("ours, default", DEFAULT_CONFIG.format(size=size), ()),
          ("ours, release's work", RELEASE_WORK_CONFIG.format(size=size),
           RELEASE_WORK_OVERRIDES)]


def worker(arguments: dict) -> dict:
  """One configuration, measured in this process."""
  config = load_config(arguments["config"], arguments["overrides"])
  config.model.dtype = "float32"
  return common.measure_step(config, arguments["mode"], arguments["batch"], arguments["steps"],
                             arguments["warmup"])


def _range(values) -> str:
  return f"{values[0]:g}–{values[1]:g}"


def release_row(mode: str, batch: int) -> list[str] | None:
  """The quoted release row for (mode, batch), None where none was measured."""
  figures = RELEASE_FIGURES.get((mode, batch))
  if figures is None:
    return None
  step = (f"{figures['step_s']:g}" if figures["step_s"] else "")
  if figures["step_range_s"]:
    step = f"{step} ({_range(figures['step_range_s'])})" if step else _range(figures["step_range_s"])
  low, high = figures["step_range_s"] or (figures["step_s"],) * 2
  median = figures["step_s"]
  if median:
    examples = f"{batch / median:.3f}"
  else:
    examples = f"{batch / high:.3f}–{batch / low:.3f}"
  gflop = f"{figures['gflop_per_example']:g}" if figures["gflop_per_example"] else ""
  return ["PyTorch release (quoted)", mode, str(batch), step, examples,
          f"{figures['peak_rss_gb']:g}", "", gflop, f"{RELEASE_PARAMS / 1e6:.1f}", ""]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="paper", choices=["paper", "cpu", "tiny"])
  parser.add_argument("--batch_sizes", default="1,2", help="comma-separated batch sizes")
  parser.add_argument("--modes", nargs="+", default=["train", "forward"],
                      choices=["train", "forward"])
  parser.add_argument("--steps", type=int, default=3, help="timed steps")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
  parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per configuration")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))), flush=True)
    return
  batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
  print(f"machine: {common.machine(query_jax=False)}", flush=True)
  for name, spec, overrides in configurations(args.size):
    print(f"{name}: {spec}" + (" " + " ".join(f"--config.{o}" for o in overrides)
                               if overrides else ""), flush=True)
  rows, device = [], None
  for batch in batch_sizes:
    for mode in args.modes:
      for name, spec, overrides in configurations(args.size):
        arguments = dict(config=spec, overrides=list(overrides), mode=mode, batch=batch,
                         steps=args.steps, warmup=args.warmup)
        print(f"measuring {name} {mode} batch {batch} ...", flush=True)
        r = common.run_worker("benchmarks.versus_release", arguments, args.timeout)
        if "error" in r:
          rows.append([name, mode, str(batch), r["error"]] + [""] * 6)
        else:
          device = device or r["device"]
          steps_rss = r.get("peak_rss_steps_mib")
          rows.append([name, mode, str(batch), f"{r['step_s']:.3g}",
                       f"{r['examples_per_s']:.3g}", f"{r['peak_rss_mib'] / 1024:.2f}",
                       f"{steps_rss / 1024:.2f}" if steps_rss else "n/a",
                       f"{r['flops_per_example'] / 1e9:.3g}", f"{r['params'] / 1e6:.1f}",
                       f"{r['compile_s']:.1f}"])
        print("  " + " | ".join(rows[-1]), flush=True)  # survives a later kill
      if args.size == "paper":
        quoted = release_row(mode, batch)
        if quoted:
          rows.append(quoted)
  print()
  print(f"Versus the PyTorch release, size {args.size}, float32 on {device or 'n/a'} (median of "
        f"{args.steps} steps after {args.warmup} warm-up; each row a fresh process)")
  print()
  print(common.markdown(["configuration", "mode", "batch", "s/step", "examples/s",
                         "peak RSS GiB", "peak RSS steps GiB", "GFLOP/example", "params M",
                         "compile s"], rows))
  if args.size == "paper":
    print()
    for source in dict.fromkeys(f["source"] for f in RELEASE_FIGURES.values()):
      print(f"quoted: {source}")


if __name__ == "__main__":
  main()
