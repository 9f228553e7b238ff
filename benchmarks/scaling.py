"""Data-parallel scaling: the same per-device batch on 1, 2, 4, 8 devices (weak scaling).

  python -m benchmarks.scaling                      # TriBERT tiny, 1/2/4/8 simulated CPU devices
  python -m benchmarks.scaling --model sound_of_pixels --size cpu --devices 1 2

Each device count K runs in its own interpreter with
XLA_FLAGS=--xla_force_host_platform_device_count=K (the flag must precede JAX's start-up): a
mesh ("data",) over the K devices, replicated parameters and the batch split over "data"
(tribert_jax.sharding), and a jitted step of spectral features + forward + backward + Adam
whose gradient all-reduce XLA inserts. Every step is waited for (the multi-device CPU
deadlock, ../shared/ENVIRONMENT.md) and every subprocess has a timeout. Efficiency = examples/s
on K devices / (K x examples/s on 1 device). Simulated CPU devices share the machine's cores,
so on a CPU the ideal is a constant examples/s (efficiency 1/K) and the table mostly measures
the overhead of partitioning and collectives.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks import common


def worker(arguments: dict) -> dict:
  """Times the data-parallel step on every device of this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  from tribert_jax import sharding  # pylint: disable=g-import-not-at-top
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  if len(devices) != arguments["devices"]:
    raise RuntimeError(f"expected {arguments['devices']} devices, JAX has {len(devices)}")
  config = common.get_config(arguments["model"], arguments["size"])
  per_device = arguments["per_device_batch"] or int(config.data.batch_size)
  global_batch = per_device * len(devices)
  mesh = sharding.make_mesh(shape={"data": len(devices)})
  replicated, split = sharding.replicated(mesh), sharding.data_sharding(mesh)
  # The trainer's own model and loss (spectral features, model inputs, every loss term).
  task = common.make_task(config, [f"class{i}" for i in range(config.data.num_classes)])
  model = task.model
  tx = optax.adam(1e-4)
  host_batch = common.synthetic_batch(config, global_batch)

  def inputs_of(batch):
    return separation.model_inputs(batch, config.data)

  def init(rng):
    inputs, _ = inputs_of(jax.tree.map(lambda x: x[:1], host_batch))
    variables = nn.meta.unbox(model.init({"params": rng, "dropout": rng, "masking": rng},
                                         inputs, train=False))
    return variables["params"], variables.get("batch_stats", {}), tx.init(variables["params"])

  def step(state, batch, rng):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      total, (_, new_batch_stats) = task.loss_fn(params, batch_stats, batch, rng)
      return total, new_batch_stats

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  rng = jax.random.PRNGKey(0)
  state = jax.jit(init, out_shardings=replicated)(rng)
  batch = sharding.host_to_global(host_batch, mesh)
  start = time.perf_counter()
  compiled = jax.jit(step, in_shardings=(replicated, split, replicated),
                     out_shardings=(replicated, replicated), donate_argnums=0
                     ).lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(arguments["warmup"] + arguments["steps"]):
    start = time.perf_counter()
    state, loss = compiled(state, batch, jax.random.fold_in(rng, i))
    loss.block_until_ready()  # one step in flight at a time: no CPU all-reduce deadlock
    if i >= arguments["warmup"]:
      times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  return dict(arguments, global_batch=global_batch, per_device=per_device, step_s=step_s,
              examples_per_s=global_batch / step_s, compile_s=compile_s, loss=float(loss))


def main() -> None:
  """One subprocess per device count; prints the Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="tribert", choices=sorted(common.VARIANTS))
  parser.add_argument("--size", default="tiny", choices=["tiny", "cpu", "paper"])
  parser.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4, 8])
  parser.add_argument("--per_device_batch", type=int, default=1)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--timeout", type=float, default=300.0, help="seconds per device count")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))), flush=True)
    return
  print(f"machine: {common.machine()}", flush=True)
  flags = os.environ.get("XLA_FLAGS", "")
  results = {}
  for count in args.devices:
    print(f"measuring {count} device(s) ...", flush=True)
    env = {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}".strip(),
           "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    results[count] = common.run_worker(
        "benchmarks.scaling", dict(model=args.model, size=args.size, devices=count,
                                   per_device_batch=args.per_device_batch, steps=args.steps,
                                   warmup=args.warmup), args.timeout, env)
    r = results[count]
    print("  " + (r["error"] if "error" in r else  # survives a later kill
                  f"{r['global_batch']} examples: {r['step_s'] * 1e3:.0f} ms/step, "
                  f"{r['examples_per_s']:.2f} examples/s, compile {r['compile_s']:.1f} s"),
          flush=True)
  base = results.get(1) if "error" not in results.get(1, {"error": ""}) else None
  rows = []
  for count, r in results.items():
    if "error" in r:
      rows.append([count, "", r["error"], "", "", "", ""])
      continue
    speedup = r["examples_per_s"] / base["examples_per_s"] if base else float("nan")
    rows.append([count, r["global_batch"], f"{r['step_s'] * 1e3:.0f}",
                 f"{r['examples_per_s']:.2f}", f"{speedup:.2f}", f"{speedup / count:.2f}",
                 f"{r['compile_s']:.1f}"])
  print()
  print(f"Weak scaling, {args.model} size {args.size}, {args.per_device_batch} example(s) per "
        f"device, median of {args.steps} steps. Simulated CPU devices share "
        f"{os.cpu_count()} cores: this measures partitioning/collective overhead, not "
        "accelerator scaling (ideal here: speed-up 1, efficiency 1/K).")
  print()
  print(common.markdown(["devices", "global batch", "step ms", "examples/s",
                         "speed-up vs 1", "efficiency", "compile s"], rows))


if __name__ == "__main__":
  main()
