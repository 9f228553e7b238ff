"""XLA:CPU settings the project runs with, each kept because a benchmark showed it helps.

- `--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`: convolutions on XLA's own
  (Eigen) kernels, not YNNPACK. jaxlib 0.10 runs convolutions on CPU inside YNNPACK fusions by
  default; on the 2-core VM their weight gradients were 3-6x slower than Eigen's for the U-Net's
  shapes ([4, 256, 256, 128] -> 64, 3x3: 1130 vs 349 ms), and the paper-size train step with the
  release's work at batch 2 took 15.3-15.5 s with YNNPACK convolutions and 11.1-11.2 s without;
  the evaluation forward at batch 1 1.65 vs 1.45 s (benchmarks/README.md, "Convolution weight
  gradients: YNNPACK, Eigen and 1x1 matmuls"). Dots and element-wise fusions keep XLA's
  defaults.
- `--xla_cpu_enable_concurrency_optimized_scheduler=false`: XLA:CPU's default instruction order
  is chosen for running independent operations concurrently, and it computed the transposed
  kernels of the backward pass early and held them through the step; XLA's memory-minimising
  scheduler instead. The same train step's temporary buffers: 2.26 -> 1.54 GiB at batch 1,
  same step time (benchmarks/README.md, "Peak memory of the train step").
- `--xla_cpu_copy_insertion_use_region_analysis=true`: the finer analysis drops copies of
  parameters that XLA otherwise keeps next to the donated originals: 1.54 -> 1.42 GiB at batch 1,
  2.89 -> 2.65 GiB at batch 2.

XLA reads XLA_FLAGS once, when JAX creates its CPU client (at the first computation), so
`apply()` runs when tribert_jax is imported (tribert_jax/__init__.py) and only has an effect if
no JAX computation ran before. It adds each flag to XLA_FLAGS unless the variable already sets
that flag (the user chose), TRIBERT_XLA_CPU_FLAGS=0 is set, or the installed jaxlib is not a
version the flags were measured with (an unknown flag stops XLA). They are XLA:CPU's options:
GPU and TPU compilations ignore them.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

# (flag name, value, what it does in words), in the order they are added.
FLAGS = (
    ("xla_cpu_experimental_ynn_fusion_type", "-individual_convolution",
     "convolutions on XLA's Eigen kernels"),
    ("xla_cpu_enable_concurrency_optimized_scheduler", "false",
     "memory-minimising instruction order"),
    ("xla_cpu_copy_insertion_use_region_analysis", "true", "fewer parameter copies"),
)
OPT_OUT = "TRIBERT_XLA_CPU_FLAGS"  # "0" keeps XLA's defaults
# jaxlib releases that know the flags and were measured with them (requirements.txt pins 0.10.2).
JAXLIB_VERSIONS = ("0.10.",)


def flag(name: str, value: str) -> str:
  return f"--{name}={value}"


def jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def _sets(flags: str, name: str) -> bool:
  """Whether the XLA_FLAGS string flags sets the flag called name (any value)."""
  return any(item.lstrip("-").split("=", 1)[0] == name for item in flags.split())


def apply(environ: MutableMapping[str, str] | None = None, version: str | None = None) -> str:
  """Adds the FLAGS that XLA_FLAGS does not set yet to environ["XLA_FLAGS"] where they apply;
  returns what was done, in words."""
  environ = os.environ if environ is None else environ
  version = jaxlib_version() if version is None else version
  if environ.get(OPT_OUT, "") == "0":
    return f"XLA:CPU flags: XLA's defaults ({OPT_OUT}=0)"
  if not version.startswith(JAXLIB_VERSIONS):
    names = ", ".join(name for name, _, _ in FLAGS)
    return (f"XLA:CPU flags: XLA's defaults (jaxlib {version or 'not installed'}; {names} were "
            f"measured with {', '.join(v + 'x' for v in JAXLIB_VERSIONS)})")
  flags = environ.get("XLA_FLAGS", "")
  ours, theirs = [], []
  for name, value, words in FLAGS:
    if flag(name, value) in flags.split():  # ours, inherited (main.py re-executes itself)
      ours.append(f"{flag(name, value)} ({words})")
    elif _sets(flags, name):
      theirs.append(name)
    else:
      flags = f"{flags} {flag(name, value)}".strip()
      ours.append(f"{flag(name, value)} ({words})")
  if flags:
    environ["XLA_FLAGS"] = flags
  parts = []
  if ours:
    parts.append(", ".join(ours) + f"; {OPT_OUT}=0 opts out")
  if theirs:
    parts.append(f"{', '.join(theirs)} as XLA_FLAGS sets it")
  return "XLA:CPU flags: " + "; ".join(parts)
