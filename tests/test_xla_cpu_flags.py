"""The XLA:CPU flags set on import (tribert_jax/xla_cpu_flags.py): convolutions leave YNNPACK,
XLA's memory-minimising scheduler and copy analysis, unless the user chose otherwise."""

import os
import subprocess
import sys

from tribert_jax import xla_cpu_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = " ".join(xla_cpu_flags.flag(name, value) for name, value, _ in xla_cpu_flags.FLAGS)


def test_flags_are_added_to_existing_xla_flags():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  state = xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                  "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
                                  "--xla_cpu_enable_concurrency_optimized_scheduler=false "
                                  "--xla_cpu_copy_insertion_use_region_analysis=true")
  assert "opts out" in state
  environ = {}
  xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == ALL
  # A second call (main.py's re-executed process inherits the variable) adds nothing and says
  # the flags are on.
  assert "opts out" in xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == ALL


def test_users_choice_opt_out_and_unknown_jaxlib_leave_xla_flags_alone():
  # The user's own value of one flag is kept (in any spelling); the others are still added.
  chosen = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot "
                         "xla_cpu_enable_concurrency_optimized_scheduler=true"}
  state = xla_cpu_flags.apply(chosen, version="0.10.2")
  assert ("xla_cpu_experimental_ynn_fusion_type, xla_cpu_enable_concurrency_optimized_scheduler "
          "as XLA_FLAGS sets it") in state
  assert chosen["XLA_FLAGS"] == ("--xla_cpu_experimental_ynn_fusion_type=dot "
                                 "xla_cpu_enable_concurrency_optimized_scheduler=true "
                                 "--xla_cpu_copy_insertion_use_region_analysis=true")
  opted_out = {"TRIBERT_XLA_CPU_FLAGS": "0"}
  assert "TRIBERT_XLA_CPU_FLAGS=0" in xla_cpu_flags.apply(opted_out, version="0.10.2")
  assert "XLA_FLAGS" not in opted_out
  other = {}
  assert "jaxlib 0.11.0" in xla_cpu_flags.apply(other, version="0.11.0")
  assert "XLA_FLAGS" not in other


def _run(program: str, **env) -> str:
  environ = dict(os.environ, XLA_FLAGS="", PYTHONPATH=REPO)
  environ.pop("TRIBERT_XLA_CPU_FLAGS", None)
  environ.update(env)
  out = subprocess.run([sys.executable, "-c", program], env=environ, capture_output=True,
                       text=True, timeout=300, check=True)
  return out.stdout.strip().splitlines()[-1]


_CONV_GRADIENT = """
import tribert_jax, jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=1))
text = grad.lower(jnp.ones((2, 64, 64, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print("ynn" in text.lower())
"""


def test_importing_tribert_jax_takes_convolutions_out_of_ynnpack():
  # XLA's own default puts this convolution's gradient in a YNNPACK fusion; after importing
  # tribert_jax (before JAX's first computation) it compiles without one.
  assert _run(_CONV_GRADIENT, TRIBERT_XLA_CPU_FLAGS="0") == "True"
  assert _run(_CONV_GRADIENT) == "False"


# Six 3x3 convolutions with large kernels and small activations, trained one step with the state
# donated (the train step's pattern): XLA's concurrency-optimised order computes the transposed
# kernels of the backward pass early and holds them, and keeps copies of the parameters.
_CONV_STACK_STEP = """
import tribert_jax, jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
def loss(kernels, x):
  for w in kernels:
    x = jnp.tanh(conv(x, w))
  return jnp.sum(x ** 2)
def step(kernels, x):
  grads = jax.grad(loss)(kernels, x)
  return [w - 0.1 * g / (jnp.sqrt(jnp.sum(g * g)) + 1e-6) for w, g in zip(kernels, grads)]
kernels = [jnp.full((3, 3, 256, 256), 0.01) for _ in range(6)]
compiled = jax.jit(step, donate_argnums=0).lower(kernels, jnp.ones((1, 8, 8, 256))).compile()
print(compiled.memory_analysis().temp_size_in_bytes)
"""


def test_importing_tribert_jax_lowers_the_temporary_memory_of_a_donated_train_step():
  defaults = int(_run(_CONV_STACK_STEP, TRIBERT_XLA_CPU_FLAGS="0"))
  ours = int(_run(_CONV_STACK_STEP))
  kernel = 3 * 3 * 256 * 256 * 4
  # Measured with jaxlib 0.10.2: 14.2 MiB (XLA's defaults) vs 5.1 MiB (six kernels are 13.5).
  assert ours < defaults / 2, (ours, defaults)
  assert ours < 3 * kernel, (ours, kernel)
