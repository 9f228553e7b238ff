"""Training and inference speed of the models: examples/s, step time, compile time, memory, FLOPs.

  python -m benchmarks.train_throughput                     # cpu config sizes, both models
  python -m benchmarks.train_throughput --size tiny
  python -m benchmarks.train_throughput --size paper --modes train --dtypes float32  # batch 1

Every (model, mode, dtype) runs in its own interpreter (so peak memory is that configuration's
alone) on synthetic batches of the batch contract's shapes: `train` is the trainer's jitted step
(spectral features, forward, backward, optimiser update; tribert_jax.train_step.make_train_step),
`forward` the evaluation forward (spectral features + model in eval mode). Step time is the
median over --steps steps, each waited for. FLOPs are XLA's cost analysis of the compiled
program; MFU is printed where the device's peak is known (accelerators only).
"""

from __future__ import annotations

import argparse
import json

from benchmarks import common

# Dense peak FLOP/s per device (benchmarks/common.py); MFU = achieved / peak.
PEAK_FLOPS = common.PEAK_FLOPS
peak_flops = common.peak_flops


def worker(arguments: dict) -> dict:
  """Measures one configuration in this process; returns the result record."""
  config = common.get_config(arguments["model"], arguments["size"])
  config.model.dtype = arguments["dtype"]
  batch_size = arguments["batch"] or int(config.data.batch_size)
  record = common.measure_step(config, arguments["mode"], batch_size, arguments["steps"],
                               arguments["warmup"])
  record = dict(arguments, **record)
  peak = peak_flops(record["device_kind"], arguments["dtype"])
  record["mfu"] = record["achieved_flops"] / peak if peak else None
  return record


def main() -> None:
  """Runs every configuration in a subprocess and prints the Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=["tiny", "cpu", "paper"])
  parser.add_argument("--models", nargs="+", default=["tribert", "sound_of_pixels"],
                      choices=sorted(common.VARIANTS))
  parser.add_argument("--modes", nargs="+", default=["forward", "train"],
                      choices=["forward", "train"])
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                      choices=["float32", "bfloat16"])
  parser.add_argument("--batch", type=int, default=0,
                      help="batch size (0: the config's; paper size defaults to 1)")
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
  parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))), flush=True)
    return
  batch = args.batch or (1 if args.size == "paper" else 0)
  # No JAX backend in this process: on a GPU it would reserve most of the memory the measuring
  # subprocesses need.
  print(f"machine: {common.machine(query_jax=False)}", flush=True)
  rows, device = [], "n/a"
  for model in args.models:
    for mode in args.modes:
      for dtype in args.dtypes:
        arguments = dict(model=model, size=args.size, mode=mode, dtype=dtype, batch=batch,
                         steps=args.steps, warmup=args.warmup)
        print(f"measuring {model} {mode} {dtype} ...", flush=True)
        r = common.run_worker("benchmarks.train_throughput", arguments, args.timeout)
        if "error" in r:
          rows.append([model, mode, dtype, batch or "config", r["error"]] + [""] * 8)
          continue
        device = r["device"]
        rows.append([model, mode, dtype, r["batch"], f"{r['step_s'] * 1e3:.1f}",
                     f"{r['examples_per_s']:.2f}", f"{r['compile_s']:.1f}",
                     f"{r['peak_rss_mib']:.0f}",
                     f"{r['peak_device_mib']:.0f}" if r["peak_device_mib"] else "n/a",
                     f"{r['flops_per_example'] / 1e9:.2f}", f"{r['achieved_flops'] / 1e9:.1f}",
                     f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a", f"{r['params']:,}"])
        print("  " + " | ".join(str(x) for x in rows[-1]), flush=True)  # survives a later kill
  print()
  print(f"Training/inference throughput, size {args.size}, on {device} (median of {args.steps} "
        f"steps after {args.warmup} warm-up; train = spectral features + forward + backward + "
        "optimiser)")
  print()
  print(common.markdown(["model", "mode", "dtype", "batch", "step ms", "examples/s",
                         "compile s", "peak RSS MiB", "peak device MiB", "GFLOP/example",
                         "GFLOP/s", "MFU", "params"], rows))


if __name__ == "__main__":
  main()
