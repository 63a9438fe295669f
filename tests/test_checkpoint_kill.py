"""A training binary SIGKILLed in the middle of a checkpoint save: the half-written step is never
resumed from, and the rerun of the same command continues the uninterrupted run exactly.

The kill is placed, not timed: tests/train_killed_at_commit.py kills the process inside orbax's
commit of step 4, once all of its files are written under `checkpoints/4.orbax-checkpoint-tmp/`.
"""

import os
import pathlib
import signal
import subprocess
import sys

from mixjax.training import checkpoints
from mixjax.training import run_dir
from tests import helpers
from tests.test_mixtures import _by_step
from tests.test_multihost import _assert_same_losses
from tests.test_multihost import _metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
KILLED_STEP = 4  # the last step: the killed run logs every step the rerun trains again
# One domain, no probes: a third of the mixture's start-up (tf.data pipelines, eval compiles).
ARGS = [f"--gin_file={helpers.TINY_GIN}", *(f"--gin.{b}" for b in helpers.TEST_MODEL),
        "--gin.MIXTURE_OR_TASK_NAME='mixjax_synthetic_web'",
        "--gin.register_synthetic.num_docs=200",
        f"--gin.TRAIN_STEPS={KILLED_STEP}", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=0",
        "--gin.EvalConfig.num_batches=1", "--gin.RunConfig.summary=False",
        "--gin.RunConfig.progress_bar=False"]


def _run(module_args, model_dir, log_path, cache_dir) -> tuple[int, str]:
  """Runs `python -m MODULE_ARGS ARGS` on MODEL_DIR; returns (exit status, output)."""
  # The rerun loads the killed run's compiled steps from the cache: ~10 s less on 2 cores.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO),
             JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  with open(log_path, "w") as log:
    status = subprocess.run(
        [sys.executable, "-m", *module_args, *ARGS, f"--gin.MODEL_DIR='{model_dir}'"], cwd=REPO,
        env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode
  return status, log_path.read_text()


def _fingerprints(model_dir) -> dict[int, float]:
  return {step: fingerprint for step, (_, fingerprint) in _by_step(model_dir).items()}


def test_a_save_killed_before_its_commit_is_skipped_and_the_rerun_matches(tmp_path):
  model_dir, cache = tmp_path / "run", tmp_path / "jax_cache"
  ckpt_dir = model_dir / "checkpoints"
  status, out = _run(["tests.train_killed_at_commit", str(KILLED_STEP)], model_dir,
                     tmp_path / "killed.log", cache)
  assert status == -signal.SIGKILL, f"no kill at the commit (exit {status}):\n{out[-3000:]}"

  # Killed mid-save: step 4's files are all there, in the temporary directory, uncommitted.
  tmp = ckpt_dir / f"{KILLED_STEP}.orbax-checkpoint-tmp"
  assert sorted(os.listdir(ckpt_dir)) == ["2", tmp.name]
  assert (tmp / "state" / "manifest.ocdbt").is_file() and (tmp / "data" / "metadata").is_file()
  assert not (tmp / "commit_success.txt").exists()  # orbax writes it just before the rename
  ckpt = checkpoints.Checkpointer(str(model_dir), checkpoints.CheckpointConfig())
  try:
    assert ckpt.latest_step() == 2
  finally:
    ckpt.close()
  assert run_dir.checkpoint_steps(str(model_dir)) == [2]  # mixjax's own listing agrees
  # Opening a run leaves its temporary directories alone (orbax's cleanup_tmp_directories is
  # off): readers such as mixjax.infer may open a run while it saves.
  assert tmp.is_dir()
  uninterrupted, fingerprints = _metrics(model_dir), _fingerprints(model_dir)
  assert sorted(fingerprints) == [1, 2, 3, 4]  # all logged before the save began

  status, out = _run(["mixjax.train"], model_dir, tmp_path / "rerun.log", cache)
  assert status == 0, out[-3000:]
  assert f"Resuming from step 2 of {KILLED_STEP} in {model_dir}" in out
  # orbax names a step's temporary directory by the step alone, so saving step 4 again first
  # deletes the stale one (atomicity._create_tmp_directory), then commits step 4.
  assert f"temporary directory {tmp} which already exists. Removing existing" in out
  assert sorted(os.listdir(ckpt_dir)) == ["2", "4"]
  resumed = _metrics(model_dir)
  assert [m["step"] for m in resumed] == [m["step"] for m in uninterrupted]  # no line twice
  _assert_same_losses(resumed, uninterrupted, steps={3, 4})  # train and eval losses, rtol 1e-5
  assert _fingerprints(model_dir) == fingerprints
