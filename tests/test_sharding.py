"""Tests of tribert_jax.sharding: mesh construction and host batches -> global arrays."""

import os
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
import pytest

from tribert_jax import sharding

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs with 4 forced host devices; every jitted result is waited on (deadlock trap on 2 cores).
_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import jax, ml_collections, numpy as np
    from tribert_jax import sharding
    assert jax.device_count() == 4
    batch = {"frames": np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2),
             "valid": np.ones(8, np.float32),
             "clip_index": np.arange(16, dtype=np.int32).reshape(8, 2)}
    meshes = [sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1))),
              sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=-1))),
              sharding.make_mesh(shape=(1, 4))]
    for mesh in meshes:
      assert mesh.devices.size == 4
      glob = sharding.host_to_global(batch, mesh)
      for key, value in glob.items():
        assert value.shape == batch[key].shape and value.dtype == batch[key].dtype, key
        assert value.sharding == sharding.data_sharding(mesh), key
        np.testing.assert_array_equal(np.asarray(value), batch[key])
        shards = sorted(value.addressable_shards, key=lambda s: s.index[0].start or 0)
        assert len(shards) == 4 and all(s.data.shape[0] == 2 for s in shards), key
        np.testing.assert_array_equal(np.concatenate([np.asarray(s.data) for s in shards]),
                                      batch[key])
      step = jax.jit(lambda b: (b["frames"] * b["valid"][:, None, None]).sum(),
                     out_shardings=sharding.replicated(mesh))
      total = step(glob)
      total.block_until_ready()
      assert float(total) == float(batch["frames"].sum())
    print("MESHES", [dict(m.shape) for m in meshes])
""")


def test_host_to_global_on_four_cpu_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", PYTHONPATH=_REPO)
  result = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT], env=env, cwd=_REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "MESHES [{'data': 4}, {'data': 2, 'fsdp': 2}, {'data': 1, 'fsdp': 4}]" in result.stdout


def test_single_device_mesh_and_errors():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
  assert sharding.data_sharding(mesh).spec == jax.sharding.PartitionSpec(("data",))
  assert sharding.replicated(mesh).spec == jax.sharding.PartitionSpec()
  batch = {"x": np.ones((2, 3), np.float32)}
  assert sharding.host_to_global(batch, mesh)["x"].shape == (2, 3)
  with pytest.raises(ValueError, match="needs"):
    sharding.make_mesh(shape={"data": jax.device_count() + 1})
  with pytest.raises(ValueError, match="expected 'data'"):
    sharding.make_mesh(ml_collections.ConfigDict(dict(model=1)))
  with pytest.raises(ValueError, match="leading dimension"):
    sharding.host_to_global({"x": np.float32(1.0)}, mesh)
