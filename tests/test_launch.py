"""Launch helpers without a cluster: the start-up branch each environment takes, and the exact gcloud /
srun commands the TPU VM and SLURM scripts run (their --dry-run output)."""

import os
import pathlib
import subprocess

import pytest

from mixjax.launch import distributed
from mixjax.launch import tpu_vm

REPO = pathlib.Path(__file__).resolve().parents[1]
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[003-004]", "SLURM_NTASKS": "2",
             "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


def _flags(**kw):
  return distributed.DistributedConfig(**kw)


def test_detect_takes_the_branch_the_environment_implies():
  full = _flags(coordinator_address="10.0.0.2:8476", num_processes=4, process_id=3)
  assert distributed.detect(full, {}) == distributed.BRANCH_FLAGS
  assert distributed.detect(full, SLURM_ENV) == distributed.BRANCH_FLAGS  # flags win
  assert distributed.detect(_flags(), SLURM_ENV) == distributed.BRANCH_SLURM
  assert distributed.detect(_flags(), {**SLURM_ENV, "SLURM_NTASKS": "1"}) == "single_process"
  assert distributed.detect(_flags(), {"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}) == "tpu_vm"
  # The compile-only AOT set-up (one "worker", metadata queries off) is not a slice.
  assert distributed.detect(_flags(), {"TPU_SKIP_MDS_QUERY": "1",
                                        "TPU_WORKER_HOSTNAMES": "localhost"}) == "single_process"


@pytest.mark.parametrize("kw, message", [
    (dict(coordinator_address="10.0.0.2:8476"), "--num_processes, --process_id missing"),
    (dict(coordinator_address="10.0.0.2", num_processes=2, process_id=0), "is not HOST:PORT"),
    (dict(coordinator_address="h:8476", num_processes=2, process_id=2), r"must be in \[0, 1\]"),
    (dict(coordinator_address="h:8476", num_processes=0, process_id=0), "must be >= 1"),
])
def test_bad_flags_are_named(kw, message):
  with pytest.raises(distributed.DistributedSetupError, match=message):
    distributed.detect(_flags(**kw), {})


def test_single_process_initialise_is_a_no_op_and_layout_checks_name_both_numbers():
  import jax
  assert distributed.initialize(_flags(), {}) == "single_process"
  assert not jax.distributed.is_initialized()
  distributed.check_layout(1, jax.device_count())
  with pytest.raises(distributed.DistributedSetupError, match="1 processes joined but 2"):
    distributed.check_layout(expected_processes=2)
  with pytest.raises(distributed.DistributedSetupError,
                     match=f"needs 64 devices but the run has {jax.device_count()}"):
    distributed.check_layout(expected_devices=64)


def _dry(*argv, capsys):
  assert tpu_vm.main([argv[0], "--dry-run", *argv[1:]]) == 0
  return [line.removeprefix("[dry-run] ") for line in capsys.readouterr().out.splitlines()]


def test_tpu_vm_create_commands(capsys):
  base = ["create", "--name=mj", "--zone=us-west4-a", "--project=p1"]
  assert _dry(*base, "--tpu=v5e-64", capsys=capsys) == [
      "gcloud compute tpus tpu-vm create mj --zone=us-west4-a --project=p1 "
      "--accelerator-type=v5litepod-64 --version=v2-alpha-tpuv5-lite"]
  assert _dry(*base, "--tpu=v4-32", "--spot", capsys=capsys)[0].endswith(
      "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot")
  assert _dry(*base, "--tpu=v5p-128", "--reserved", capsys=capsys)[0].endswith(
      "--accelerator-type=v5p-128 --version=v2-alpha-tpuv5 --reserved")
  assert _dry(*base, "--tpu=v6e-16", "--queued", "--spot", capsys=capsys) == [
      "gcloud compute tpus queued-resources create mj-qr --zone=us-west4-a --project=p1 "
      "--node-id=mj --accelerator-type=v6e-16 --runtime-version=v2-alpha-tpuv6e --spot"]
  assert _dry(*base, "--tpu=v5e-8", "--queued", "--best_effort", capsys=capsys)[0].endswith(
      "--best-effort")


def test_tpu_vm_setup_launch_logs_kill_and_delete_commands(capsys):
  scope = ["--name=mj", "--zone=z"]
  ssh = "gcloud compute tpus tpu-vm ssh mj --zone=z --worker=all"
  setup = _dry("setup", *scope, "--repo=https://example.org/mixjax.git", capsys=capsys)
  assert setup == [f"{ssh} '--command=pip install -U '\"'\"'mixjax[tpu] @ "
                   "git+https://example.org/mixjax.git'\"'\"''"]
  launch = _dry("launch", *scope, "--workdir=/opt/run", "--", "--gin_file=gin/quickstart.gin",
                "--gin.TRAIN_STEPS=10", capsys=capsys)
  assert launch == [f"{ssh} '--command=cd /opt/run && TPU_STDERR_LOG_LEVEL=2 python3 -m "
                    "mixjax.train --gin_file=gin/quickstart.gin --gin.TRAIN_STEPS=10 > "
                    "/tmp/mixjax-$(hostname).log 2>&1'"]
  assert "lsof -t /dev/accel* /dev/vfio/*" in _dry("kill-stale", *scope, capsys=capsys)[0]
  assert "libtpu_lockfile" in _dry("kill-stale", *scope, capsys=capsys)[0]
  assert _dry("logs", *scope, "--lines=7", capsys=capsys) == [
      f"{ssh} '--command=tail -n 7 /tmp/mixjax-$(hostname).log'"]
  assert _dry("delete", *scope, capsys=capsys) == [
      "gcloud compute tpus tpu-vm delete mj --zone=z --quiet --async"]
  assert _dry("delete", *scope, "--queued", capsys=capsys) == [
      "gcloud compute tpus queued-resources delete mj-qr --zone=z --force --quiet --async"]
  assert _dry("status", *scope, capsys=capsys) == [
      "gcloud compute tpus tpu-vm describe mj --zone=z '--format=value(state)'"]


def test_tpu_vm_retry_runs_create_kill_setup_launch_in_order(capsys):
  lines = _dry("retry", "--name=mj", "--zone=z", "--tpu=v5e-64", "--spot", "--install=pip install mixjax",
               "--", "--gin_file=gin/quickstart.gin", capsys=capsys)
  verbs = [line.split()[4] if line.startswith("gcloud") else line for line in lines]
  assert verbs == ["attempt 1 of 5", "create", "ssh", "ssh", "ssh"]
  assert "--spot" in lines[1] and "lsof" in lines[2] and "pip install mixjax" in lines[3]
  assert "python3 -m mixjax.train --gin_file=gin/quickstart.gin" in lines[4]


@pytest.mark.parametrize("argv, message", [
    (["create", "--tpu=v7-8"], "is not GENERATION-CHIPS"),
    (["create"], "create needs --tpu"),
    (["create", "--tpu=v5e-8", "--best_effort"], "only for queued resources"),
    (["launch"], "launch needs the binary's flags after --"),
    (["setup"], "setup needs --repo=GIT_URL"),
    (["retry", "--max_attempts=0", "--", "--gin_file=x.gin"], "must be >= 1"),
])
def test_tpu_vm_bad_arguments_are_named(argv, message, capsys, monkeypatch):
  monkeypatch.delenv("MIXJAX_REPO", raising=False)
  argv = [argv[0], "--name=mj", "--zone=z", *argv[1:]]
  assert tpu_vm.main(argv) == 2
  assert message in capsys.readouterr().err


def test_slurm_script_dry_run_prints_the_srun_line():
  env = dict(os.environ, GIN_FILE="gin/quickstart.gin", SLURM_JOB_ID="77")
  out = subprocess.run(["bash", str(REPO / "scripts/slurm/train.sbatch"), "--dry-run",
                        "--gin.TRAIN_STEPS=5"], env=env, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == ("[dry-run] srun --kill-on-bad-exit=1 --output=mixjax-77-%t.log "
                                "python3 -m mixjax.train --gin_file=gin/quickstart.gin "
                                "--gin.TRAIN_STEPS=5")
  missing = subprocess.run(["bash", str(REPO / "scripts/slurm/train.sbatch"), "--dry-run"],
                           env={k: v for k, v in env.items() if k != "GIN_FILE"},
                           capture_output=True, text=True)
  assert missing.returncode != 0 and "set GIN_FILE" in missing.stderr


# A stand-in `gcloud` for the retry loop: it keeps the slice's state in a file, logs every call, and
# fails the first `launch` by preempting the slice (or, with FAKE_HEALTHY_FAILURE, on a healthy one).
FAKE_GCLOUD = r'''#!/usr/bin/env python3
import json, os, sys
state_file, log = os.environ["FAKE_STATE"], os.environ["FAKE_LOG"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {"slice": "", "launches": 0}
args = sys.argv[1:]
with open(log, "a") as f:
  f.write(" ".join(args) + "\n")
verb, code = args[3], 0
if verb == "create":
  code = 1 if state["slice"] else 0
  state["slice"] = state["slice"] or "CREATING"
elif verb == "describe":
  if not state["slice"]:
    code = 1
  else:
    print(state["slice"])
    state["slice"] = "READY" if state["slice"] == "CREATING" else state["slice"]
elif verb == "delete":
  state["slice"] = ""
elif verb == "ssh" and "mixjax.train" in args[-1]:
  state["launches"] += 1
  if state["launches"] == 1:
    code = 255
    if not os.environ.get("FAKE_HEALTHY_FAILURE"):
      state["slice"] = "PREEMPTED"
json.dump(state, open(state_file, "w"))
sys.exit(code)
'''


def _fake_gcloud(tmp_path, monkeypatch, healthy_failure=False):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_STATE", str(tmp_path / "state.json"))
  monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.log"))
  if healthy_failure:
    monkeypatch.setenv("FAKE_HEALTHY_FAILURE", "1")
  return tmp_path / "calls.log"


def _calls(log):
  """Each gcloud call as (verb, what it ran on the workers or its flags)."""
  out = []
  for line in log.read_text().splitlines():
    words = line.split()
    what = ("launch" if "mixjax.train" in line else "setup" if "pip install" in line
            else "kill-stale" if "lsof" in line else "") if words[3] == "ssh" else ""
    out.append((words[3], what or ("async" if "--async" in words else "")))
  return out


def test_tpu_vm_retry_recreates_a_preempted_slice_and_launches_again(tmp_path, monkeypatch,
                                                                     capsys):
  log = _fake_gcloud(tmp_path, monkeypatch)
  argv = ["retry", "--name=mj", "--zone=z", "--tpu=v5e-64", "--spot", "--poll=0",
          "--install=pip install mixjax", "--", "--gin_file=gin/quickstart.gin"]
  assert tpu_vm.main(argv) == 0
  up = [("create", ""), ("describe", ""), ("describe", ""), ("ssh", "kill-stale"),
        ("ssh", "setup"), ("ssh", "launch")]
  # The first launch dies with its preempted slice; the loop waits for the deletion (no --async)
  # before re-creating the same name.
  assert _calls(log) == up + [("describe", ""), ("delete", "")] + up
  out = capsys.readouterr().out
  assert "Slice state PREEMPTED: preempted" in out and "attempt 2 of 5" in out
  assert "CREATING; waiting" in out


def test_tpu_vm_retry_stops_when_the_run_fails_on_a_healthy_slice(tmp_path, monkeypatch, capsys):
  log = _fake_gcloud(tmp_path, monkeypatch, healthy_failure=True)
  argv = ["retry", "--name=mj", "--zone=z", "--tpu=v4-32", "--poll=0",
          "--install=pip install mixjax", "--", "--gin_file=gin/quickstart.gin"]
  assert tpu_vm.main(argv) == 1
  assert ("delete", "") not in _calls(log) and _calls(log)[-1] == ("describe", "")
  assert "failed on a healthy slice (state READY): not a preemption" in capsys.readouterr().err


@pytest.mark.parametrize("env, ids", [
    # One task per node (the sbatch default): all 8 GPUs, not jax's default of GPU 0 alone.
    ({"SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_NODEID": "2", "SLURM_LOCALID": "0",
      "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, list(range(8))),
    # One task per GPU, every task seeing the node's 8: GPU LOCALID (jax's own rule).
    ({"SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_LOCALID": "5", "SLURM_GPUS_ON_NODE": "8",
      "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, [5]),
    # Two tasks sharing 8 GPUs: four each.
    ({"SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_LOCALID": "1", "SLURM_GPUS_ON_NODE": "8"},
     [4, 5, 6, 7]),
    # Tasks bound to their own GPUs (--gpus-per-task=2): each uses both it sees.
    ({"SLURM_STEP_TASKS_PER_NODE": "4", "SLURM_LOCALID": "3", "SLURM_GPUS_PER_TASK": "2",
      "CUDA_VISIBLE_DEVICES": "6,7"}, [0, 1]),
    ({"SLURM_STEP_TASKS_PER_NODE": "8", "SLURM_LOCALID": "3", "SLURM_GPUS_ON_NODE": "8",
      "CUDA_VISIBLE_DEVICES": "3"}, [0]),
    # A CPU cluster: jax's default.
    ({"SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_LOCALID": "1"}, None),
])
def test_slurm_tasks_get_the_gpus_they_can_see(env, ids):
  assert distributed.slurm_local_device_ids(env) == ids


def test_slurm_gpus_that_do_not_split_over_the_tasks_are_named():
  env = {"SLURM_STEP_TASKS_PER_NODE": "3", "SLURM_LOCALID": "0", "SLURM_GPUS_ON_NODE": "8"}
  with pytest.raises(distributed.DistributedSetupError, match="8 GPUs on this node do not split "
                                                              "evenly over its 3 SLURM tasks"):
    distributed.slurm_local_device_ids(env)
