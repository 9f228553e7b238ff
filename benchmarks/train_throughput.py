"""Training and inference speed of the models: examples/s, step time, compile time, memory, FLOPs.

  python -m benchmarks.train_throughput                     # cpu config sizes, both models
  python -m benchmarks.train_throughput --size tiny
  python -m benchmarks.train_throughput --size paper --modes train --dtypes float32  # batch 1

Every (model, mode, dtype) runs in its own interpreter (so peak memory is that configuration's
alone) on synthetic batches of the batch contract's shapes: `train` is the trainer's jitted step
(spectral features, forward, backward, optimiser update; tribert_jax.train.make_train_step),
`forward` the evaluation forward (spectral features + model in eval mode). Step time is the
median over --steps steps, each waited for. FLOPs are XLA's cost analysis of the compiled
program; MFU is printed where the device's peak is known (accelerators only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks import common

# Dense peak FLOP/s per device by (device_kind substring, dtype); MFU = achieved / peak.
PEAK_FLOPS = {
    ("H100", "bfloat16"): 989e12, ("H100", "float32"): 67e12,
    ("H200", "bfloat16"): 989e12, ("H200", "float32"): 67e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 19.5e12,
    ("TPU v4", "bfloat16"): 275e12, ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12,
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The device's dense peak for dtype, or None when unknown (e.g. CPUs)."""
  for (kind, peak_dtype), value in PEAK_FLOPS.items():
    if kind.lower() in device_kind.lower() and peak_dtype == dtype:
      return value
  return None


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


def worker(arguments: dict) -> dict:
  """Measures one configuration in this process; returns the result record."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tribert_jax import initialization  # pylint: disable=g-import-not-at-top
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  from tribert_jax import sharding  # pylint: disable=g-import-not-at-top
  from tribert_jax import train  # pylint: disable=g-import-not-at-top
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top

  config = common.get_config(arguments["model"], arguments["size"])
  config.model.dtype = arguments["dtype"]
  batch_size = arguments["batch"] or int(config.data.batch_size)
  config.data.batch_size = batch_size
  class_names = [f"class{i}" for i in range(config.data.num_classes)]
  task = common.make_task(config, class_names)
  mesh = sharding.make_mesh(shape={"data": 1}, devices=jax.devices()[:1])
  tx, schedule = optimizers.make_optimizer(config.optim, 1000)
  init_fn, _, shardings, init_rng = initialization.make_state_initializer(task, tx, config, mesh)
  state = init_fn(init_rng)
  batch = jax.device_put(common.synthetic_batch(config, batch_size),
                         sharding.data_sharding(mesh))

  if arguments["mode"] == "train":
    fn = jax.jit(train.make_train_step(task, tx, schedule, config, mesh), donate_argnums=0)
    args = (state, batch)
  else:
    def forward(variables, batch):
      inputs, _ = separation.model_inputs(batch, config.data)
      outputs, _ = task.model.apply(variables, inputs, train=False)
      return outputs["mask_logits"]
    fn = jax.jit(forward)
    args = (state.variables(), batch)
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  flops = _flops(compiled)

  def run(args):
    out = compiled(*args)
    jax.block_until_ready(out)
    return out

  times = []
  for step in range(arguments["warmup"] + arguments["steps"]):
    start = time.perf_counter()
    out = run(args)
    if arguments["mode"] == "train":
      args = (out[0], batch)  # the donated state is replaced by the new one
    if step >= arguments["warmup"]:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  device = jax.devices()[0]
  memory = device.memory_stats() or {}
  record = dict(arguments, batch=batch_size, compile_s=compile_s, step_s=step_s,
                examples_per_s=batch_size / step_s, flops_per_example=flops / batch_size,
                achieved_flops=flops / step_s, peak_rss_mib=common.peak_rss_mib(),
                peak_device_mib=memory.get("peak_bytes_in_use", 0) / 2**20 or None,
                device=f"{device.platform} {device.device_kind}",
                params=int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))))
  peak = peak_flops(device.device_kind, arguments["dtype"])
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
  print(f"machine: {common.machine()}", flush=True)
  rows = []
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
        rows.append([model, mode, dtype, r["batch"], f"{r['step_s'] * 1e3:.1f}",
                     f"{r['examples_per_s']:.2f}", f"{r['compile_s']:.1f}",
                     f"{r['peak_rss_mib']:.0f}",
                     f"{r['peak_device_mib']:.0f}" if r["peak_device_mib"] else "n/a",
                     f"{r['flops_per_example'] / 1e9:.2f}", f"{r['achieved_flops'] / 1e9:.1f}",
                     f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a", f"{r['params']:,}"])
        print("  " + " | ".join(str(x) for x in rows[-1]), flush=True)  # survives a later kill
  print()
  print(f"Training/inference throughput, size {args.size} (median of {args.steps} steps after "
        f"{args.warmup} warm-up; train = spectral features + forward + backward + optimiser)")
  print()
  print(common.markdown(["model", "mode", "dtype", "batch", "step ms", "examples/s",
                         "compile s", "peak RSS MiB", "peak device MiB", "GFLOP/example",
                         "GFLOP/s", "MFU", "params"], rows))


if __name__ == "__main__":
  main()
