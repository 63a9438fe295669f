"""The eval and infer binaries on one tiny trained run: `mixjax.eval` reproduces the eval line
training logged; `mixjax.infer` runs a prompts file and rejects bad input by name."""

import importlib
import json

import gin
import pytest

from mixjax import infer
from mixjax import train
from mixjax.training import metrics as metrics_lib
from tests import helpers

eval_binary = importlib.import_module("mixjax.eval.__main__")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """2 steps of the test-sized model on the math domain (probes: arithmetic, magnitude), trained
  through the train binary so that config.gin is the operative config."""
  model_dir = tmp_path_factory.mktemp("run")
  flags = ["--gin_file=gin/runs/tiny.gin", *[f"--gin.{b}" for b in helpers.TEST_MODEL],
           f"--gin.MODEL_DIR='{model_dir}'", "--gin.MIXTURE_OR_TASK_NAME='mixjax_synthetic_math'",
           "--gin.TRAIN_STEPS=2", "--gin.EVAL_PERIOD=2", "--gin.CHECKPOINT_PERIOD=2",
           "--gin.TASK_FEATURE_LENGTHS={'targets': 32}", "--gin.EvalConfig.max_probes=4",
           "--gin.EvalConfig.batch_size=8", "--gin.RunConfig.progress_bar=False"]
  gin.clear_config()
  try:
    train.main(flags)
  finally:
    gin.clear_config()
  return model_dir


def test_eval_reproduces_the_logged_eval_line(run_dir):
  logged = [m for m in metrics_lib.read_metrics(run_dir) if "eval/math/loss" in m]
  assert [m["step"] for m in logged] == [2]
  try:
    metrics = eval_binary.main([f"--model_dir={run_dir}", "--step=2"])
  finally:
    gin.clear_config()
  assert "probe/math/arithmetic/accuracy" in metrics and "probe/math/magnitude/accuracy" in metrics
  assert metrics == logged[0]
  assert json.loads((run_dir / "eval" / "step_2.json").read_text()) == logged[0]


def test_eval_names_a_missing_checkpoint(run_dir):
  with pytest.raises(SystemExit, match=r"No checkpoint for step 7 .* it holds steps \[2\]"):
    try:
      eval_binary.main([f"--model_dir={run_dir}", "--step=7"])
    finally:
      gin.clear_config()


@pytest.mark.slow
def test_infer_runs_a_prompts_file_with_gin_settings_and_flags_over_them(run_dir, tmp_path):
  prompts = tmp_path / "in.jsonl"
  prompts.write_text('{"prompt": "Q: 12 + 30 ="}\n\n{"prompt": "x = 3"}\n{"prompt": "7"}\n')
  out = tmp_path / "out.jsonl"
  try:
    infer.main(["--gin_file=gin/runs/infer.gin", f"--gin.CHECKPOINT_PATH='{run_dir}'",
                "--gin.MAX_NEW_TOKENS=9", "--gin.BATCH_SIZE=2", f"--prompts_file={prompts}",
                f"--output={out}", "--max_new_tokens=5", "--no_progress"])
  finally:
    gin.clear_config()
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["prompt"] for r in lines] == ["Q: 12 + 30 =", "x = 3", "7"]
  for r in lines:
    assert set(r) == {"prompt", "completion", "num_tokens", "stop_reason"}
    assert 1 <= r["num_tokens"] <= 5 and r["stop_reason"] in ("eos", "max_new_tokens")
    assert r["stop_reason"] == "eos" or r["num_tokens"] == 5  # a row stops only at EOS or 5


def test_infer_rejects_bad_input_by_name(run_dir, tmp_path, capsys):
  with pytest.raises(SystemExit):
    infer.main([f"--model_dir={run_dir}", "--prompt=hi", "--temperature=-1"])
  assert "temperature=-1.0 must be >= 0 (0 is greedy)" in capsys.readouterr().err
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"prompt": "ok"}\n{"prompt": \n{"text": "no prompt"}\n')
  with pytest.raises(SystemExit, match=rf"{broken}:2: not JSON(.|\n)*{broken}:3: needs a \"prompt\""):
    infer.main([f"--model_dir={run_dir}", f"--prompts_file={broken}", f"--output={tmp_path}/o"])
  # Rows of 32 tokens: a prompt of 40 bytes cannot run; the error names the limit.
  with pytest.raises(SystemExit, match=r"--prompt 2: the prompt is 40 tokens .* limit of 31"):
    infer.main([f"--model_dir={run_dir}", "--prompt=short", f"--prompt={'a' * 40}"])
  with pytest.raises(SystemExit, match=r"--prompt 1: mode='NLU', but an lm run has no modes"):
    infer.main([f"--model_dir={run_dir}", "--prompt=hi", "--mode=NLU"])
  (tmp_path / "run_configs.json").write_text((run_dir / "run_configs.json").read_text())
  with pytest.raises(SystemExit, match=rf"No checkpoint in {tmp_path}/checkpoints"):
    infer.main([f"--model_dir={tmp_path}", "--prompt=hi"])
