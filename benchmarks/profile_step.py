"""Where a step's time goes: a jax.profiler trace of the project's own train step (or evaluation
forward), summed per XLA operation and per kind of operation.

  python -m benchmarks.profile_step --size cpu                       # TriBERT train step, batch 4
  python -m benchmarks.profile_step --size paper --batch 1 --set model.pose.stgcn_input=features
  python -m benchmarks.profile_step --size tiny --steps 1 --json /tmp/profile.json

The program is benchmarks.common's (the trainer's jitted step, or spectral features + the
evaluation forward) on a synthetic batch; after --warmup untimed steps, --steps steps run under
jax.profiler.trace (the trace stays in --trace_dir for TensorBoard's profile plugin or
Perfetto). Every traced event whose name is an instruction of the compiled program is one
execution of that operation; the tables give milliseconds per step (summed over the traced steps,
divided by their number):

  * by kind: convolutions split by what they compute, read off their dimension labels: "conv"
    (activations out: forward and input gradients) and "conv weight gradient" (a kernel-shaped
    output: batch and feature axes of the input swapped); dots, fusions (XLA's element-wise
    kernels), copies/transposes, reductions, the rest by opcode;
  * the --top slowest operations, with their shapes.

The per-step total of traced operations is printed beside the step's wall-clock time. It is not a
part of it: XLA:CPU runs independent operations concurrently on its threads, so the total can
exceed the wall-clock time, and dispatch and host work are in neither table. The figures are only as
idle as the machine (the load average is printed); shares are steadier than milliseconds.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import math
import os
import re
import tempfile
import time
from typing import Any, Iterable

from benchmarks import common

# "  %name = shape opcode(" or "  ROOT name = shape opcode(" in XLA's HLO text.
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s+=\s+(?P<shape>.*?)\s+"
                         r"(?P<opcode>[a-z][a-z0-9\-]*)\(")
DIM_LABELS = re.compile(r"dim_labels=(?P<lhs>\w+)_(?P<rhs>\w+)->(?P<out>\w+)")
WINDOW = re.compile(r"window=\{size=(?P<size>[0-9x]+)")
OP_NAME = re.compile(r'op_name="(?P<op_name>[^"]*)"')
CALLS = re.compile(r"calls=%?(?P<callee>[^\s,]+)")
KIND_OF_OPCODE = {"copy": "copy / transpose", "transpose": "copy / transpose",
                  "reduce": "reduce", "reduce-window": "reduce-window (pooling)",
                  "select-and-scatter": "select-and-scatter (pooling gradient)",
                  "fft": "fft", "dot": "dot", "custom-call": "custom-call",
                  "all-reduce": "all-reduce", "while": "while", "sort": "sort",
                  "scatter": "scatter", "gather": "gather"}


def instructions(hlo_text: str) -> dict[str, dict[str, str]]:
  """Instruction name -> {opcode, shape, kind, computation} of an HLO module's text; a fusion's
  kind is that of the convolution or dot it contains (XLA:CPU runs convolutions and dots inside
  kCustom fusions, e.g. YNNPACK's), else "fusion (KIND)"."""
  computations: dict[str, list[tuple[str, re.Match]]] = collections.defaultdict(list)
  computation = ""
  for line in hlo_text.splitlines():
    stripped = line.strip()
    if stripped.endswith("{") and "=" not in stripped.split("(")[0]:
      computation = stripped.split()[1 if stripped.startswith("ENTRY") else 0].lstrip("%")
      continue
    match = INSTRUCTION.match(line)
    if match:
      computations[computation].append((line, match))
  result = {}
  for computation, entries in computations.items():
    for line, match in entries:
      result[match["name"]] = dict(opcode=match["opcode"], shape=match["shape"],
                                   computation=computation,
                                   kind=kind_of(match["opcode"], line, match["shape"],
                                                computations))
  return result


def convolution_kind(line: str, shape: str) -> str:
  """"conv forward", "conv input gradient" or "conv weight gradient" of one convolution.

  XLA:CPU rewrites every convolution into the canonical layout (dim_labels b01f_01io->b01f), so
  the labels do not tell the three apart. A convolution whose op_name (JAX's metadata) is outside
  a transpose(...) is a forward one. A weight gradient slides a window the size of the forward's
  output over the input to produce a kernel-sized output, so its window is larger than its output;
  an input gradient slides the (flipped) kernel and produces an input-sized output."""
  op_name = OP_NAME.search(line)
  if op_name and "transpose(" not in op_name["op_name"]:
    return "conv forward"
  labels, window = DIM_LABELS.search(line), WINDOW.search(line)
  dims = re.search(r"\[([0-9,]*)\]", shape)
  if labels and window and dims:
    sizes = [int(d) for d in dims[1].split(",") if d]
    spatial = [sizes[i] for i, c in enumerate(labels["out"]) if c.isdigit() and i < len(sizes)]
    if math.prod(int(w) for w in window["size"].split("x")) > math.prod(spatial):
      return "conv weight gradient"
  return "conv input gradient" if op_name else "conv"


def kind_of(opcode: str, line: str, shape: str,
            computations: dict[str, list[tuple[str, re.Match]]]) -> str:
  """The table's kind of one HLO instruction (module docstring)."""
  if opcode == "convolution":
    return convolution_kind(line, shape)
  if opcode == "fusion":
    callee = CALLS.search(line)
    inner = computations.get(callee["callee"], []) if callee else []
    for inner_line, match in inner:
      if match["opcode"] == "convolution":
        return convolution_kind(inner_line, match["shape"])
    if any(match["opcode"] == "dot" for _, match in inner):
      return "dot"
    kind = re.search(r"kind=(\w+)", line)
    return f"fusion ({kind[1]})" if kind else "fusion"
  return KIND_OF_OPCODE.get(opcode, opcode)


def xplane_events(trace_dir: str) -> Iterable[tuple[str, int, int | None]]:
  """(event name, duration in ps, the program execution's run_id or None) of every event of
  every plane of the newest .xplane.pb under trace_dir."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no .xplane.pb under {trace_dir}: the profiler wrote no trace")
  space = xplane_pb2.XSpace()
  with open(paths[-1], "rb") as f:
    space.ParseFromString(f.read())
  for plane in space.planes:
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    run_id_keys = {key for key, meta in plane.stat_metadata.items() if meta.name == "run_id"}
    for line in plane.lines:
      for event in line.events:
        run_id = next((stat.int64_value or stat.uint64_value for stat in event.stats
                       if stat.metadata_id in run_id_keys), None)
        yield names.get(event.metadata_id, ""), int(event.duration_ps), run_id


def summarise(events: Iterable[tuple[str, int, int | None]], ops: dict[str, dict[str, str]],
              steps: int) -> dict[str, Any]:
  """Milliseconds per step by operation and by kind, from the trace's events matched to the
  compiled program's instructions. A step is one execution of the program (the events' run_id;
  `steps` where the trace has none)."""
  per_op = collections.Counter()
  count = collections.Counter()
  runs = set()
  for name, duration_ps, run_id in events:
    if name in ops:
      per_op[name] += duration_ps
      count[name] += 1
      if run_id is not None:
        runs.add(run_id)
  executions = len(runs) or steps
  per_kind = collections.Counter()
  for name, ps in per_op.items():
    per_kind[ops[name]["kind"]] += ps
  to_ms = lambda ps: ps / 1e9 / executions  # noqa: E731
  total = sum(per_op.values())
  return dict(
      executions=executions, traced_ms_per_step=to_ms(total),
      kinds=[dict(kind=k, ms=to_ms(v), share=v / total if total else 0.0)
             for k, v in per_kind.most_common()],
      ops=[dict(name=n, ms=to_ms(v), share=v / total if total else 0.0,
                calls_per_step=count[n] / executions, **ops[n])
           for n, v in per_op.most_common()])


def profile(config, mode: str, batch_size: int, steps: int, warmup: int, trace_dir: str
            ) -> dict[str, Any]:
  """Compiles the program, runs warmup steps, traces `steps` steps; the summary record."""
  import jax  # pylint: disable=g-import-not-at-top
  program = common.build_step(config, mode, batch_size)
  compiled, args = program["compiled"], program["args"]
  for _ in range(warmup):
    out = compiled(*args)
    jax.block_until_ready(out)  # none of it may run into the trace
    args = program["advance"](args, out)
    del out
  times = []
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      start = time.perf_counter()
      out = compiled(*args)
      jax.block_until_ready(out)
      times.append(time.perf_counter() - start)
      args = program["advance"](args, out)
      del out
  ops = instructions(compiled.as_text())
  record = summarise(xplane_events(trace_dir), ops, steps)
  if not record["ops"]:
    raise RuntimeError(f"none of the trace's events under {trace_dir} names an instruction of "
                       "the compiled program: this backend's trace is not per operation")
  record.update(mode=mode, batch=batch_size, steps=steps, step_s=times,
                device=program["device"], compile_s=program["compile_s"])
  return record


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="cpu", choices=["tiny", "cpu", "paper"])
  parser.add_argument("--model", default="tribert", choices=sorted(common.VARIANTS))
  parser.add_argument("--mode", default="train", choices=["train", "forward"])
  parser.add_argument("--batch", type=int, default=0,
                      help="batch size (0: the config's; paper size defaults to 1)")
  parser.add_argument("--steps", type=int, default=2, help="traced steps")
  parser.add_argument("--warmup", type=int, default=1, help="untraced steps after compiling")
  parser.add_argument("--top", type=int, default=25, help="slowest operations listed")
  parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                      help="config overrides, as main.py's --config.KEY=VALUE")
  parser.add_argument("--trace_dir", default="",
                      help="where the trace is written (default: a new temporary folder)")
  parser.add_argument("--json", default="", help="also write the record here")
  args = parser.parse_args()
  print(f"machine: {common.machine()}", flush=True)
  config = common.apply_overrides(common.get_config(args.model, args.size), args.set)
  batch = args.batch or (1 if args.size == "paper" else int(config.data.batch_size))
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="tribert_profile_")
  record = profile(config, args.mode, batch, args.steps, args.warmup, trace_dir)
  record.update(model=args.model, size=args.size, overrides=list(args.set), trace_dir=trace_dir,
                machine=common.machine(query_jax=False))
  step_ms = 1e3 * sorted(record["step_s"])[len(record["step_s"]) // 2]
  print(f"\n{args.model} {args.mode}, size {args.size}, batch {batch}, {args.steps} traced steps "
        f"on {record['device']}: step {step_ms:.1f} ms (median), traced operations "
        f"{record['traced_ms_per_step']:.1f} ms/step; trace in {trace_dir}\n")
  print(common.markdown(["kind", "ms/step", "share"],
                        [[k["kind"], f"{k['ms']:.1f}", f"{100 * k['share']:.1f}%"]
                         for k in record["kinds"]]))
  print()
  print(common.markdown(
      ["operation", "kind", "ms/step", "share", "calls/step", "output shape"],
      [[o["name"], o["kind"], f"{o['ms']:.1f}", f"{100 * o['share']:.1f}%",
        f"{o['calls_per_step']:g}", o["shape"][:60]] for o in record["ops"][:args.top]]))
  print(f"\nmachine after: {record['machine']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(record, f, indent=1)


if __name__ == "__main__":
  main()
