"""Device mesh and logical-axis rules: sharding as data (configured in gin).

The mesh has three axes: `data` (pure data parallel), `fsdp` (data parallel with parameters
sharded across it) and `tensor` (model parallel over heads / mlp / vocab). Layers name their axes
logically; `DEFAULT_RULES` maps those names to mesh axes, earlier rules taking priority and a mesh
axis never used twice in one array.
"""

import contextlib
import dataclasses
from typing import Sequence

import flax.linen as nn
import gin
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mixjax.models import attention as attention_lib

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


def resolve_mesh_shape(shape, num_devices, hosts: str = ""):
  """`shape` with its -1 filled in from `num_devices`; raises when they cannot agree. `hosts`
  says where the devices come from (e.g. "2 processes x 4 local devices") for the message."""
  shape = list(shape)
  where = f" ({hosts})" if hosts else ""
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"Mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}.")
  if shape.count(-1) > 1:
    raise ValueError(f"Mesh shape {tuple(shape)} may hold at most one -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"Cannot fill mesh {tuple(shape)} with {num_devices} devices{where}.")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f"Mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices but "
                     f"{num_devices} are in use{where}; set MeshConfig.shape (MESH_SHAPE), "
                     f"MeshConfig.num_devices{' or the number of hosts' if hosts else ''}.")
  return tuple(shape)


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Classic (Auto axis types) mesh over the first `num_devices` devices (default: all of the
  run's, every process's).

  `devices` may be another target's, e.g. a TPU slice's compile-only devices for a dry run; they
  are laid out with `mesh_utils` so that, on a real slice, neighbouring mesh entries are
  neighbouring chips (multi-slice: the data axis spans the slices, DCN outermost).
  """
  hosts = ""
  if devices is None and jax.process_count() > 1:
    hosts = f"{jax.process_count()} processes x {jax.local_device_count()} local devices"
    if config.num_devices not in (None, jax.device_count()):
      raise ValueError(f"MeshConfig.num_devices={config.num_devices} in a run of {hosts}: every "
                       "process must hold its part of the mesh; leave num_devices unset (all "
                       f"{jax.device_count()} devices).")
  devices = list(jax.devices() if devices is None else devices)
  if config.num_devices is not None:
    devices = devices[:config.num_devices]
  shape = resolve_mesh_shape(config.shape, len(devices), hosts)
  return Mesh(_device_grid(devices, shape), MESH_AXES)


def _device_grid(devices, shape):
  """`devices` arranged as an array of `shape`, in the platform's physical order where known."""
  if devices[0].platform != "tpu":
    return np.asarray(devices).reshape(shape)
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  if num_slices > 1:
    if shape[0] % num_slices:
      raise ValueError(f"Mesh shape {tuple(shape)} over {num_slices} slices: the data axis "
                       f"({shape[0]}) must be a multiple of the number of slices, since only "
                       "data parallelism crosses the slow links between slices.")
    per_slice = (shape[0] // num_slices, *shape[1:])
    return mesh_utils.create_hybrid_device_mesh(
        per_slice, (num_slices,) + (1,) * (len(shape) - 1), devices,
        allow_split_physical_axes=True)
  return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)


@contextlib.contextmanager
def mesh_context(mesh: Mesh, rules):
  """The mesh and logical rules every traced model call runs under.

  The legacy `with mesh:` (flax's partitioned initialisers of `DenseGeneral` break under
  `jax.set_mesh`), and the same mesh handed to the attention dispatch, which wraps the Pallas
  kernels in `shard_map` over it.
  """
  with mesh, nn.logical_axis_rules(rules), attention_lib.kernel_mesh(mesh):
    yield


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
