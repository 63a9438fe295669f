"""Multi-host training with real processes on loopback (gloo collectives, 2 CPU devices each).

The same run as 2 processes x 2 devices and as 1 process x 4 devices (same mesh) logs the same losses; a
checkpoint written by either resumes on the other with the later losses of an uninterrupted run; only
process 0 writes the run directory; a SIGKILLed worker ends the run within the heartbeat timeout, and the
rerun resumes from the newest complete checkpoint; the eval and infer binaries on 2 processes give
the logged eval line and one device's completions; a mesh the processes' devices cannot fill is
one message naming both numbers.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from mixjax import infer
from mixjax.training import peers

REPO = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 4
BASE_ARGS = ["--gin_file=gin/runs/tiny.gin", "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_PERIOD=2",
             "--gin.EVAL_PERIOD=2", "--gin.MESH_SHAPE=(2, 2, 1)",
             "--gin.RunConfig.progress_bar=False"]
PROMPTS = ["Q: 12 + 30 =", "def f(x):", "The"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_argv(model_dir, extra=()):
  """The training binary's module and flags for a run in `model_dir`."""
  return ["mixjax.train", *BASE_ARGS, f"--gin.MODEL_DIR='{model_dir}'", *extra]


def _start(argv, num_processes, heartbeat_timeout=None):
  """Starts `python -m argv…` as `num_processes` processes sharing DEVICES CPU devices."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(DEVICES // num_processes),
             TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(sys.path))
  args = [sys.executable, "-m", *argv]
  if num_processes > 1:
    port = _free_port()
    args += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}"]
    if heartbeat_timeout:
      args.append(f"--heartbeat_timeout={heartbeat_timeout}")
  return [subprocess.Popen(args + ([f"--process_id={i}"] if num_processes > 1 else []), cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for i in range(num_processes)]


def _finish(procs, timeout=600):
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs[0]


def _run(model_dir, num_processes, extra=()):
  return _finish(_start(_train_argv(model_dir, extra), num_processes))


def _metrics(model_dir):
  return [json.loads(line) for line in (pathlib.Path(model_dir) / "metrics.jsonl").open()]


def _assert_same_losses(lines, reference, steps):
  ref = {(m["step"], k): v for m in reference for k, v in m.items() if "loss" in k}
  got = {(m["step"], k): v for m in lines for k, v in m.items() if "loss" in k}
  wanted = {key for key in ref if key[0] in steps}
  assert wanted and wanted <= set(got), sorted(wanted - set(got))
  for key in wanted:
    assert got[key] == pytest.approx(ref[key], rel=1e-5), key


def _keep_until(src, dst, step):
  """A copy of a run directory as it was right after the checkpoint at `step`."""
  shutil.copytree(src, dst)
  for ckpt in (dst / "checkpoints").iterdir():
    if ckpt.name.isdigit() and int(ckpt.name) > step:
      shutil.rmtree(ckpt)
  kept = [m for m in _metrics(dst) if m["step"] <= step]
  (dst / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))


def test_two_processes_match_one_and_checkpoints_move_between_process_counts(tmp_path):
  reference = tmp_path / "one_process"
  _run(reference, 1)
  ref = _metrics(reference)
  assert [m["step"] for m in ref if "loss" in m] == [1, 2, 3, 4]

  # 2 processes to step 2, then the same run directory resumes on 1 process.
  two = tmp_path / "two_then_one"
  out = _run(two, 2, ["--gin.RunConfig.stop_at_step=2"])
  assert "jax.distributed from flags: process 0 of 2, 2 local of 4 devices" in out
  lines = _metrics(two)
  assert [m["step"] for m in lines] == [1, 2, 2]  # one writer: no line twice
  assert len(list((two / "tb").iterdir())) == 1   # one TensorBoard writer
  _run(two, 1)
  _assert_same_losses(_metrics(two), ref, steps={1, 2, 3, 4})  # train and eval losses

  # The eval binary on 2 processes restores that run onto their mesh and scores its last
  # checkpoint as training did; one of them writes the result.
  _finish(_start(["mixjax.eval", f"--model_dir={two}", "--step=4"], 2))
  evaluated = json.loads((two / "eval" / "step_4.json").read_text())
  assert evaluated == pytest.approx(next(m for m in ref if m["step"] == 4 and "loss" not in m),
                                    rel=1e-5)  # eval losses and probe accuracies

  # So does the infer binary: each process feeds its devices' rows of a prompt batch, process 0
  # writes the completions, the same as one device generates.
  prompts_file, out_file = tmp_path / "prompts.jsonl", tmp_path / "completions.jsonl"
  prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
  _finish(_start(["mixjax.infer", f"--model_dir={two}", f"--prompts_file={prompts_file}",
                  f"--output={out_file}", "--temperature=0", "--max_new_tokens=8",
                  "--no_progress"], 2))
  completions = [json.loads(line)["completion"] for line in out_file.read_text().splitlines()]
  assert completions == infer.infer(str(two), PROMPTS, max_new_tokens=8)

  # 1 process's checkpoint at step 2 resumes on 2 processes.
  one_then_two = tmp_path / "one_then_two"
  _keep_until(reference, one_then_two, step=2)
  _run(one_then_two, 2)
  lines = _metrics(one_then_two)
  assert [m["step"] for m in lines if "loss" in m] == [1, 2, 3, 4]
  _assert_same_losses(lines, ref, steps={3, 4})


def test_a_killed_worker_ends_the_run_and_the_rerun_resumes(tmp_path):
  model_dir = tmp_path / "run"
  long_run = ["--gin.TRAIN_STEPS=200", "--gin.EVAL_PERIOD=0"]
  procs = _start(_train_argv(model_dir, long_run), 2, heartbeat_timeout=10)
  deadline = time.monotonic() + 300
  while not (model_dir / "checkpoints" / "2").is_dir():  # orbax renames a save in when complete
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint"
    time.sleep(1)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  out = procs[0].communicate(timeout=120)[0]  # raises if the survivor hangs
  assert procs[0].returncode != 0, out[-2000:]
  assert time.monotonic() - killed_at < 120
  # Said in the run's words (not the transport's traceback, not a "disk" error from the save).
  assert "mixjax.train: error: PeerLostError: Process 0 of 2 lost contact" in out, out[-2000:]
  assert "Traceback" not in out and "it resumes from the newest complete checkpoint" in out
  procs[1].communicate()

  newest = max(int(p.name) for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit())
  out = _run(model_dir, 1, long_run + [f"--gin.RunConfig.stop_at_step={newest + 1}"])
  assert f"Resuming from step {newest} of 200" in out  # the newest complete checkpoint
  steps = [m["step"] for m in _metrics(model_dir) if "loss" in m]
  assert steps == list(range(1, newest + 2))  # lines past the checkpoint dropped, none repeated


def test_a_mesh_the_processes_cannot_fill_names_both_numbers(tmp_path):
  procs = _start(_train_argv(tmp_path / "run", ["--gin.MESH_SHAPE=(2, 4, 1)"]), 2)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 1, out[-2000:]
    assert ("Mesh shape (2, 4, 1) needs 8 devices but 4 are in use (2 processes x 2 local "
            "devices)") in out, out[-2000:]
  assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("message, lost", [
    ("UNKNOWN: Gloo AllGather failed: [pair.cc:538] Read error [127.0.0.1]:49581: Connection "
     "reset by peer", True),
    ("UNAVAILABLE: The coordination service has stopped: task /job:jax_worker/task:1 heartbeat "
     "timeout", True),
    ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.2GiB", False),
])
def test_a_failed_collective_is_named_a_lost_peer_only_when_a_peer_is_the_cause(
    message, lost, monkeypatch):
  assert not peers.is_peer_lost(RuntimeError(message))  # one process: no peer to lose
  monkeypatch.setattr(peers.jax, "process_count", lambda: 2)
  monkeypatch.setattr(peers.jax, "process_index", lambda: 1)
  assert peers.is_peer_lost(RuntimeError(message)) == lost
  error = peers.lost_peer(RuntimeError(message + "\n more"), step=7, newest_checkpoint=6)
  assert isinstance(error, ConnectionError)  # an OSError: the binaries print it without traceback
  assert str(error).startswith("Process 1 of 2 lost contact with another process of the run "
                               f"during step 7 ({message}).")
  assert str(error).endswith("resumes from the newest complete checkpoint (step 6).")
