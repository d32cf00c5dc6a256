"""Device mesh and logical-axis sharding rules: the only module that knows mesh-axis names.

Parameters are annotated with logical axis names by the model; this module maps them to the mesh
axes ("data", "fsdp", "model") through a table of rules that gin can override
(`MeshConfig.rules`). Batches are split over ("data", "fsdp"). A dimension that the assigned mesh
axes do not divide evenly is replicated instead (with a log line), so toy models run on any mesh.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rest_jax.configs import MeshConfig

logger = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (or axes). Earlier rules win; a mesh axis is used once per array.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "model"),
    ("heads", "model"),
    ("mlp", "model"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
)


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None
              ) -> Mesh:
  """A ("data", "fsdp", "model") mesh over `devices` (default: all global devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [config.data, config.fsdp, config.model]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"MeshConfig {dict(zip(MESH_AXES, sizes))} cannot use {len(devices)} "
                       f"devices: the fixed axes ({known}) must divide the device count.")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"MeshConfig data*fsdp*model = {math.prod(sizes)} but there are "
                     f"{len(devices)} devices; set one axis to -1 to use the rest.")
  device_grid = np.asarray(devices, dtype=object).reshape(sizes)
  return Mesh(device_grid, MESH_AXES)


def rules_of(config: MeshConfig) -> tuple[tuple[str, Any], ...]:
  return DEFAULT_RULES if config.rules is None else tuple(
      (name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in config.rules)


def _axes_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[a] for a in axes)


def spec_for(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
             rules) -> P:
  """Mesh PartitionSpec for one array; uneven dimensions fall back to replication."""
  spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
  fixed = []
  for dim, axes in zip(shape, spec):
    if axes is not None and dim % _axes_size(mesh, axes):
      logger.info("Replicating dimension of size %d (not divisible by mesh axes %s).", dim, axes)
      axes = None
    fixed.append(axes)
  return P(*fixed)


def param_shardings(boxed_params: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree of (abstract) params boxed with logical axis names."""
  def one(leaf):
    if isinstance(leaf, nn.LogicallyPartitioned):
      return NamedSharding(mesh, spec_for(leaf.names, leaf.value.shape, mesh, rules))
    return NamedSharding(mesh, P())
  return jax.tree_util.tree_map(one, boxed_params,
                                is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) dimension over ("data", "fsdp"); the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def num_batch_shards(mesh: Mesh) -> int:
  return _axes_size(mesh, BATCH_AXES)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Builds global arrays, split over the batch axes, from this process's rows of a batch.

  With one process the local rows are the whole batch; with several, each process passes its own
  consecutive share and the global batch is their concatenation in process order.
  """
  global_rows_divisor = num_batch_shards(mesh)

  def put(x):
    x = np.asarray(x)
    if x.ndim == 0:
      return jax.device_put(x, replicated(mesh))
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % global_rows_divisor:
      raise ValueError(f"Global batch dimension {global_rows} is not divisible by the "
                       f"{global_rows_divisor} data-parallel shards of the mesh.")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree_util.tree_map(put, batch)


def process_rows(global_rows: int) -> slice:
  """The consecutive rows of a global batch that this process feeds (equal shares)."""
  count = jax.process_count()
  if global_rows % count:
    raise ValueError(f"Global batch of {global_rows} rows cannot be split over {count} processes.")
  share = global_rows // count
  return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def to_host(array: jax.Array) -> np.ndarray:
  """The whole global array as numpy on every process."""
  if jax.process_count() == 1:
    return np.asarray(array)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def local_to_host(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, as numpy."""
  if jax.process_count() == 1:
    return np.asarray(array)
  return to_host(array)[process_rows(array.shape[0])]


def is_chief() -> bool:
  """True in the process that writes results, plots and logs (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches this point (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
