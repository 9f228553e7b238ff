"""Pieces shared by the benchmarks: model variants by name, the trainer hook for Sound-of-Pixels,
synthetic batches of the batch contract, machine description and Markdown tables."""

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

# Model variants compared by the benchmarks: name -> (config module, model overrides).
VARIANTS = {
    "tribert": ("pretrain", {}),
    "tribert_no_pose": ("pretrain", {"pose.enabled": False}),
    "tribert_no_visual": ("pretrain", {"visual.enabled": False}),
    "sound_of_pixels": ("sound_of_pixels", {}),
}


def get_config(variant: str, size: str) -> ml_collections.ConfigDict:
  """The full training config of a model variant (see VARIANTS) at SIZE."""
  import importlib  # pylint: disable=g-import-not-at-top
  if variant not in VARIANTS:
    raise ValueError(f"unknown model variant {variant!r}; choose from {sorted(VARIANTS)}")
  module, overrides = VARIANTS[variant]
  config = importlib.import_module(f"configs.{module}").get_config(size)
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
  return dict(
      frames=rng.standard_normal((b, n, t, s, s, 3)).astype(np.float32),
      pose=rng.random((b, n, p, w, 68, 3)).astype(np.float32),
      pose_mask=np.ones((b, n, p, w), np.float32),
      pose_frame_index=np.broadcast_to(w // 2 + np.arange(t) - t // 2, (b, n, t)).astype(np.int32),
      labels=labels, waveform=waveform, mixture=waveform.sum(axis=1),
      valid=np.ones((b,), np.float32), clip_index=np.zeros((b, n), np.int32),
      mixture_index=np.full((b,), -1, np.int32))


def machine() -> str:
  """One line: host, cores, load average, accelerator."""
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  try:
    import jax  # pylint: disable=g-import-not-at-top
    device = jax.devices()[0]
    device_text = f"{device.platform} ({device.device_kind})"
  except Exception:  # pylint: disable=broad-except
    device_text = "jax unavailable"
  return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{load}; jax device {device_text}")


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
