"""`jax.distributed` start-up shared by every binary: explicit flags, SLURM, a TPU VM, or one process.

  python -m mixjax.train --gin_file=… --coordinator_address=10.0.0.2:8476 --num_processes=4 --process_id=1

The flags carry `jax.distributed.initialize`'s argument names. Under SLURM (`srun`) and on a multi-host TPU
VM slice no flags are needed: jax reads the cluster from `SLURM_*` variables or the TPU metadata server.
Which branch was taken is logged, so a hang at start-up can be traced to the right cause.
"""

import argparse
import dataclasses
import glob
from absl import logging
import os
import sys
from typing import Mapping

import jax



# Preemption restarts bring workers up minutes apart; jax's default (300 s) is too short for that.
DEFAULT_INITIALIZATION_TIMEOUT_S = 1200
# A SIGKILLed peer stops its heartbeats; the survivors fail after about this long instead of hanging.
DEFAULT_HEARTBEAT_TIMEOUT_S = 100

BRANCH_FLAGS, BRANCH_SLURM, BRANCH_TPU_VM, BRANCH_SINGLE = "flags", "slurm", "tpu_vm", "single_process"
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


class DistributedSetupError(ValueError):
  """The processes of a run do not add up to what the flags, the cluster or the mesh say."""


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  coordinator_address: str | None = None   # HOST:PORT of process 0
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout_s: int = DEFAULT_INITIALIZATION_TIMEOUT_S
  heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-process flags every binary accepts."""
  group = parser.add_argument_group("multi-process (jax.distributed)")
  group.add_argument("--coordinator_address", default=None,
                     help="HOST:PORT of process 0 (not needed under SLURM or on a TPU VM)")
  group.add_argument("--num_processes", type=int, default=None, help="processes in the run")
  group.add_argument("--process_id", type=int, default=None, help="this process, 0..N-1")
  group.add_argument("--initialization_timeout", type=int, default=DEFAULT_INITIALIZATION_TIMEOUT_S,
                     help="seconds to wait for every process to join (default %(default)s)")
  group.add_argument("--heartbeat_timeout", type=int, default=DEFAULT_HEARTBEAT_TIMEOUT_S,
                     help="seconds after which a silent peer counts as dead (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> DistributedConfig:
  return DistributedConfig(
      coordinator_address=getattr(args, "coordinator_address", None),
      num_processes=getattr(args, "num_processes", None),
      process_id=getattr(args, "process_id", None),
      initialization_timeout_s=getattr(args, "initialization_timeout",
                                       DEFAULT_INITIALIZATION_TIMEOUT_S),
      heartbeat_timeout_s=getattr(args, "heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT_S))


def _looks_like_tpu_vm(environ: Mapping[str, str]) -> bool:
  """A Cloud TPU VM host: TPU device files, or the worker list a multi-host slice sets."""
  if environ.get("TPU_SKIP_MDS_QUERY") and not environ.get("TPU_WORKER_HOSTNAMES", "").count(","):
    return False  # the compile-only set-up of AOT dry runs, not a real slice
  if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  if "," in environ.get("TPU_WORKER_HOSTNAMES", ""):
    return True
  return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def detect(config: DistributedConfig, environ: Mapping[str, str] = os.environ) -> str:
  """Which start-up applies: explicit flags, SLURM, a TPU VM, or a single process (no init)."""
  given = {f: getattr(config, f) for f in ("coordinator_address", "num_processes", "process_id")}
  if any(v is not None for v in given.values()):
    missing = [f"--{f}" for f, v in given.items() if v is None]
    if missing:
      raise DistributedSetupError(
          f"Multi-process flags are incomplete: {', '.join(missing)} missing. Give all three "
          "(--coordinator_address=HOST:PORT --num_processes=N --process_id=I), or none of them "
          "under SLURM or on a TPU VM.")
    _check_flags(config)
    return BRANCH_FLAGS
  if all(v in environ for v in _SLURM_VARS) and int(environ["SLURM_NTASKS"]) > 1:
    return BRANCH_SLURM
  if _looks_like_tpu_vm(environ):
    return BRANCH_TPU_VM
  return BRANCH_SINGLE


def _check_flags(config: DistributedConfig) -> None:
  host, sep, port = config.coordinator_address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise DistributedSetupError(
        f"--coordinator_address={config.coordinator_address!r} is not HOST:PORT (e.g. "
        "10.0.0.2:8476, the address of process 0).")
  if config.num_processes < 1:
    raise DistributedSetupError(f"--num_processes={config.num_processes} must be >= 1.")
  if not 0 <= config.process_id < config.num_processes:
    raise DistributedSetupError(
        f"--process_id={config.process_id} must be in [0, {config.num_processes - 1}] for "
        f"--num_processes={config.num_processes}.")


def initialize(config: DistributedConfig | None = None,
               environ: Mapping[str, str] = os.environ) -> str:
  """Joins the run's processes (once per process); returns the branch taken."""
  config = config or DistributedConfig()
  branch = detect(config, environ)
  if jax.distributed.is_initialized():
    logging.info("jax.distributed already initialised (process %d of %d).", jax.process_index(),
             jax.process_count())
    return branch
  timeouts = dict(initialization_timeout=config.initialization_timeout_s,
                  heartbeat_timeout_seconds=config.heartbeat_timeout_s)
  if branch == BRANCH_SINGLE:
    logging.info("Single process: no jax.distributed initialisation.")
    return branch
  if branch == BRANCH_FLAGS:
    # CPU processes (tests, loopback runs) talk through gloo; GPU and TPU ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info("jax.distributed from flags: process %d of %d, coordinator %s.", config.process_id,
             config.num_processes, config.coordinator_address)
    jax.distributed.initialize(config.coordinator_address, config.num_processes,
                               config.process_id, **timeouts)
    check_layout(expected_processes=config.num_processes)
  elif branch == BRANCH_SLURM:
    local_device_ids = slurm_local_device_ids(environ)
    logging.info("jax.distributed from the SLURM environment; local GPUs %s.", local_device_ids)
    jax.distributed.initialize(local_device_ids=local_device_ids, **timeouts)
  else:
    logging.info("jax.distributed from the TPU VM environment (jax's cluster detection).")
    jax.distributed.initialize(**timeouts)
  # One console line per process (absl's INFO is hidden outside absl.app): which branch, who we are.
  print(f"mixjax: jax.distributed from {branch}: process {jax.process_index()} of "
        f"{jax.process_count()}, {jax.local_device_count()} local of {jax.device_count()} devices.",
        file=sys.stderr, flush=True)
  return branch


def _tasks_on_this_node(environ: Mapping[str, str]) -> int:
  """SLURM's tasks on this node, from `SLURM_STEP_TASKS_PER_NODE` (e.g. "8(x3),4") and the node id."""
  spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE") or "1"
  counts = []
  for part in spec.split(","):
    count, _, repeat = part.partition("(x")
    counts += [int(count)] * int(repeat.rstrip(")") or 1)
  node = int(environ.get("SLURM_NODEID", 0))
  return counts[node] if node < len(counts) else counts[-1]


def slurm_local_device_ids(environ: Mapping[str, str]) -> list[int] | None:
  """The GPUs this SLURM task should use, or None for jax's default.

  jax's own default under SLURM is GPU `SLURM_LOCALID` alone: right for one task per GPU on a
  node whose tasks all see every GPU, but one task per node would then use 1 GPU of 8, and a task
  bound to its own GPUs (`--gpus-per-task`, `--gpu-bind`) would ask for a GPU it cannot see. So:
  a task bound to its GPUs, or alone on its node, uses all it sees; tasks sharing a node's GPUs
  split them evenly in `SLURM_LOCALID` order.
  """
  visible = environ.get("CUDA_VISIBLE_DEVICES")
  num_visible = (len([d for d in visible.split(",") if d.strip()]) if visible
                 else int(environ.get("SLURM_GPUS_ON_NODE", 0)))
  if not num_visible:
    return None  # no GPUs to place (a CPU cluster): jax's default
  on_node = int(environ.get("SLURM_GPUS_ON_NODE", 0))
  tasks = _tasks_on_this_node(environ)
  bound = "SLURM_GPUS_PER_TASK" in environ or (on_node and num_visible < on_node)
  if tasks <= 1 or bound:
    return list(range(num_visible))
  if num_visible % tasks:
    raise DistributedSetupError(
        f"{num_visible} GPUs on this node do not split evenly over its {tasks} SLURM tasks: use "
        "one task per node or per GPU (--ntasks-per-node), or --gpus-per-task.")
  per_task = num_visible // tasks
  first = int(environ.get("SLURM_LOCALID", 0)) * per_task
  return list(range(first, first + per_task))


def check_layout(expected_processes: int | None = None, expected_devices: int | None = None) -> None:
  """Raises naming both numbers when the joined processes or devices differ from the expected."""
  if expected_processes is not None and jax.process_count() != expected_processes:
    raise DistributedSetupError(
        f"{jax.process_count()} processes joined but {expected_processes} were expected: start one "
        "process per host (on a TPU VM: --worker=all), all with the same --num_processes.")
  if expected_devices is not None and jax.device_count() != expected_devices:
    raise DistributedSetupError(
        f"The mesh needs {expected_devices} devices but the run has {jax.device_count()} "
        f"({jax.process_count()} processes x {jax.local_device_count()} local): change "
        "MESH_SHAPE or the number of hosts/devices per host.")
