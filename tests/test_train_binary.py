"""The real entry point, end to end, on a tiny config (as a user runs it)."""

import os
import subprocess
import sys

import gin
import seqio

from mixjax import train
from mixjax.testbed import corpus as synthetic
from mixjax.training import metrics as metrics_lib

TINY_ARGS = ["--gin_file=gin/runs/tiny.gin"]


# Start-up lines of TensorFlow, CUDA and SeqIO that say nothing a user can act on.
NOISE = ("cuInit", "Could not find cuda drivers", "oneDNN", "absl::InitializeLog",
         "uncached FunctionDataset", "cpu_feature_guard")


def _run(args, cwd, as_user=False):
  """The binary in a subprocess; `as_user`: in a user's environment (no log-level or platform
  variable of the tests' own), to see the console a user sees."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  if as_user:
    del env["JAX_PLATFORMS"], env["TF_CPP_MIN_LOG_LEVEL"]
  return subprocess.run([sys.executable, "-m", "mixjax.train", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_binary_trains_evaluates_and_checkpoints_with_a_clean_console(tmp_path):
  # The binary's resume is tested with real processes in test_multihost (1 and 2 processes).
  model_dir = tmp_path / "run"
  args = TINY_ARGS + [f"--gin.MODEL_DIR='{model_dir}'", "--gin.MESH_SHAPE=(2, 1, 2)",
                      "--gin.CHECKPOINT_PERIOD=3", "--gin.EVAL_PERIOD=3"]
  # Run from an unrelated directory: gin files resolve against the repo's gin/.
  second = _run(args + ["--gin.TRAIN_STEPS=6"], cwd=tmp_path, as_user=True)
  assert second.returncode == 0, second.stderr[-3000:]
  console = second.stdout + second.stderr
  assert "step 6: eval/bios/loss=" in console
  assert [n for n in NOISE if n in console] == [], console[-3000:]  # a clean console
  summary = second.stdout[second.stdout.index("mixjax: run finished at step 6"):]
  for line in ("parameters  180,544 (0.18M)", "validation loss (nats/token), step 3 -> 6:",
               "probes at step 6", "prose/agreement", "chance 0.50", "tokens seen:",
               f"run directory  {model_dir}", f"tensorboard --logdir {model_dir / 'tb'}",
               f"report         {model_dir / 'report.png'}"):
    assert line in summary, summary
  assert (model_dir / "report.png").read_bytes()[:4] == b"\x89PNG"
  lines = metrics_lib.read_metrics(model_dir)
  train_steps = [m["step"] for m in lines if "loss" in m]
  assert train_steps == [1, 2, 3, 4, 5, 6]
  evals = [m for m in lines if "eval/math/loss" in m]
  assert [m["step"] for m in evals] == [3, 6]
  domains = ("web", "bios", "math", "code", "prose")
  mean_loss = lambda m: sum(m[f"eval/{d}/loss"] for d in domains) / len(domains)  # noqa: E731
  assert mean_loss(evals[-1]) < mean_loss(evals[0])
  probes = sorted(k for k in evals[-1] if k.startswith("probe/"))
  assert probes == [f"probe/{d}/{k}/accuracy" for d in ("bios", "code", "math", "prose")
                    for k in sorted(synthetic.PROBE_KINDS[d])]
  assert all(0.0 <= evals[-1][k] <= 1.0 for k in probes)
  assert sorted(os.listdir(model_dir / "checkpoints")) == ["3", "6"]
  config = (model_dir / "config.gin").read_text()
  assert "BATCH_SIZE = 8" in config and "DataConfig.batch_size = %BATCH_SIZE" in config
  assert any(name.startswith("events") for name in os.listdir(model_dir / "tb"))


def test_binary_names_missing_required_values(tmp_path):
  result = _run(["--gin_file=gin/runs/pretrain.gin", "--gin_file=gin/models/tiny.gin"],
                cwd=tmp_path)
  assert result.returncode != 0
  assert "Required gin values not set" in result.stderr
  assert "--gin.MODEL_DIR=" in result.stderr


def test_binary_rejects_missing_gin_file(tmp_path):
  result = _run(["--gin_file=gin/nonexistent.gin"], cwd=tmp_path)
  assert result.returncode != 0
  assert "gin file 'gin/nonexistent.gin' not found" in result.stderr


def test_task_bindings_apply_whatever_the_import_order():
  gin.clear_config()
  try:
    train.configure(TINY_ARGS + ["--gin.register_synthetic.num_docs=400"])
    mix = seqio.get_mixture_or_task("mixjax_synthetic_mix")
    rates = {t.name: mix.get_rate(t) for t in mix.tasks}
    assert sum(rates.values()) == 400  # rates are the bound corpus's document counts
  finally:
    gin.clear_config()
    train.configure(TINY_ARGS)  # the default registration back, for other tests
    gin.clear_config()
