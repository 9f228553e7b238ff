"""Benchmarks of the project's own programs. Importing tribert_jax first sets the XLA:CPU flags
the project runs with (tribert_jax/xla_cpu_flags.py) before any benchmark starts JAX."""

import tribert_jax  # noqa: F401
