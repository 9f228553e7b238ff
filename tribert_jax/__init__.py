"""TriBERT in JAX/Flax. Importing the package sets the XLA:CPU flags it was measured with
(tribert_jax/xla_cpu_flags.py) before JAX starts its CPU client."""

from tribert_jax import xla_cpu_flags as _xla_cpu_flags

XLA_CPU_FLAGS_STATE = _xla_cpu_flags.apply()
