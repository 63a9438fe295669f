"""Device mesh and logical-axis rules: sharding as data (configured in gin).

The mesh has three axes: `data` (pure data parallel), `fsdp` (data parallel with parameters
sharded across it) and `tensor` (model parallel over heads / mlp / vocab). Layers name their axes
logically; `DEFAULT_RULES` maps those names to mesh axes, earlier rules taking priority and a mesh
axis never used twice in one array.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("act_embed", None),
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """`shape` is (data, fsdp, tensor); -1 in one place takes the remaining devices."""
  shape: Sequence[int] = (-1, 1, 1)
  rules: Sequence[tuple] = DEFAULT_RULES
  num_devices: int | None = None  # use only the first N devices (tests: 1-device baselines)


def resolve_mesh_shape(shape, num_devices):
  shape = list(shape)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"Mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}.")
  if shape.count(-1) > 1:
    raise ValueError(f"Mesh shape {tuple(shape)} may hold at most one -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"Cannot fill mesh {tuple(shape)} with {num_devices} devices.")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"Mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices but "
                     f"{num_devices} are in use; set MeshConfig.shape or MeshConfig.num_devices.")
  return tuple(shape)


def make_mesh(config: MeshConfig) -> Mesh:
  """Classic (Auto axis types) mesh over the first `num_devices` devices."""
  devices = jax.devices()
  if config.num_devices is not None:
    devices = devices[:config.num_devices]
  shape = resolve_mesh_shape(config.shape, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_sharding(logical_spec_tree, mesh: Mesh, rules):
  """Maps a tree of logical PartitionSpecs (None leaves = replicated) to NamedShardings."""
  def one(spec):
    if spec is None:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, nn.logical_to_mesh_axes(spec, rules))
  return jax.tree.map(one, logical_spec_tree,
                      is_leaf=lambda x: x is None or isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over (data, fsdp) on their leading axis."""
  return NamedSharding(mesh, P(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))



def host_rows(mesh: Mesh, num_rows: int) -> slice:
  """The rows of a `num_rows`-row batch that this process's devices hold (one contiguous block)."""
  index_map = batch_sharding(mesh).addressable_devices_indices_map((num_rows,))
  blocks = sorted({s[0].indices(num_rows)[:2] for s in index_map.values()})
  if any(a[1] != b[0] for a, b in zip(blocks, blocks[1:])):
    raise ValueError(f"This process's devices hold a non-contiguous part of the batch (mesh "
                     f"{dict(mesh.shape)}); order the mesh's devices by process.")
  return slice(blocks[0][0], blocks[-1][1])
