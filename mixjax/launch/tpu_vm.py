"""Cloud TPU VM life cycle for a mixjax run: create, setup, launch, kill-stale, status, logs, delete, and
a preemption retry loop. Every command is a `gcloud` call; `--dry-run` prints them instead of running.

  python -m mixjax.launch.tpu_vm create --name=mj --zone=us-west4-a --tpu=v5e-64 --spot --dry-run
  python -m mixjax.launch.tpu_vm launch --name=mj --zone=us-west4-a \\
      -- --gin_file=gin/quickstart.gin --gin.MODEL_DIR="'/mnt/runs/run'"

`launch` runs the same command on every worker (`--worker=all`; running it on one worker deadlocks at
start-up, waiting for the others) and each worker logs to its own file. The run directory must be a
directory every host mounts at the same path (a Filestore/NFS share): each host saves its shards of
the checkpoint there (a gs:// URL is refused: see mixjax.training.run_dir.check_local).
"""

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time

# Chip generation -> (gcloud accelerator-type prefix, default TPU VM runtime image).
GENERATIONS = {
    "v4": ("v4", "tpu-ubuntu2204-base"),
    "v5e": ("v5litepod", "v2-alpha-tpuv5-lite"),
    "v5litepod": ("v5litepod", "v2-alpha-tpuv5-lite"),
    "v5p": ("v5p", "v2-alpha-tpuv5"),
    "v6e": ("v6e", "v2-alpha-tpuv6e"),
}

WORKER_LOG = "/tmp/mixjax-$(hostname).log"
# Processes holding the chips after a crash keep the next run from starting ("TPU in use").
KILL_STALE = ("sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u | xargs -r sudo kill -9; "
              "sudo rm -f /tmp/libtpu_lockfile")


class TpuVmError(ValueError):
  """A bad TPU name or an inconsistent combination of options."""


def accelerator_type(tpu: str) -> tuple[str, str]:
  """`v5e-64` (or gcloud's own `v5litepod-64`) -> (`v5litepod-64`, its default runtime version)."""
  match = re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", tpu)
  if not match:
    raise TpuVmError(f"--tpu={tpu!r} is not GENERATION-CHIPS_OR_CORES with GENERATION one of "
                     f"{sorted(GENERATIONS)} (e.g. v5e-64, v4-32, v5p-128, v6e-16).")
  prefix, runtime = GENERATIONS[match.group(1)]
  return f"{prefix}-{match.group(2)}", runtime


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str
  zone: str
  project: str | None = None
  tpu: str | None = None              # e.g. v5e-64
  runtime_version: str | None = None  # default: the generation's (GENERATIONS)
  capacity: str = "on_demand"         # on_demand | spot | reserved | best_effort (queued only)
  queued: bool = False                # create through a queued resource (waits for capacity)

  def _scope(self) -> list[str]:
    return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])

  def _tpu_vm(self, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, self.name, *self._scope(), *rest]

  def _queued(self, verb: str, *rest: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "queued-resources", verb, f"{self.name}-qr",
            *self._scope(), *rest]

  def create(self) -> list[str]:
    if not self.tpu:
      raise TpuVmError("create needs --tpu (e.g. --tpu=v5e-64).")
    accel, default_runtime = accelerator_type(self.tpu)
    runtime = self.runtime_version or default_runtime
    capacity = {"on_demand": [], "spot": ["--spot"], "reserved": ["--reserved"],
                "best_effort": ["--best-effort"]}
    if self.capacity not in capacity:
      raise TpuVmError(f"--capacity={self.capacity!r}: use one of {sorted(capacity)}.")
    if self.queued:
      return self._queued("create", f"--node-id={self.name}", f"--accelerator-type={accel}",
                          f"--runtime-version={runtime}", *capacity[self.capacity])
    if self.capacity == "best_effort":
      raise TpuVmError("--capacity=best_effort exists only for queued resources: add --queued.")
    return self._tpu_vm("create", f"--accelerator-type={accel}", f"--version={runtime}",
                        *capacity[self.capacity])

  def on_all_workers(self, command: str) -> list[str]:
    return self._tpu_vm("ssh", "--worker=all", f"--command={command}")

  def setup(self, install: str) -> list[str]:
    return self.on_all_workers(install)

  def launch(self, binary_args: list[str], module: str = "mixjax.train",
             workdir: str | None = None) -> list[str]:
    command = " ".join(["python3", "-m", module, *map(shlex.quote, binary_args)])
    cd = f"cd {shlex.quote(workdir)} && " if workdir else ""
    # TPU_STDERR_LOG_LEVEL keeps libtpu's per-chip chatter out of the worker logs.
    return self.on_all_workers(f"{cd}TPU_STDERR_LOG_LEVEL=2 {command} > {WORKER_LOG} 2>&1")

  def kill_stale(self) -> list[str]:
    return self.on_all_workers(KILL_STALE)

  def logs(self, lines: int = 50) -> list[str]:
    return self.on_all_workers(f"tail -n {int(lines)} {WORKER_LOG}")

  def status(self) -> list[str]:
    if self.queued:
      return self._queued("describe", "--format=value(state.state)")
    return self._tpu_vm("describe", "--format=value(state)")

  def delete(self, wait: bool = False) -> list[str]:
    """`wait`: return once it is gone (the retry loop re-creates the same name right after)."""
    rest = () if wait else ("--async",)
    if self.queued:
      return self._queued("delete", "--force", "--quiet", *rest)
    return self._tpu_vm("delete", "--quiet", *rest)


def _run(command: list[str], dry_run: bool, check: bool = True) -> subprocess.CompletedProcess:
  print(("[dry-run] " if dry_run else "+ ") + shlex.join(command), flush=True)
  if dry_run:
    return subprocess.CompletedProcess(command, 0, "", "")
  return subprocess.run(command, check=check, text=True, capture_output=False)


def install_command(repo: str | None, install: str | None) -> str:
  """What `setup` runs on every worker: `install` as given, else pip from the git repo."""
  if install:
    return install
  if not repo:
    raise TpuVmError("setup needs --repo=GIT_URL (or MIXJAX_REPO in the environment), or "
                     "--install=COMMAND.")
  return f"pip install -U {shlex.quote(f'mixjax[tpu] @ git+{repo}')}"


# gcloud's states: a TPU VM's (READY …) or a queued resource's (ACTIVE …).
UP = ("READY", "ACTIVE")
COMING_UP = ("CREATING", "ACCEPTED", "PROVISIONING", "WAITING_FOR_RESOURCES", "RESTARTING",
             "REPAIRING")


def slice_state(slice_: Slice) -> str:
  """The slice's state as gcloud reports it; '' when it does not exist (or cannot be read)."""
  out = subprocess.run(slice_.status(), capture_output=True, text=True)
  return out.stdout.strip() if out.returncode == 0 else ""


def wait_until_up(slice_: Slice, poll_s: float) -> str:
  """Polls while the slice is being created or waits for capacity; returns the state it settles in."""
  while (state := slice_state(slice_)) in COMING_UP:
    print(f"slice {slice_.name}: {state}; waiting {poll_s:.0f} s", flush=True)
    time.sleep(poll_s)
  return state


def retry(slice_: Slice, binary_args: list[str], max_attempts: int, dry_run: bool, install: str,
          module: str = "mixjax.train", workdir: str | None = None, poll_s: float = 60.0) -> int:
  """Create, set up and launch; after a preemption (setup or launch fails and the slice is gone or
  not up), delete, re-create and launch the same command, which resumes from the run's MODEL_DIR.
  A failure on a healthy slice is the run's own: it returns 1 without re-creating anything."""
  for attempt in range(1, max_attempts + 1):
    print(f"attempt {attempt} of {max_attempts}", flush=True)
    _run(slice_.create(), dry_run, check=False)  # fails harmlessly if the slice is already there
    state = UP[0] if dry_run else wait_until_up(slice_, poll_s)
    if state in UP:
      _run(slice_.kill_stale(), dry_run, check=False)
      if (_run(slice_.setup(install), dry_run, check=False).returncode == 0 and
          _run(slice_.launch(binary_args, module, workdir), dry_run, check=False).returncode == 0):
        return 0
      state = slice_state(slice_)  # (a dry run never gets here: its commands all "succeed")
      if state in UP:
        print(f"setup or the run failed on a healthy slice (state {state}): not a preemption; "
              "see `logs`.", file=sys.stderr)
        return 1
    print(f"Slice state {state or 'gone'}: preempted or not granted; deleting and re-creating.",
          flush=True)
    _run(slice_.delete(wait=True), dry_run, check=False)
  print(f"Gave up after {max_attempts} attempts; rerun `retry` to go on (the run resumes from its "
        "MODEL_DIR).", file=sys.stderr)
  return 1


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="mixjax.launch.tpu_vm", description=__doc__.split("\n")[0])
  parser.add_argument("action", choices=["create", "setup", "launch", "kill-stale", "status", "logs",
                                         "delete", "retry"])
  parser.add_argument("--name", required=True, help="TPU VM (node) name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--tpu", default=None, help="slice, e.g. v5e-64, v4-32, v5p-128")
  parser.add_argument("--runtime_version", default=None)
  capacity = parser.add_mutually_exclusive_group()
  for name in ("spot", "reserved", "best_effort"):
    capacity.add_argument(f"--{name}", dest="capacity", action="store_const", const=name)
  parser.add_argument("--queued", action="store_true", help="create through a queued resource")
  parser.add_argument("--repo", default=os.environ.get("MIXJAX_REPO"),
                      help="git URL setup installs mixjax from (default: $MIXJAX_REPO)")
  parser.add_argument("--install", default=None, help="setup's install command (overrides --repo)")
  parser.add_argument("--module", default="mixjax.train", help="binary that launch runs")
  parser.add_argument("--workdir", default=None, help="directory on the workers to run in")
  parser.add_argument("--lines", type=int, default=50, help="log lines per worker")
  parser.add_argument("--max_attempts", type=int, default=5, help="retry: re-creations allowed")
  parser.add_argument("--poll", type=float, default=60.0,
                      help="retry: seconds between state checks while the slice comes up")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print the gcloud commands instead of running them")
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  split = argv.index("--") if "--" in argv else len(argv)  # after `--`: the binary's own flags
  args = _parser().parse_args(argv[:split])
  args.binary_args = argv[split + 1:]
  slice_ = Slice(args.name, args.zone, args.project, args.tpu, args.runtime_version,
                 args.capacity or "on_demand", args.queued)
  try:
    if args.action in ("launch", "retry") and not args.binary_args:
      raise TpuVmError(f"{args.action} needs the binary's flags after --, e.g. -- "
                       "--gin_file=gin/quickstart.gin --gin.MODEL_DIR=\"'/mnt/runs/run'\"")
    if args.action == "retry":
      if args.max_attempts < 1:
        raise TpuVmError(f"--max_attempts={args.max_attempts} must be >= 1.")
      return retry(slice_, args.binary_args, args.max_attempts, args.dry_run,
                   install_command(args.repo, args.install), args.module, args.workdir,
                   args.poll)
    command = {"create": slice_.create,
               "setup": lambda: slice_.setup(install_command(args.repo, args.install)),
               "launch": lambda: slice_.launch(args.binary_args, args.module, args.workdir),
               "kill-stale": slice_.kill_stale, "status": slice_.status,
               "logs": lambda: slice_.logs(args.lines), "delete": slice_.delete}[args.action]()
  except TpuVmError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return _run(command, args.dry_run, check=False).returncode


if __name__ == "__main__":
  sys.exit(main())
