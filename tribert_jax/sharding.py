"""Device mesh, data-parallel and logical-axis shardings; host batches <-> global jax.Arrays.

The mesh has axes ("data",) or ("data", "fsdp"). Batches are split over every mesh axis (the
fsdp axis also holds different examples, as in FSDP / ZeRO-3), parameters are replicated unless
the trainer's partitioning rules shard them over "fsdp".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
from jax.experimental import mesh_utils
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")


def _axis_sizes(config: Any = None, shape: Mapping[str, int] | Sequence[int] | None = None
                ) -> dict[str, int]:
  """Ordered {axis: size} from a config.mesh-like ConfigDict / mapping or an explicit shape."""
  if shape is not None:
    if isinstance(shape, Mapping):
      sizes = dict(shape)
    else:
      sizes = dict(zip(MESH_AXES, shape))
      if len(shape) > len(MESH_AXES):
        raise ValueError(f"mesh shape {tuple(shape)} has more axes than {MESH_AXES}")
  elif config is not None:
    sizes = {axis: int(config[axis]) for axis in MESH_AXES if axis in config}
  else:
    sizes = {"data": -1}
  unknown = [axis for axis in sizes if axis not in MESH_AXES]
  if unknown or "data" not in sizes:
    raise ValueError(f"mesh axes {list(sizes)}: expected 'data' and optionally 'fsdp'")
  return {axis: sizes[axis] for axis in MESH_AXES if axis in sizes}


def make_mesh(config: Any = None, *, shape: Mapping[str, int] | Sequence[int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over all (or the given) devices; one axis size may be -1 (= the remaining devices).

  config: a config.mesh-like mapping with keys "data" and optionally "fsdp" (e.g.
  ConfigDict(data=-1, fsdp=1)); or shape={"data": 4, "fsdp": 2} / shape=(4, 2).
  """
  sizes = _axis_sizes(config, shape)
  devices = list(jax.devices() if devices is None else devices)
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise ValueError(f"mesh {sizes}: at most one axis may be -1")
  known = int(np.prod([size for size in sizes.values() if size != -1]))
  if free:
    if len(devices) % known:
      raise ValueError(f"mesh {sizes}: {len(devices)} devices not divisible by {known}")
    sizes[free[0]] = len(devices) // known
  total = int(np.prod(list(sizes.values())))
  if total != len(devices):
    raise ValueError(f"mesh {sizes} needs {total} devices, {len(devices)} available")
  try:
    device_array = mesh_utils.create_device_mesh(
        tuple(sizes.values()), devices=devices)
  except (ValueError, NotImplementedError):  # unusual device sets: plain order
    device_array = np.asarray(devices).reshape(tuple(sizes.values()))
  return Mesh(device_array, tuple(sizes))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch dimension is split over (all of them)."""
  return tuple(axis for axis in MESH_AXES if axis in mesh.axis_names)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis, other dimensions replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated over the mesh."""
  return NamedSharding(mesh, PartitionSpec())


def host_to_global(batch: Any, mesh: Mesh) -> Any:
  """Tree of host numpy arrays [B_host, ...] -> global jax.Arrays [B_host * processes, ...].

  Every leaf must have the host batch as its leading dimension, and B_host must divide evenly
  over this process's devices of the mesh.
  """
  sharding = data_sharding(mesh)
  local_devices = len(mesh.local_devices)

  def to_global(x):
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] % local_devices:
      raise ValueError(f"host batch leaf of shape {x.shape}: leading dimension must be a "
                       f"multiple of the {local_devices} local devices")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(to_global, batch)


def host_local(x: jax.Array, mesh: Mesh, spec: PartitionSpec) -> np.ndarray:
  """This process's rows of a global batch-sharded array, as numpy (inverse of host_to_global)."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec))


def sharding_rules(config: Any) -> list[tuple[str, Any]]:
  """Logical axis rules of config.model as a list of (logical, mesh axis) pairs."""
  return [tuple(rule) for rule in config.model.sharding_rules]


def logical_to_mesh_sharding(specs: Any, mesh: Mesh, rules: list[tuple[str, Any]]) -> Any:
  """Logical PartitionSpecs -> NamedShardings: each logical name takes the mesh axis of its
  first rule (unknown names: replicated); a mesh axis already used by an earlier dimension of
  the same array is dropped. Unlike flax's version this accepts a logical name repeated within
  one array (e.g. a joints x joints adjacency), which then simply maps to the same axis once."""
  table: dict[str, Any] = {}
  for logical, mesh_axis in rules:
    table.setdefault(logical, mesh_axis)

  def convert(spec):
    used, axes = set(), []
    for name in spec:
      mesh_axis = table.get(name) if isinstance(name, str) else name
      parts = mesh_axis if isinstance(mesh_axis, tuple) else (mesh_axis,)
      parts = tuple(p for p in parts if p is not None and p not in used
                    and p in mesh.axis_names)
      used.update(parts)
      axes.append(None if not parts else parts[0] if len(parts) == 1 else parts)
    return NamedSharding(mesh, PartitionSpec(*axes))

  return jax.tree.map(convert, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
