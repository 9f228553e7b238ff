"""XLA:CPU settings the project runs with: convolutions on XLA's own (Eigen) kernels, not YNNPACK.

jaxlib 0.10 runs convolutions on CPU inside YNNPACK fusions by default. On the 2-core VM their
weight gradients were 3-6x slower than XLA's Eigen convolutions for the U-Net's shapes
([4, 256, 256, 128] -> 64, 3x3: 1130 vs 349 ms), and the paper-size train step with the
release's work at batch 2 took 15.3-15.5 s with YNNPACK convolutions and 11.1-11.2 s without;
the evaluation forward at batch 1 1.65 vs 1.45 s (benchmarks/README.md, "Convolution weight
gradients: YNNPACK, Eigen and 1x1 matmuls"). Dots and element-wise fusions keep XLA's defaults.

XLA reads XLA_FLAGS once, when JAX creates its CPU client (at the first computation), so
`apply()` runs when tribert_jax is imported (tribert_jax/__init__.py) and only has an effect if
no JAX computation ran before. It adds the flag to XLA_FLAGS unless the variable already sets
`xla_cpu_experimental_ynn_fusion_type` (the user chose), TRIBERT_XLA_CPU_FLAGS=0 is set, or the
installed jaxlib is not a version the flag was measured with (an unknown flag stops XLA).
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=-individual_convolution"
OPT_OUT = "TRIBERT_XLA_CPU_FLAGS"  # "0" keeps XLA's defaults
# jaxlib releases that know the flag and were measured with it (requirements.txt pins 0.10.2).
JAXLIB_VERSIONS = ("0.10.",)


def jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def apply(environ: MutableMapping[str, str] | None = None, version: str | None = None) -> str:
  """Adds FLAG to environ["XLA_FLAGS"] where it applies; returns what was done, in words."""
  environ = os.environ if environ is None else environ
  version = jaxlib_version() if version is None else version
  flags = environ.get("XLA_FLAGS", "")
  if environ.get(OPT_OUT, "") == "0":
    return f"XLA:CPU flags: XLA's defaults ({OPT_OUT}=0)"
  if FLAG in flags.split():  # ours, inherited (main.py re-executes itself) or the user's own
    return f"XLA:CPU flags: {FLAG} (convolutions on XLA's Eigen kernels; {OPT_OUT}=0 opts out)"
  if FLAG_NAME in flags:
    return f"XLA:CPU flags: {FLAG_NAME} as XLA_FLAGS sets it"
  if not version.startswith(JAXLIB_VERSIONS):
    return (f"XLA:CPU flags: XLA's defaults (jaxlib {version or 'not installed'}; {FLAG} was "
            f"measured with {', '.join(v + 'x' for v in JAXLIB_VERSIONS)})")
  environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return apply(environ, version)
