"""Bad inputs and faults, as a new user meets them: each gets one clear error (or a warning)
naming the problem and the fix, nothing hangs, and a run directory is never damaged.

The sweep table in tests/README.md maps each case to the test here that pins it. Most checks run
in plain Python (validation happens before jax or tf.data start); one test runs the binary in a
subprocess with a timeout, for "no hang".
"""

import dataclasses
import errno
import json
import os
import subprocess
import sys
import time

import gin
import jax
import pytest
import seqio

from mixjax import plots
from mixjax import train as train_binary
from mixjax import user_errors
from mixjax.data import tasks
from mixjax.iclm import cli as iclm_cli
from mixjax.iclm import stages
from mixjax.iclm import task as iclm_task
from mixjax.inference import restore
from mixjax.mixing import schedules
from mixjax.mixing import stream
from mixjax.models import transformer
from mixjax.testbed import corpus
from mixjax.training import checkpoints
from mixjax.training import config_checks
from mixjax.training import init_from
from mixjax.training import loop
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import report
from mixjax.training import run_dir
from mixjax.training import trainer
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text: str | bytes):
  mode = "wb" if isinstance(text, bytes) else "w"
  with open(path, mode) as f:
    f.write(text)
  return str(path)


# ------------------------------------------------------------------ JSONL, gin values, rates


def test_jsonl_every_bad_line_at_once_and_empty_files(tmp_path):
  bad = _write(tmp_path / "bad.jsonl",
               b'{"text": "fine"}\n{broken\n{"body": "no text"}\n\n\xff\xfe\n[1, 2]\n')
  with pytest.raises(tasks.JsonlFormatError) as e:
    tasks.check_jsonl_files([bad])
  message = str(e.value)
  assert "4 bad JSONL line(s)" in message
  by_line = {int(x.split("bad.jsonl:")[1].split(":")[0]): x for x in message.splitlines()
             if "bad.jsonl:" in x}
  assert sorted(by_line) == [2, 3, 5, 6]
  for line, why in ((2, "not valid UTF-8 JSON"), (3, "'text' field, got fields ['body']"),
                    (5, "not valid UTF-8 JSON (invalid start byte"), (6, "got a JSON list")):
    assert why in by_line[line]
  empty = _write(tmp_path / "empty.jsonl", "\n")
  with pytest.raises(tasks.JsonlFormatError, match="hold no records"):
    tasks.check_jsonl_files([empty])
  with pytest.raises(FileNotFoundError, match="no files match"):
    tasks.register_jsonl_task("rel_missing", {"train": [str(tmp_path / "nope-*.jsonl")]})


def test_jsonl_task_is_checked_before_tf_data_sees_it(tmp_path):
  good = _write(tmp_path / "good.jsonl", '{"text": "a b c"}\n')
  bad = _write(tmp_path / "bad.jsonl", '{"text": "a"}\n{oops\n')
  empty = _write(tmp_path / "empty.jsonl", "")
  tasks.register_jsonl_task("rel_good", {"train": [good]})
  tasks.register_jsonl_task("rel_bad", {"train": [good], "validation": [bad]})
  tasks.register_jsonl_task("rel_empty", {"train": [empty]})
  tasks.register_mixture("rel_mix_bad", {"rel_good": 1.0, "rel_bad": 1.0})
  tasks.register_mixture("rel_mix_empty", {"rel_good": 1.0, "rel_empty": 1.0})
  with pytest.raises(tasks.JsonlFormatError, match=r"Task 'rel_bad' split 'validation'.*"
                                                   r"\n.*bad.jsonl:2"):
    tasks.check_sources("rel_mix_bad")  # an empty or broken domain of a static mixture
  with pytest.raises(tasks.JsonlFormatError, match="Task 'rel_empty'.*hold no records"):
    tasks.check_sources("rel_mix_empty")
  # Building a dataset checks too, in the calling thread (not inside a tf.data generator).
  with pytest.raises(tasks.JsonlFormatError, match="bad.jsonl:2"):
    seqio.get_mixture_or_task("rel_bad").get_dataset({"targets": 16}, split="validation")
  tasks.check_sources("rel_good")


def test_run_macros_are_checked_by_name_and_range():
  configs = helpers.tiny_run_configs(
      "TRAIN_STEPS='abc'", "BATCH_SIZE=-4", "TASK_FEATURE_LENGTHS={'inputs': 64}",
      "CHECKPOINT_PERIOD=-1", "MODEL_DIR=''", "RunConfig.log_period=0", "SEED=-1",
      "OptimizerConfig.learning_rate='3e-3'")
  with pytest.raises(config_checks.GinValueError) as e:
    config_checks.check_run_values(configs["run"], configs["data"], configs["checkpoint"],
                                   configs["eval_config"], configs["optimizer"])
  message = str(e.value)
  for expected in ("TRAIN_STEPS (RunConfig.train_steps) = 'abc': must be an integer >= 1",
                   "BATCH_SIZE (DataConfig.batch_size) = -4: must be an integer >= 1",
                   "needs exactly the keys ['targets'] (missing ['targets'], unknown ['inputs'])",
                   "CHECKPOINT_PERIOD (CheckpointConfig.period) = -1: must be an integer >= 0",
                   "MODEL_DIR (RunConfig.model_dir) = '': must be a non-empty string",
                   "RunConfig.log_period = 0: must be an integer >= 1",
                   "SEED (RunConfig.seed) = -1: must be an integer >= 0",
                   "OptimizerConfig.learning_rate = '3e-3': must be a number"):
    assert expected in message
  good = helpers.tiny_run_configs()
  config_checks.check_run_values(good["run"], good["data"], good["checkpoint"],
                                 good["eval_config"], good["optimizer"])


def test_register_synthetic_bindings_apply_and_are_recorded():
  args = ["--gin_file=gin/runs/tiny.gin", "--gin.register_synthetic.num_docs=400",
          "--gin.register_synthetic.mixture_rates={'math': 7.0}"]
  gin.clear_config()
  try:
    train_binary.configure(args)
    mix = seqio.get_mixture_or_task("mixjax_synthetic_mix")
    rates = {t.name: mix.get_rate(t) for t in mix.tasks}
    assert rates["mixjax_synthetic_math"] == 7.0
    assert sum(r for t, r in rates.items() if t != "mixjax_synthetic_math") < 400
    operative = gin.operative_config_str()  # what config.gin records is what was applied
    assert "register_synthetic.mixture_rates = {'math': 7.0}" in operative
    assert "register_synthetic.num_docs = 400" in operative
  finally:
    gin.clear_config()
    train_binary.configure(["--gin_file=gin/runs/tiny.gin"])  # the default tasks back
    gin.clear_config()


def test_negative_static_mixture_rate_is_refused(tmp_path):
  helpers.register_word_task(tmp_path, "rel_words_a")
  tasks.register(dataclasses.replace(tasks.get("rel_words_a"), name="rel_words_b",
                                     domain="rel_words_b"))
  with pytest.raises(ValueError, match="rate of 'rel_words_b' is -1.0; rates must be >= 0"):
    tasks.register_mixture("rel_neg", {"rel_words_a": 1.0, "rel_words_b": -1.0})
  seqio.MixtureRegistry.remove("rel_neg_seqio")  # a mixture registered with SeqIO directly
  seqio.MixtureRegistry.add("rel_neg_seqio", [("rel_words_a", 1.0), ("rel_words_b", -1.0)])
  ctx = schedules.context_for("rel_neg_seqio", total_steps=10, rows_per_step=8)
  with pytest.raises(schedules.ScheduleError, match="'rel_words_b' is -1.0; it must be finite"):
    stream.as_schedule("rel_neg_seqio").resolve(ctx)  # the static path of every run


def _fake_iclm_output(directory, context_tokens, mean_tokens):
  os.makedirs(directory / "stages")
  _write(directory / "iclm-00000-of-00001.jsonl",
         json.dumps({"id": "a", "text": "x" * 40, "context": 0}) + "\n")
  _write(directory / "stages" / "config.json", json.dumps({"context_tokens": context_tokens}))
  _write(directory / stages.REPORT, json.dumps({"mean_context_tokens": mean_tokens}))


def test_iclm_contexts_longer_than_rows_are_refused(tmp_path):
  _fake_iclm_output(tmp_path / "iclm", context_tokens=768, mean_tokens=769.0)
  iclm_task.register_iclm_task("rel_iclm", str(tmp_path / "iclm"))
  with pytest.raises(tasks.ExamplesTrimmedError) as e:
    tasks.check_rows_fit("rel_iclm", 64)
  assert "up to 768 tokens" in str(e.value) and "about 92% of its tokens" in str(e.value)
  assert "'targets': 768" in str(e.value) and "--context_tokens 64" in str(e.value)
  tasks.check_rows_fit("rel_iclm", 768)  # rows as long as the contexts: nothing trimmed


# ------------------------------------------------------------------ run directories


def test_model_dir_that_is_a_file_or_not_writable(tmp_path, monkeypatch):
  a_file = _write(tmp_path / "file", "x")
  with pytest.raises(run_dir.RunDirError, match="is a file, not a directory"):
    run_dir.prepare(a_file)
  with pytest.raises(run_dir.RunDirError, match="cannot be created"):
    run_dir.prepare(os.path.join(a_file, "run"))
  def read_only(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))
  # root ignores chmod; fake the error where the write probe is made
  monkeypatch.setattr(run_dir.tempfile, "NamedTemporaryFile", read_only)
  with pytest.raises(run_dir.RunDirError, match="is not writable .Permission denied."):
    run_dir.prepare(str(tmp_path / "ro"))


def test_a_url_as_run_directory_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # where a local 'gs:' folder would appear
  message = (r"MODEL_DIR='gs://bucket/run' is a gs:// URL, .* every host would write a local "
             r"folder named 'gs:'. Mount the storage at the same path on every host")
  with pytest.raises(run_dir.RunDirError, match=message):
    run_dir.prepare("gs://bucket/run")
  with pytest.raises(run_dir.RunDirError, match="model_dir='gs://bucket/run' is a gs:// URL"):
    restore.restore_run("gs://bucket/run")
  with pytest.raises(run_dir.RunDirError, match="INIT_FROM='s3://b/base' is a s3:// URL"):
    init_from.source_configs(init_from.InitConfig(from_dir="s3://b/base"))
  assert os.listdir(tmp_path) == []


def test_fresh_start_refuses_checkpoints_unless_overwrite(tmp_path):
  (tmp_path / "checkpoints" / "10").mkdir(parents=True)
  (tmp_path / "checkpoints" / "20").mkdir()
  _write(tmp_path / "metrics.jsonl", '{"step": 1}\n')
  _write(tmp_path / report.SUMMARY_NAME, "{}")
  _write(tmp_path / report.REPORT_NAME, "png")
  _write(tmp_path / "notes.txt", "mine")
  with pytest.raises(run_dir.CheckpointsExistError, match=r"holds checkpoints \(steps \[10, 20\]"
                                                           r"\).*CheckpointConfig.overwrite=True"):
    run_dir.check_fresh_start(str(tmp_path), overwrite=False)
  run_dir.check_fresh_start(str(tmp_path), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # only the run's own files went


def test_resume_drops_metrics_lines_past_the_checkpoint(tmp_path):
  lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3, 4)] + ['{"step": 5, "lo']
  _write(tmp_path / "metrics.jsonl", "\n".join(lines))
  assert run_dir.drop_metrics_after(str(tmp_path), 2) == 3
  assert [json.loads(x)["step"] for x in open(tmp_path / "metrics.jsonl")] == [1, 2]
  # A rerun of a finished run evaluates again but logs no second line (loop.train).
  assert run_dir.logged_keys(str(tmp_path), 2) == {"step", "loss"}
  assert run_dir.logged_keys(str(tmp_path), 9) == set()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A run directory as `train()` leaves it after step 2 (checkpoint, run_configs.json, metrics
  past the checkpoint), made without compiling a train step."""
  root = tmp_path_factory.mktemp("saved_run")
  task = helpers.register_word_task(root, name="rel_saved_words")
  kwargs = helpers.tiny_train_kwargs(root / "run", task, steps=4, checkpoint_period=2,
                                     mesh_shape=(1, 1, 1), num_devices=1)
  kwargs["eval_config"] = dataclasses.replace(kwargs["eval_config"], num_batches=0,
                                              max_probes=0)
  run, data, mesh_config = kwargs["run"], kwargs["data"], kwargs["mesh"]
  model = loop._sized_for(kwargs["model"], data)  # pylint: disable=protected-access
  mesh = partitioning.make_mesh(mesh_config)
  tx = optim.make_optimizer(kwargs["optimizer"], run.train_steps)
  state, _ = trainer.create_state(transformer.build_model(model), tx, mesh, mesh_config.rules,
                                  (partitioning.data_parallel_size(mesh), 8), run.seed)
  batches = stream.make_batch_iterator(data, run.seed, None, run.train_steps)
  os.makedirs(run.model_dir)
  ckpt = checkpoints.Checkpointer(run.model_dir, kwargs["checkpoint"])
  ckpt.save(2, state.replace(step=2), batches.state())
  ckpt.close()
  checkpoints.write_run_configs(run.model_dir, model=model, data=data,
                                optimizer=kwargs["optimizer"], run=run)
  return kwargs


def _with(kwargs, **changes):
  out = dict(kwargs)
  for name, fields in changes.items():
    out[name] = dataclasses.replace(kwargs[name], **fields)
  return out


def _run_files(model_dir):
  return {name: open(os.path.join(model_dir, name), "rb").read()
          for name in sorted(os.listdir(model_dir)) if name.endswith((".json", ".gin"))}


def test_rerun_with_another_model_is_a_mismatch_and_changes_nothing(saved_run):
  model_dir = saved_run["run"].model_dir
  before = _run_files(model_dir)
  with pytest.raises(run_dir.ConfigMismatchError) as e:
    loop.train(**_with(saved_run, model={"d_model": 64}))
  message = str(e.value)
  assert "TransformerConfig.d_model: 32 in the run, 64 now" in message
  assert "Use a new MODEL_DIR" in message and "--gin.TransformerConfig.d_model=32" in message
  assert "Delete" not in message and "checkpoints themselves are intact" in message
  with pytest.raises(run_dir.CheckpointsExistError, match=r"steps \[2\]"):
    loop.train(**_with(saved_run, checkpoint={"restore": False}))
  assert _run_files(model_dir) == before  # run_configs.json untouched, no config.gin written
  assert checkpoints.read_run_configs(model_dir)["model"]["d_model"] == 32


def test_shape_mismatch_without_run_configs_is_not_called_corruption(saved_run, tmp_path):
  kwargs = _with(saved_run, model={"d_model": 64})
  model = loop._sized_for(kwargs["model"], kwargs["data"])  # pylint: disable=protected-access
  mesh = partitioning.make_mesh(kwargs["mesh"])
  tx = optim.make_optimizer(kwargs["optimizer"], kwargs["run"].train_steps)
  abstract, _ = trainer.abstract_state_and_shardings(
      transformer.build_model(model), tx, mesh, kwargs["mesh"].rules,
      (partitioning.data_parallel_size(mesh), 8))
  ckpt = checkpoints.Checkpointer(saved_run["run"].model_dir, kwargs["checkpoint"])
  try:
    with pytest.raises(checkpoints.CheckpointShapeError, match=r"\(params/embedding: \(\d+, 32\) "
                                                               r"in the checkpoint, \(\d+, 64\)"):
      ckpt.restore(2, abstract)
  finally:
    ckpt.close()


def test_resume_is_announced_and_repeats_no_metrics_line(saved_run, capsys):
  model_dir = saved_run["run"].model_dir
  _write(os.path.join(model_dir, "metrics.jsonl"),
         "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
  resume = _with(saved_run, run={"stop_at_step": 2}, eval_config={"num_batches": 1})
  loop.train(**resume)  # resume at 2, train nothing, evaluate once
  err = capsys.readouterr().err
  assert f"Resuming from step 2 of 4 in {model_dir}" in err
  assert "dropped 1 metrics lines past it" in err
  lines = [json.loads(x) for x in open(os.path.join(model_dir, "metrics.jsonl"))]
  assert [m["step"] for m in lines if "loss" in m] == [1, 2]
  evals = [m for m in lines if "loss" not in m]  # the missing eval line of the last step
  assert [m["step"] for m in evals] == [2] and any(k.startswith("eval/") for k in evals[0])
  loop.train(**resume)  # once more: nothing logged twice
  assert [json.loads(x) for x in open(os.path.join(model_dir, "metrics.jsonl"))] == lines


def test_disk_full_during_save_is_one_message(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), checkpoints.CheckpointConfig())
  state = {"w": jax.numpy.zeros((4,))}
  ckpt.save(1, state, {"step": 1})

  def full_disk(*args, **kwargs):
    raise ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0\" in OCDBT database: Failed to "
                     "write 95552 bytes to file 7: No space left on device [os_error_code='28']")
  ckpt._manager.save = full_disk  # pylint: disable=protected-access
  try:
    with pytest.raises(checkpoints.CheckpointWriteError) as e:
      ckpt.save(2, state, {"step": 2})
  finally:
    ckpt.close()
  assert str(e.value) == (
      f"Saving checkpoint step 2 to {tmp_path}/checkpoints failed: the disk is full (no space "
      "left on device). Free some space or set MODEL_DIR on a larger disk; the newest complete "
      "checkpoint is step 1; rerun to resume from it.")
  assert isinstance(e.value, OSError) and user_errors.is_user_error(e.value)


# ------------------------------------------------------------------ binaries


def test_binary_messages_drop_gin_and_tf_wrapping():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only this test needs tf)

  def broken():
    yield "fine"
    raise tasks.JsonlFormatError("a.jsonl:2: not valid UTF-8 JSON")
  ds = tf.data.Dataset.from_generator(broken, output_signature=tf.TensorSpec((), tf.string))
  with pytest.raises(tf.errors.OpError) as e:
    list(ds.as_numpy_iterator())
  assert user_errors.message_of(e.value).endswith("JsonlFormatError: a.jsonl:2: not valid "
                                                  "UTF-8 JSON")
  assert "[[" not in user_errors.message_of(e.value)
  wrapped = ValueError("bad value\n  In call to configurable 'train' (<function train at 0x1>)")
  assert user_errors.message_of(wrapped) == "bad value"
  assert user_errors.is_user_error(e.value) and not user_errors.is_user_error(KeyError("x"))


def test_train_binary_bad_jsonl_exits_promptly_with_one_message(tmp_path):
  bad = _write(tmp_path / "bad.jsonl", b'{"text": "ok"}\n{broken\n{"body": 1}\n\xff\n')
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([REPO] + sys.path))
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, "-m", "mixjax.train", "--gin_file=gin/runs/tiny.gin",
       f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.MIXTURE_OR_TASK_NAME=@jsonl_task()",
       f"--gin.jsonl_task.train=['{bad}']"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  elapsed = time.perf_counter() - start
  assert result.returncode == 1, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if "Error" in line]
  assert errors == ["mixjax.train: error: JsonlFormatError: Task 'mixjax_jsonl' split 'train': 3 "
                    "bad JSONL line(s):"], result.stderr[-2000:]
  assert "bad.jsonl:2:" in result.stderr and "bad.jsonl:4:" in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run" / "config.gin")
  print(f"bad-JSONL binary run exited in {elapsed:.1f}s")


def test_plots_bad_window_missing_dir_empty_metrics_and_torn_line(tmp_path, capsys):
  with pytest.raises(SystemExit):
    plots.main([str(tmp_path), "--window", "0"])
  assert "--window: '0' is not an integer >= 1" in capsys.readouterr().err
  with pytest.raises(report.PlotInputError, match="window=0: must be an integer >= 1"):
    report.report_figure([], window=0)
  with pytest.raises(report.PlotInputError, match="is not a directory"):
    report.write_report(str(tmp_path / "missing"))
  _write(tmp_path / "metrics.jsonl", "")
  with pytest.raises(report.PlotInputError, match="holds no line yet"):
    report.write_report(str(tmp_path))
  _write(tmp_path / "metrics.jsonl", '{"step": 1, "loss": 2.0}\n{"step": 2, "los\n{"step": 3}\n')
  with pytest.raises(report.PlotInputError, match="metrics.jsonl:2 is not a JSON object"):
    report.write_report(str(tmp_path))
  line = {"step": 1, "mixture/math/weight_scheduled": 0.5, "mixture/math/weight_realised": 0.5}
  _write(tmp_path / "metrics.jsonl", json.dumps(line) + '\n{"step": 2, "mixture/ma')
  with pytest.raises(SystemExit):
    plots.main([str(tmp_path), "--out", str(tmp_path / "report.nope")])
  assert "--out" in capsys.readouterr().err
  plots.main([str(tmp_path), "--window", "1"])
  assert "metrics.jsonl:2 is torn" in capsys.readouterr().err
  with open(tmp_path / "report.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_iclm_cli_names_bad_globs_workers_and_tiny_contexts(tmp_path, capsys):
  doc = _write(tmp_path / "docs.jsonl", '{"id": "a", "text": "hello"}\n')
  cases = ((["--input", str(tmp_path / "nope-*.jsonl")], "no files match"),
           (["--input", doc, "--worker", "3/2"], "'3/2': expected I/N with 0 <= I < N"),
           (["--input", doc, "--worker", "3"], "(the /N is missing)"),
           (["--input", doc, "--context_tokens", "0"], "'0' is not an integer >= 1"),
           (["--input", doc, "--seed", "-1"], "'-1' is not an integer >= 0"),
           (["--input", doc, "--dedup_threshold", "5"], "not a cosine similarity in [-1, 1]"))
  for args, message in cases:
    assert iclm_cli.main(args + ["--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
  assert iclm_cli.main(["--input", str(tmp_path / "missing.jsonl"), "--output",
                        str(tmp_path / "out")]) == 2
  assert "Input file(s) not found: " in capsys.readouterr().err
  warning = iclm_cli.context_warning(
      {"documents": 100, "contexts": 100, "mean_context_tokens": 290.0}, context_tokens=10)
  assert "--context_tokens 10 gives 1.00 documents per context" in warning
  assert "e.g. 1160" in warning
  assert iclm_cli.context_warning({"documents": 100, "contexts": 30,
                                   "mean_context_tokens": 900.0}, 1024) is None


def test_iclm_failed_call_leaves_no_fingerprint(tmp_path):
  doc = _write(tmp_path / "docs.jsonl", '{"id": "a", "text": "hello"}\n')
  out = tmp_path / "out"
  missing = stages.IclmConfig(inputs=(doc, str(tmp_path / "typo.jsonl")), output_dir=str(out))
  with pytest.raises(FileNotFoundError, match="typo.jsonl"):
    stages.run(missing)
  assert not os.path.exists(out / "stages" / "config.json")
  corrected = stages.Workdir(stages.IclmConfig(inputs=(doc,), output_dir=str(out)))
  corrected.check_config()  # the corrected rerun is accepted
  assert os.path.exists(out / "stages" / "config.json")


def test_testbed_refuses_a_non_empty_out_unless_overwrite(tmp_path, capsys):
  out = tmp_path / "corpus"
  (out / "train").mkdir(parents=True)
  _write(out / "train" / "stale.jsonl", "{}\n")
  _write(out / "mine.txt", "keep")
  with pytest.raises(SystemExit):
    corpus.main(["--out", str(out), "--docs", "20"])
  assert "is not empty (mine.txt, train)" in capsys.readouterr().err
  corpus.main(["--out", str(out), "--docs", "20", "--probes", "2", "--overwrite"])
  assert not os.path.exists(out / "train" / "stale.jsonl")
  assert os.path.exists(out / "mine.txt") and os.path.exists(out / "manifest.json")


def test_config_comparison_names_vocab_and_objective_and_ignores_unknown_fields():
  model = transformer.TransformerConfig(vocab_size=384, d_model=32)
  saved = {"model": {**dataclasses.asdict(model), "retired_field": 1, "attention_impl": "pallas"},
           "data": {"vocab": {"kind": "bytes", "path": None, "extra_ids": None},
                    "objective": "lm"}}
  data = helpers.tiny_run_configs("DataConfig.objective='ul2'", "FEATURE_CONVERTER='prefix_lm'",
                                  "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}",
                                  "DataConfig.vocab=@VocabConfig()",
                                  "VocabConfig.extra_ids=300")["data"]
  diffs = run_dir.config_differences(saved, model, data)
  assert diffs == [("VocabConfig.extra_ids", None, 300), ("DataConfig.objective", "lm", "ul2")]
  assert run_dir.config_differences(saved, model, helpers.tiny_run_configs()["data"]) == []
