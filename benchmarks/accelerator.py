"""The pre-training step on one accelerator: step time, examples/s, FLOPs, MFU, memory, input rate.

  python -m benchmarks.accelerator                     # paper config, batch 12, bf16 and float32
  python -m benchmarks.accelerator --size tiny         # CPU smoke run (tests)
  python -m benchmarks.accelerator --dtypes bfloat16 --batch 24 --out /tmp/a.json
  python -m benchmarks.accelerator --mode forward      # the evaluation forward instead

Runs configs/pretrain.py:SIZE's own training step (tribert_jax.train_step.make_train_step:
spectral features, forward, backward, Adam update; state donated) on synthetic batches of the batch
contract's shapes at the config's batch size (paper: 12), once per compute dtype
(config.model.dtype; parameters stay float32), each in a fresh interpreter so its peak memory is
its own. Per dtype: compile time, step time (median of --steps timed steps after --warmup, each
waited for), examples/s, model FLOPs per step (XLA's cost analysis of the compiled step), MFU
against the device's dense peak for that dtype (benchmarks/common.py PEAK_FLOPS; float32 rows
also against the TF32 tensor-core peak, which XLA:GPU uses for float32 dots and convolutions at
JAX's default precision; `--peak_tflops` overrides, "n/a" when unknown, e.g. on CPUs), and peak
memory (the device allocator's peak where the backend reports one, else the process's peak
RSS). Then the real tf.data training pipeline at the same shapes (examples/s; --data_root, else
SynthMUSIC --data_size generated once under /tmp, as benchmarks/input_pipeline.py does), in its
own CPU-only process. Prints a table and writes everything as JSON (--out, default
benchmarks/results/accelerator_<size>_<device>.json). --budget bounds the whole run (default
300 s): each subprocess gets what is left of it. `--mode forward` times the evaluation forward
(spectral features + model in eval mode) instead of the training step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time

from benchmarks import common

CONFIG = "configs/pretrain.py"


def _config(size: str, dtype: str, batch: int):
  from configs import pretrain  # pylint: disable=g-import-not-at-top
  config = pretrain.get_config(size)
  config.model.dtype = dtype
  if batch:
    config.data.batch_size = batch
  return config


def step_worker(arguments: dict) -> dict:
  """One dtype's training step, measured in this process."""
  config = _config(arguments["size"], arguments["dtype"], arguments["batch"])
  return common.measure_step(config, arguments["mode"], int(config.data.batch_size),
                             arguments["steps"], arguments["warmup"])


def pipeline_worker(arguments: dict) -> dict:
  """The tf.data training pipeline's rate at the config's shapes, measured in this process."""
  from benchmarks import input_pipeline  # pylint: disable=g-import-not-at-top
  from data_pipeline.layout import reader  # pylint: disable=g-import-not-at-top
  from data_pipeline.loading import pipeline as loading_pipeline  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  root = input_pipeline._dataset_root(arguments["data_root"] or None,  # pylint: disable=protected-access
                                      arguments["data_size"])
  prepare_s = time.perf_counter() - start
  config = _config(arguments["size"], "float32", arguments["batch"]).data
  config.root = str(root)
  config.num_classes = len(reader.read_labels(root).classes)
  start = time.perf_counter()
  iterator = iter(loading_pipeline.build_train_pipeline(config, seed=0, process_index=0,
                                                        process_count=1))
  setup_s = time.perf_counter() - start
  for _ in range(arguments["warmup"]):
    next(iterator)
  start = time.perf_counter()
  for _ in range(arguments["batches"]):
    next(iterator)
  elapsed = time.perf_counter() - start
  return dict(root=str(root), source=config.source, batch=int(config.batch_size),
              batches=arguments["batches"], warmup=arguments["warmup"],
              batches_per_s=arguments["batches"] / elapsed,
              examples_per_s=arguments["batches"] * config.batch_size / elapsed,
              setup_s=setup_s, dataset_prepare_s=prepare_s,
              num_parallel_calls=int(config.num_parallel_calls), cpu_cores=os.cpu_count())


def add_mfu(record: dict, dtype: str, peak_tflops: float | None) -> dict:
  """Adds peak_flops / mfu (and, for float32, the TF32-peak MFU) to a step record."""
  kind = record["device_kind"]
  peak = peak_tflops * 1e12 if peak_tflops else common.peak_flops(kind, dtype)
  record["peak_flops"] = peak
  record["mfu"] = record["achieved_flops"] / peak if peak else None
  tf32 = None if peak_tflops or dtype != "float32" else common.peak_flops(kind, "tfloat32")
  record["peak_flops_tf32"] = tf32
  record["mfu_tf32"] = record["achieved_flops"] / tf32 if tf32 else None
  if record.get("peak_device_mib"):
    record["peak_memory_mib"], record["peak_memory_source"] = record["peak_device_mib"], "device"
  else:
    record["peak_memory_mib"], record["peak_memory_source"] = record["peak_rss_mib"], "rss"
  return record


def _percent(value: float | None) -> str:
  return f"{100 * value:.1f}%" if value is not None and math.isfinite(value) else "n/a"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="paper", choices=["paper", "cpu", "tiny"])
  parser.add_argument("--batch", type=int, default=0,
                      help="global batch (0: the config's; paper 12, tiny 2)")
  parser.add_argument("--mode", default="train", choices=["train", "forward"],
                      help="train: the training step; forward: the evaluation forward")
  parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"],
                      choices=["bfloat16", "float32"], help="compute dtypes (model.dtype)")
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps after compiling")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="the device's peak TFLOP/s for MFU (default: the PEAK_FLOPS table)")
  parser.add_argument("--data_root", default="",
                      help="dataset root for the input-pipeline rate (default: SynthMUSIC "
                      "--data_size generated once under /tmp)")
  parser.add_argument("--data_size", default="tiny", help="SynthMUSIC size to generate")
  parser.add_argument("--pipeline_batches", type=int, default=10,
                      help="timed input-pipeline batches (0: skip the pipeline)")
  parser.add_argument("--pipeline_warmup", type=int, default=2)
  parser.add_argument("--budget", type=float, default=300.0,
                      help="seconds for the whole run; each subprocess gets what is left")
  parser.add_argument("--out", default="", help="JSON path (default "
                      "benchmarks/results/accelerator_<size>_<device>.json)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    arguments = json.loads(args.worker)
    worker = pipeline_worker if arguments.pop("what") == "pipeline" else step_worker
    print(json.dumps(worker(arguments)), flush=True)
    return

  deadline = time.monotonic() + args.budget
  left = lambda: max(deadline - time.monotonic(), 1.0)  # noqa: E731
  print(f"machine: {common.machine(query_jax=False)}", flush=True)
  steps = {}
  for dtype in args.dtypes:
    print(f"measuring the {args.size} {args.mode} step in {dtype} ...", flush=True)
    arguments = dict(what="step", size=args.size, mode=args.mode, dtype=dtype, batch=args.batch,
                     steps=args.steps, warmup=args.warmup)
    record = common.run_worker("benchmarks.accelerator", arguments, left())
    if "error" not in record:
      add_mfu(record, dtype, args.peak_tflops)
    steps[dtype] = record
    print(f"  {json.dumps(record)}", flush=True)  # survives a later kill
  pipeline = None
  if args.pipeline_batches > 0:
    batch = args.batch or next((r["batch"] for r in steps.values() if "batch" in r), 0)
    print("measuring the input pipeline ...", flush=True)
    arguments = dict(what="pipeline", size=args.size, batch=batch, data_root=args.data_root,
                     data_size=args.data_size, batches=args.pipeline_batches,
                     warmup=args.pipeline_warmup)
    # CPU only: the pipeline is host work, and TensorFlow must not touch the accelerator.
    pipeline = common.run_worker("benchmarks.accelerator", arguments, left(),
                                 env={"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    print(f"  {json.dumps(pipeline)}", flush=True)

  ok = {d: r for d, r in steps.items() if "error" not in r}
  device = next((r["device"] for r in ok.values()), "unknown")
  device_kind = next((r["device_kind"] for r in ok.values()), "unknown")
  rows = []
  for dtype, r in steps.items():
    if "error" in r:
      rows.append([dtype, r["error"]] + [""] * 10)
      continue
    input_ratio = (pipeline["examples_per_s"] / r["examples_per_s"]
                   if pipeline and "error" not in pipeline else None)
    rows.append([dtype, r["batch"], f"{r['step_s'] * 1e3:.1f}", f"{r['examples_per_s']:.2f}",
                 f"{r['flops_per_step'] / 1e12:.4g}", f"{r['achieved_flops'] / 1e12:.4g}",
                 _percent(r["mfu"]), _percent(r["mfu_tf32"]),
                 f"{r['peak_memory_mib'] / 1024:.2f} ({r['peak_memory_source']})",
                 f"{r['compile_s']:.1f}",
                 f"{input_ratio:.2f}" if input_ratio else "n/a", f"{r['params']:,}"])
  print()
  if args.mode == "train":
    what = "Training step", "spectral features + forward + backward + Adam"
  else:
    what = "Evaluation forward", "spectral features + eval-mode forward"
  print(f"{what[0]} of {CONFIG}:{args.size} on {device} (median of {args.steps} steps after "
        f"{args.warmup} warm-up; {what[1]})")
  print()
  print(common.markdown(["dtype", "batch", "step ms", "examples/s", "TFLOP/step", "TFLOP/s",
                         "MFU", "MFU vs TF32", "peak memory GiB", "compile s",
                         "input / step rate", "params"], rows))
  for dtype, r in ok.items():
    lowered = r["flops_lowered_per_step"]
    ratio = r["flops_per_step"] / lowered if math.isfinite(lowered) and lowered > 0 else 1.0
    if not 0.5 < ratio < 2.0:  # e.g. library calls the compiled program's analysis cannot see
      print(f"note: {dtype}: XLA's cost analysis counts {r['flops_per_step'] / 1e12:.4g} TFLOP in "
            f"the compiled step but {r['flops_lowered_per_step'] / 1e12:.4g} before optimisation")
  if pipeline is not None:
    print()
    if "error" in pipeline:
      print(f"input pipeline: {pipeline['error']}")
    else:
      print(f"input pipeline (tf.data, {pipeline['source']} source, batch {pipeline['batch']}, "
            f"{pipeline['cpu_cores']} cores, {pipeline['root']}): "
            f"{pipeline['examples_per_s']:.1f} examples/s ({pipeline['batches_per_s']:.2f} "
            f"batches/s; setup {pipeline['setup_s']:.1f} s)")

  result = dict(
      benchmark="accelerator", date=datetime.datetime.now(datetime.timezone.utc).isoformat(),
      machine=common.machine(query_jax=False), device=device, config=f"{CONFIG}:{args.size}",
      size=args.size, mode=args.mode, steps=args.steps, warmup=args.warmup, peak_tflops_override=args.peak_tflops,
      results=steps, input_pipeline=pipeline)
  out = args.out or os.path.join(common.REPO, "benchmarks", "results",
                                 f"accelerator_{args.size}_{common.device_slug(device_kind)}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"\nwrote {out}")


if __name__ == "__main__":
  main()
