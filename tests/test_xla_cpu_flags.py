"""The XLA:CPU flags set on import: convolutions leave YNNPACK unless the user chose otherwise."""

import os
import subprocess
import sys

from tribert_jax import xla_cpu_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flag_is_added_to_existing_xla_flags():
  environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  state = xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                  "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution")
  assert "opts out" in state
  environ = {}
  xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == xla_cpu_flags.FLAG
  # A second call (main.py's re-executed process inherits the variable) adds nothing and says
  # the flag is on.
  assert "opts out" in xla_cpu_flags.apply(environ, version="0.10.2")
  assert environ["XLA_FLAGS"] == xla_cpu_flags.FLAG


def test_users_choice_opt_out_and_unknown_jaxlib_leave_xla_flags_alone():
  chosen = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
  assert "as XLA_FLAGS sets it" in xla_cpu_flags.apply(chosen, version="0.10.2")
  assert chosen == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}
  opted_out = {"TRIBERT_XLA_CPU_FLAGS": "0"}
  assert "TRIBERT_XLA_CPU_FLAGS=0" in xla_cpu_flags.apply(opted_out, version="0.10.2")
  assert "XLA_FLAGS" not in opted_out
  other = {}
  assert "jaxlib 0.11.0" in xla_cpu_flags.apply(other, version="0.11.0")
  assert "XLA_FLAGS" not in other


_PROGRAM = """
import tribert_jax, jax, jax.numpy as jnp
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=1))
text = grad.lower(jnp.ones((2, 64, 64, 32)), jnp.ones((3, 3, 32, 32))).compile().as_text()
print("ynn" in text.lower())
"""


def _uses_ynnpack(**env) -> bool:
  environ = dict(os.environ, XLA_FLAGS="", PYTHONPATH=REPO, **env)
  environ.pop("TRIBERT_XLA_CPU_FLAGS", None)
  environ.update(env)
  out = subprocess.run([sys.executable, "-c", _PROGRAM], env=environ, capture_output=True,
                       text=True, timeout=300, check=True)
  return out.stdout.strip().splitlines()[-1] == "True"


def test_importing_tribert_jax_takes_convolutions_out_of_ynnpack():
  # XLA's own default puts this convolution's gradient in a YNNPACK fusion; after importing
  # tribert_jax (before JAX's first computation) it compiles without one.
  assert _uses_ynnpack(TRIBERT_XLA_CPU_FLAGS="0")
  assert not _uses_ynnpack()
