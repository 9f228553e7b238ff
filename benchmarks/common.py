"""Pieces shared by the benchmarks: model variants by name, the trainer hook for Sound-of-Pixels,
synthetic batches of the batch contract, machine description and Markdown tables, device peaks
(PEAK_FLOPS), config overrides, and measure_step: one of the project's own programs (the
trainer's step or the evaluation forward) compiled, timed and costed."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model variants compared by the benchmarks: name -> (config module[:argument after the size],
# model overrides).
VARIANTS = {
    "tribert": ("pretrain", {}),
    "tribert_no_pose": ("pretrain", {"pose.enabled": False}),
    "tribert_no_visual": ("pretrain", {"visual.enabled": False}),
    "sound_of_pixels": ("sound_of_pixels", {}),
    "amnet": ("amnet:stage=appearance", {}),  # AMnet's audio-appearance stage
    "amnet_motion": ("amnet:stage=motion", {}),  # its audio-motion stage (the rest frozen)
}


def get_config(variant: str, size: str) -> ml_collections.ConfigDict:
  """The full training config of a model variant (see VARIANTS) at SIZE."""
  import importlib  # pylint: disable=g-import-not-at-top
  if variant not in VARIANTS:
    raise ValueError(f"unknown model variant {variant!r}; choose from {sorted(VARIANTS)}")
  module, overrides = VARIANTS[variant]
  module, _, argument = module.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(
      f"{size},{argument}" if argument else size)
  for key, value in overrides.items():
    node = config.model
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def build_model(model_config: ml_collections.ConfigDict) -> Any:
  """The model config.model.name names (the separation task's own factory)."""
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top
  return separation.build_model(model_config)


def make_task(config: ml_collections.ConfigDict, class_names: Sequence[str]) -> Any:
  """Task of any separation model variant (TriBERT's loss and evaluation)."""
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top
  return separation.separation_task(config, list(class_names))


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """A random host batch with the batch contract's keys and shapes (for timing only)."""
  d = config.data
  rng = np.random.default_rng(seed)
  b, n, t, s, w, p = (batch_size, d.num_mix, d.num_frames, d.image_size, d.pose_window,
                      d.max_persons)
  length = d.audio_length
  labels = np.zeros((b, n, d.num_classes), np.float32)
  labels[:, np.arange(n), np.arange(n)] = 1.0
  waveform = (0.1 * rng.standard_normal((b, n, length))).astype(np.float32)
  batch = dict(
      frames=rng.standard_normal((b, n, t, s, s, 3)).astype(np.float32),
      pose=rng.random((b, n, p, w, 68, 3)).astype(np.float32),
      pose_mask=np.ones((b, n, p, w), np.float32),
      pose_frame_index=np.broadcast_to(w // 2 + np.arange(t) - t // 2, (b, n, t)).astype(np.int32),
      labels=labels, waveform=waveform, mixture=waveform.sum(axis=1),
      valid=np.ones((b,), np.float32), clip_index=np.zeros((b, n), np.int32),
      mixture_index=np.full((b,), -1, np.int32))
  pose_config = config.model.get("pose") if "model" in config else None
  if pose_config is not None and pose_config.get("stgcn_input", "pose") == "features":
    # Precomputed frozen ST-GCN features at the RGB frames: [B, N, T, P, J * C_last].
    width = 68 * pose_config.stgcn_blocks[-1][0]
    batch["pose_features"] = rng.standard_normal((b, n, t, p, width)).astype(np.float32)
  return batch


def machine(query_jax: bool = True) -> str:
  """One line: host, cores, load average, accelerator (query_jax=False leaves the accelerator
  out and does not start a JAX backend in this process: on a GPU that would reserve most of its
  memory before the measuring subprocess starts)."""
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  text = (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load}")
  # Flags change the compiled code (the tests set --xla_backend_optimization_level=0, for
  # example): every figure carries the ones it ran with.
  if os.environ.get("XLA_FLAGS"):
    text += f"; XLA_FLAGS={os.environ['XLA_FLAGS']}"
  if not query_jax:
    return text
  try:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    device_text = f"{device.platform} ({device.device_kind})"
  except Exception:  # pylint: disable=broad-except
    device_text = "jax unavailable"
  return f"{text}; jax device {device_text}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table."""
  fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
  return "\n".join(lines)


def run_worker(module: str, arguments: dict[str, Any], timeout_s: float,
               env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs `python -m MODULE --worker JSON` in a fresh interpreter; returns its last JSON line
  ({"error": ...} on failure or timeout, so one bad configuration does not end a benchmark)."""
  command = [sys.executable, "-m", module, "--worker", json.dumps(arguments)]
  full_env = dict(os.environ, **(env or {}))
  full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
  try:
    done = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout_s:.0f} s"}
  for line in reversed(done.stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
  return {"error": f"exit {done.returncode}: " + " / ".join(tail)}


def peak_rss_mib() -> float:
  """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
  """Frees what the allocator can hand back and resets this process's peak RSS (VmHWM) to its
  current RSS (Linux: /proc/self/clear_refs "5"); False where that is not possible."""
  import ctypes  # pylint: disable=g-import-not-at-top
  import gc  # pylint: disable=g-import-not-at-top
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_rss_since_reset_mib() -> float | None:
  """VmHWM of /proc/self/status in MiB (the peak since reset_peak_rss), None where absent."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return None


# ----------------------------------------------------------------------------------------------
# Device peaks and MFU
# ----------------------------------------------------------------------------------------------

# Dense peak FLOP/s per device by (device_kind substring, dtype), vendor datasheet figures (no
# sparsity). "tfloat32" is the tensor-core TF32 peak, which XLA:GPU uses for float32 matmuls and
# convolutions at JAX's default precision on Ampere and later; "float32" the plain FP32 peak.
# Checked in this order, so more specific kinds come before the kinds they contain.
PEAK_FLOPS = {
    ("H100 PCIe", "bfloat16"): 756e12, ("H100 PCIe", "float32"): 51e12,
    ("H100 PCIe", "tfloat32"): 378e12,
    ("H100", "bfloat16"): 989e12, ("H100", "float32"): 67e12, ("H100", "tfloat32"): 495e12,
    ("H200", "bfloat16"): 989e12, ("H200", "float32"): 67e12, ("H200", "tfloat32"): 495e12,
    ("A100", "bfloat16"): 312e12, ("A100", "float32"): 19.5e12, ("A100", "tfloat32"): 156e12,
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,  # v5e
    ("TPU v5p", "bfloat16"): 459e12, ("TPU v5", "bfloat16"): 459e12,  # v5p reports "TPU v5"
    ("TPU v6 lite", "bfloat16"): 918e12,  # v6e (Trillium)
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """The device's dense peak FLOP/s for dtype, or None when unknown (e.g. CPUs)."""
  for (kind, peak_dtype), value in PEAK_FLOPS.items():
    if kind.lower() in device_kind.lower() and peak_dtype == dtype:
      return value
  return None


def cost_flops(stage: Any) -> float:
  """FLOPs of a jax Lowered or Compiled program from XLA's cost analysis (nan if unavailable)."""
  try:
    analysis = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it)
    return float("nan")
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", float("nan")))


def device_slug(device_kind: str) -> str:
  """'NVIDIA H200' -> 'nvidia_h200', 'cpu' -> 'cpu' (for file names)."""
  return "_".join("".join(c if c.isalnum() else " " for c in device_kind.lower()).split()) or "device"


# ----------------------------------------------------------------------------------------------
# Config overrides and one measured step
# ----------------------------------------------------------------------------------------------


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]
                    ) -> ml_collections.ConfigDict:
  """Applies command-line style overrides, 'model.pose.freeze_stgcn=True' (values parsed as
  Python literals, else kept as strings), as main.py's --config.KEY=VALUE would. Setting
  optim.name=bert_adam switches the whole optimiser to the release's (configs/parts/train.py,
  use_bert_adam) before the remaining overrides apply."""
  import ast  # pylint: disable=g-import-not-at-top

  from configs.parts import train as train_parts  # pylint: disable=g-import-not-at-top
  from tribert_jax import ablations  # pylint: disable=g-import-not-at-top
  parsed = []
  for override in overrides:
    key, equals, text = override.partition("=")
    if not equals:
      raise ValueError(f"override {override!r} is not KEY=VALUE")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    parsed.append((key.strip(), value))
  if ("optim.name", "bert_adam") in parsed:
    train_parts.use_bert_adam(config)
  ablations.apply_overrides(config, parsed)
  return config


def build_step(config: ml_collections.ConfigDict, mode: str, batch_size: int) -> dict[str, Any]:
  """Compiles one of the project's own programs on a synthetic batch, in this process.

  mode "train": the trainer's jitted step (tribert_jax.train_step.make_train_step: spectral
  features, forward, backward, optimiser update; state donated); "forward": spectral features +
  the model's evaluation-mode forward (separation.model_inputs, model.apply(train=False)), from the
  model's variables alone (no optimiser state in memory). Returns the compiled program and its
  arguments, `advance(args, outputs)` -> the next step's arguments (the donated state replaced by
  the new one), compile time, FLOPs per step from XLA's cost analysis of the compiled program
  (flops_lowered: of the program before XLA's optimisations, a cross-check), the peak RSS until
  compiled, the device and the parameter count.
  """
  import time  # pylint: disable=g-import-not-at-top

  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from tribert_jax import initialization  # pylint: disable=g-import-not-at-top
  from tribert_jax import optimizers  # pylint: disable=g-import-not-at-top
  from tribert_jax import sharding  # pylint: disable=g-import-not-at-top
  from tribert_jax import train_step  # pylint: disable=g-import-not-at-top
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top

  if mode not in ("train", "forward"):
    raise ValueError(f"mode must be train or forward, got {mode!r}")
  config.data.batch_size = batch_size
  class_names = [f"class{i}" for i in range(config.data.num_classes)]
  task = make_task(config, class_names)
  mesh = sharding.make_mesh(shape={"data": 1}, devices=jax.devices()[:1])
  batch = jax.device_put(synthetic_batch(config, batch_size), sharding.data_sharding(mesh))
  if mode == "train":
    tx, schedule = optimizers.make_optimizer(config.optim, max(int(config.num_train_steps), 1),
                                             frozen=task.frozen)
    init_fn, _, _, init_rng = initialization.make_state_initializer(task, tx, config, mesh)
    state = init_fn(init_rng)
    del init_fn  # its compiled program (~0.55 GiB at paper size) is not needed again
    params = state.params
    fn = jax.jit(train_step.make_train_step(task, tx, schedule, config, mesh), donate_argnums=0)
    args = (state, batch)
    advance = lambda args, out: (out[0], args[1])  # noqa: E731
  else:
    variables = jax.jit(lambda rng: nn.meta.unbox(task.init_variables(rng)))(
        jax.random.PRNGKey(int(config.seed)))
    params = variables["params"]

    def forward(variables, batch):
      inputs, _ = separation.model_inputs(batch, config.data)
      outputs, _ = task.model.apply(variables, inputs, train=False)
      return outputs["mask_logits"]
    fn = jax.jit(forward)
    args = (variables, batch)
    advance = lambda args, out: args  # noqa: E731
  num_params = int(sum(x.size for x in jax.tree.leaves(params)))
  del params
  start = time.perf_counter()
  lowered = fn.lower(*args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  flops = cost_flops(compiled)
  flops_lowered = cost_flops(lowered)
  if not flops > 0:  # backend without a compiled-program cost analysis
    flops = flops_lowered
  del lowered
  device = jax.devices()[0]
  return dict(compiled=compiled, args=args, advance=advance, compile_s=compile_s, flops=flops,
              flops_lowered=flops_lowered, peak_rss_compile=peak_rss_mib(),
              num_params=num_params, device_object=device,
              device=(device.device_kind if device.device_kind.lower() == device.platform
                      else f"{device.platform} {device.device_kind}"))


def measure_step(config: ml_collections.ConfigDict, mode: str, batch_size: int, steps: int,
                 warmup: int) -> dict[str, Any]:
  """Compiles (build_step) and times one of the project's own programs on a synthetic batch, in
  this process. Returns compile time, the timed steps (each waited for; step_s is their median),
  FLOPs per step, peak memory (device allocator where the backend reports one, and this
  process's peak RSS), device and parameter count.
  """
  import statistics  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  program = build_step(config, mode, batch_size)
  compiled, args, advance = program["compiled"], program["args"], program["advance"]
  flops, peak_rss_compile = program["flops"], program["peak_rss_compile"]
  reset = reset_peak_rss()  # from here on VmHWM is the peak while stepping

  times = []
  for step in range(warmup + steps):
    start = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    args = advance(args, out)
    if step >= warmup:
      times.append(time.perf_counter() - start)
    del out
  step_s = statistics.median(times)
  device = program["device_object"]
  memory = device.memory_stats() or {}
  peak_device = memory.get("peak_bytes_in_use")
  return dict(
      mode=mode, batch=batch_size, dtype=str(config.model.dtype), compile_s=program["compile_s"],
      step_s=step_s, step_times_s=times, examples_per_s=batch_size / step_s,
      flops_per_step=flops, flops_lowered_per_step=program["flops_lowered"],
      flops_per_example=flops / batch_size, achieved_flops=flops / step_s,
      peak_rss_mib=max(peak_rss_mib(), peak_rss_compile),
      peak_rss_until_compiled_mib=peak_rss_compile,
      peak_rss_steps_mib=peak_rss_since_reset_mib() if reset else None,
      peak_device_mib=peak_device / 2**20 if peak_device else None,
      platform=device.platform, device_kind=device.device_kind, device=program["device"],
      num_devices=jax.device_count(), params=program["num_params"])
