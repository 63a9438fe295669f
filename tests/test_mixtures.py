"""Scheduled mixtures: schedules and their errors, exact per-block counts, the iterator's resume
and host sharding, repeat caps, per-domain accounting in training, and a SIGKILL-resume run."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import seqio

from mixjax.mixing import accounting
from mixjax.mixing import allocation
from mixjax.mixing import schedules as mixtures
from mixjax.data import pipeline
from mixjax.mixing import sources
from mixjax.mixing import stream as scheduled_pipeline
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import report
from tests import helpers
from tests import mixture_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("bios", "code", "math", "prose", "web")  # the mixture's tasks, sorted by name
BASE_D = np.asarray([0.2, 0.15, 0.15, 0.1, 0.4])     # its rates: the corpus's domain shares


def _ctx(total_steps=100, rows=8, sizes=None):
  return mixtures.context_for(mixture_tasks.MIX, total_steps, rows, sizes=lambda: sizes or {})


def _weights(schedule, steps, **ctx_kwargs):
  resolved = schedule.resolve(_ctx(**ctx_kwargs))
  return np.stack([resolved.weights_D(s) for s in steps])


def _onehot(domain):
  return np.eye(len(DOMAINS))[DOMAINS.index(domain)]


# ----------------------------------------------------------------------------------------------
# Schedules.


def test_constant_schedule_takes_a_registered_mixtures_rates():
  np.testing.assert_allclose(_weights(mixtures.constant_schedule(mixture_tasks.MIX), [0, 99]),
                             [BASE_D, BASE_D], rtol=1e-3)


def test_upsample_at_end_switches_at_the_fraction():
  schedule = mixtures.upsample_at_end(mixture_tasks.MIX, fraction=0.2, factors={"math": 4.0})
  w_SD = _weights(schedule, [0, 79, 80, 99, 500])
  up_D = BASE_D * np.where(np.arange(5) == DOMAINS.index("math"), 4.0, 1.0)
  np.testing.assert_allclose(w_SD, [BASE_D, BASE_D] + [up_D / up_D.sum()] * 3, rtol=1e-3)


def test_linear_ramp_and_nested_stages():
  ramp = mixtures.linear_ramp(mixture_tasks.MIX, {"math": 1.0}, start=0.5, end=1.0)
  np.testing.assert_allclose(_weights(ramp, [0, 50, 75, 100]),
                             [BASE_D, BASE_D, (BASE_D + _onehot("math")) / 2, _onehot("math")],
                             rtol=1e-3)
  staged = mixtures.stages([(0, 10, {"web": 1.0}), (10, 1.0, ramp)])  # int = step, float = fraction
  np.testing.assert_allclose(_weights(staged, [9, 10, 75]),
                             [_onehot("web"), BASE_D, (BASE_D + _onehot("math")) / 2], rtol=1e-3)


SIZES = {d: mixtures.DomainSize(rows=r, tokens=100 * r)
         for d, r in zip(DOMAINS, (50, 100, 200, 400, 10_000))}


def test_temperature_rates():
  def rates(temperature, maximum=None):
    fn = mixtures.temperature_rates(temperature, maximum)
    return _weights(mixtures.constant_schedule(fn), [0], sizes=SIZES)[0]
  tokens_D = np.asarray([SIZES[d].tokens for d in DOMAINS], float)
  np.testing.assert_allclose(rates(1.0), tokens_D / tokens_D.sum())
  np.testing.assert_allclose(rates(2.0), np.sqrt(tokens_D) / np.sqrt(tokens_D).sum())
  capped = rates(1.0, maximum=20_000)  # T5's cap: big domains count as `maximum` tokens
  np.testing.assert_allclose(capped, np.asarray([5, 10, 20, 20, 20]) / 75)


def test_unimax_spreads_the_budget_uniformly_under_the_epoch_cap():
  # 100 steps x 8 rows = 800 rows: bios can take 2 x 50, the other four 175 each.
  w_D = _weights(mixtures.constant_schedule(mixtures.unimax_rates(max_epochs=2.0)), [0],
                 sizes=SIZES)[0]
  np.testing.assert_allclose(w_D * 800, [100, 175, 175, 175, 175])


@pytest.mark.parametrize("schedule, match", [
    (mixtures.constant_schedule({"math": -1.0, "web": 1.0}), r"rate.*'math' is -1.0.*>= 0"),
    (mixtures.constant_schedule({"math": 0.0, "web": 0}), r"all rates are 0"),
    (mixtures.constant_schedule({"maths": 1.0}), r"unknown domain 'maths'; valid domains: bios"),
    (mixtures.upsample_at_end(mixture_tasks.MIX, 0.2, {"cod": 4.0}), r"unknown domain 'cod'"),
    (mixtures.constant_schedule("no_such_mixture"), r"no registered SeqIO mixture"),
    (mixtures.stages([(0.0, 0.6, {"web": 1}), (0.5, 1.0, {"math": 1})]), r"stages overlap"),
    (mixtures.stages([(0.0, 0.4, {"web": 1}), (0.5, 1.0, {"math": 1})]),
     r"leave steps \[40, 50\) without rates"),
    (mixtures.stages([(0.0, 0.8, {"web": 1})]), r"before training ends"),
    (mixtures.stages([(0.0, 1.5, {"web": 1})]), r"fraction 1.5 is outside \[0, 1\]"),
    (mixtures.stages([(0.5, 0.5, {"web": 1})]), r"end \(step 50\) must come after start"),
    (mixtures.linear_ramp({"web": 1}, {"math": 1}, start=0.9, end=0.1), r"must come after"),
])
def test_bad_schedules_are_clear_errors(schedule, match):
  with pytest.raises(mixtures.ScheduleError, match=match):
    schedule.resolve(_ctx())


# ----------------------------------------------------------------------------------------------
# Exact counts.


def _counts(schedule, total_steps, rows):
  resolved = schedule.resolve(_ctx(total_steps, rows))
  start = allocation.AllocationState.start(len(DOMAINS))
  return resolved, allocation.count_table(resolved, rows, start, total_steps)


def test_every_batch_holds_the_scheduled_counts_when_they_are_whole():
  _, counts_SD = _counts(mixtures.constant_schedule({"bios": 2, "code": 1, "math": 1}), 50, 8)
  assert (counts_SD == [4, 2, 2, 0, 0]).all()


def test_every_block_holds_the_scheduled_counts():
  # 8 rows at 40% / 60%: no single batch can hold it, every 5 batches (40 rows) do exactly.
  _, counts_SD = _counts(mixtures.constant_schedule({"web": 2, "math": 3}), 100, 8)
  blocks_BD = counts_SD.reshape(20, 5, -1).sum(axis=1)
  assert (blocks_BD[:, [DOMAINS.index("web"), DOMAINS.index("math")]] == [16, 24]).all()
  assert set(counts_SD[:, DOMAINS.index("math")]) == {4, 5}


@pytest.mark.parametrize("schedule", [
    mixtures.upsample_at_end(mixture_tasks.MIX, 0.2, {"math": 4.0, "code": 4.0}),
    mixtures.linear_ramp(mixture_tasks.MIX, {"math": 1.0, "prose": 0.3}, start=0.3, end=0.7),
    mixtures.stages([(0.0, 0.3, {"web": 1, "bios": 0.01}), (0.3, 0.6, mixture_tasks.MIX),
                     (0.6, 1.0, {"math": 0.7, "prose": 0.29, "code": 0.01})]),
])
def test_cumulative_counts_track_the_schedules_integral(schedule):
  resolved, counts_SD = _counts(schedule, 997, 16)
  w_SD = np.stack([resolved.weights_D(s) for s in range(997)])
  error_SD = np.cumsum(counts_SD, axis=0) - 16 * np.cumsum(w_SD, axis=0)
  assert (counts_SD.sum(axis=1) == 16).all()
  assert np.abs(error_SD).max() <= 1.0 + 1e-9
  assert not counts_SD[w_SD == 0].any()  # a domain out of the mixture gets no rows


# ----------------------------------------------------------------------------------------------
# The iterator (the two-domain mixture keeps the number of tf.data pipelines small).


def _config(schedule, name=mixture_tasks.TWO, batch_size=8, length=32):
  return pipeline.DataConfig(name, {"targets": length}, batch_size, schedule=schedule)


TWO_STAGES = mixtures.stages([(0, 3, {"web": 1.0}), (3, 1.0, {"math": 3.0, "web": 1.0})])


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batches_take_the_scheduled_rows_from_each_domain_stream_in_order():
  config = _config(TWO_STAGES)
  it = scheduled_pipeline.make_batch_iterator(config, 5, None, 6)
  batches = _take(it, 6)
  assert sorted(batches[0]) == sorted(pipeline.get_dataset(
      config, it.tasks['math'], 'train', shuffle=False, num_epochs=1).element_spec)
  assert it.num_shards == 2 == pipeline.default_num_shards(8)
  streams = {}  # each (domain, shard)'s own packed stream, built alone
  for domain in ("math", "web"):
    for v in range(2):
      ds = pipeline.shard_rows(config, it.tasks[domain], "train", [v], 2, shuffle=True, seed=5)
      streams[domain, v] = [r.tobytes() for r in next(ds.as_numpy_iterator())[
          "decoder_target_tokens"]]
  read = {key: 0 for key in streams}
  for step, batch in enumerate(batches):
    taken = {"math": 0, "web": 0}
    for slot, row in enumerate(batch["decoder_target_tokens"]):
      v = slot // it.rows_per_shard  # shard v fills its own part of the batch
      domain = next(d for d in taken if streams[d, v][read[d, v]] == row.tobytes())
      read[domain, v] += 1
      taken[domain] += 1
    assert taken == ({"math": 0, "web": 8} if step < 3 else {"math": 6, "web": 2})
    metrics = it.step_metrics(step + 1)
    assert metrics["mixture/math/weight_realised"] == taken["math"] / 8
    assert metrics["mixture/math/rows"] == read["math", 0] + read["math", 1]
  assert it.state()["shards"]["rows"] == [[read[d, v] for d in it.domains] for v in range(2)]


def test_resume_at_every_step_gives_the_uninterrupted_batches():
  config = _config(TWO_STAGES)
  it = scheduled_pipeline.make_batch_iterator(config, 1, None, 6)
  straight, states = [], [json.loads(json.dumps(it.state()))]
  for _ in range(6):
    straight.append(next(it))
    states.append(json.loads(json.dumps(it.state())))  # as the checkpoint stores it
  for k in range(1, 6):
    resumed = scheduled_pipeline.make_batch_iterator(config, seed=99, shard_info=None,
                                                     total_steps=6, state=states[k])
    _assert_same_batches(_take(resumed, 6 - k), straight[k:])
    assert resumed.state() == states[6]
  pure = allocation.state_at(it.allocator.source, config.batch_size, 4)
  assert tuple(states[4]["rows"].values()) == pure.rows_D  # a pure function of the step
  with pytest.raises(StopIteration):
    next(it)  # the stream holds the run's steps, no more


def test_every_host_count_reads_the_same_batches_by_default_each_host_a_disjoint_share():
  config = _config(TWO_STAGES, batch_size=16)  # 4 virtual shards by default
  single = _take(scheduled_pipeline.make_batch_iterator(config, 0, None, 6), 6)
  for hosts in (2, 4):
    per_host = [_take(scheduled_pipeline.make_batch_iterator(
        config, 0, seqio.ShardInfo(h, hosts), 6), 6) for h in range(hosts)]
    union = [{k: np.concatenate([b[k] for b in step]) for k in step[0]}
             for step in zip(*per_host)]
    _assert_same_batches(union, single)
    rows = [{r.tobytes() for b in host for r in b["decoder_target_tokens"]} for host in per_host]
    assert not set.intersection(*rows)  # shard v reads only documents v mod 4
  with pytest.raises(ValueError, match=r"multiple of the host count \(8\).*one of \[8, 16\]"):
    scheduled_pipeline.make_batch_iterator(config, 0, seqio.ShardInfo(0, 8), 6)


def test_default_shards_follow_the_batch_size_only():
  assert [pipeline.default_num_shards(b) for b in (1, 4, 6, 8, 16, 24, 256, 4096)] == [
      1, 1, 1, 2, 4, 4, 64, 64]


def test_shards_get_their_share_of_every_domain_within_three_rows():
  rng = np.random.default_rng(0)
  owed_VD, given_VD, total_D = np.zeros((8, 5)), np.zeros((8, 5), np.int64), np.zeros(5)
  for step in range(500):
    counts_D = rng.multinomial(32, [0.5, 0.3, 0.12, 0.05, 0.03])
    counts_VD, owed_VD = allocation.split_over_shards(counts_D, owed_VD, first=step % 8)
    assert (counts_VD.sum(axis=1) == 4).all() and (counts_VD.sum(axis=0) == counts_D).all()
    given_VD += counts_VD
    total_D += counts_D
    assert np.abs(given_VD - total_D / 8).max() <= 3  # measured: 2.625 over 3,000 steps


def test_repeat_cap_names_the_domain_and_the_fix(caplog):
  config = _config(mixtures.constant_schedule({"math": 3.0, "web": 1.0}))
  cap = scheduled_pipeline.MixingConfig(max_epochs={"math": 2.0})
  math_rows = accounting.count_domain_size(f"{mixture_tasks.PREFIX}_math", config, 10**6).rows
  steps = math_rows // 2  # 6 of 8 rows per step are math: 3 epochs of it
  with pytest.raises(accounting.RepeatCapError,
                     match=r"'math': [23]\.\d\d epochs .* > cap 2.*unimax_rates\(max_epochs=...\)"):
    scheduled_pipeline.make_batch_iterator(config, 0, None, steps, mixing=cap)
  warn = scheduled_pipeline.MixingConfig(max_epochs=2.0, on_exceed="warn")
  scheduled_pipeline.make_batch_iterator(config, 0, None, steps, mixing=warn)
  assert "'math': " in caplog.text and "MixingConfig.max_epochs" in caplog.text
  scheduled_pipeline.make_batch_iterator(config, 0, None, steps // 2, mixing=cap)  # 1.5: fine


def test_static_rates_are_a_constant_schedule_through_the_exact_allocator():
  static = scheduled_pipeline.make_batch_iterator(_config(None), 0, None, 6)
  constant = scheduled_pipeline.make_batch_iterator(
      _config(mixtures.constant_schedule(mixture_tasks.TWO)), 0, None, 6)
  _assert_same_batches(_take(static, 6), _take(constant, 6))
  # math 1 : web 3 over 8 rows a step: exactly 12 and 36 rows after 6 steps, not in expectation.
  assert static.state()["rows"] == {"math": 12, "web": 36}
  assert static.step_metrics(6)["mixture/web/weight_scheduled"] == 0.75


def test_old_static_iterator_state_is_refused_with_the_reason():
  with pytest.raises(ValueError, match="old static-mixture iterator"):
    scheduled_pipeline.make_batch_iterator(_config(None), 0, None, 6,
                                           state={"batches_consumed": 3, "seed": 0})


class _FollowLoss(sources.WeightSource):
  """A toy weight source updated from training: weights proportional to the last losses."""

  def __init__(self, domains):
    self.domains, self.w_D = tuple(domains), np.full(len(domains), 1.0 / len(domains))

  def weights_D(self, step):
    return self.w_D

  def update(self, step, stats):
    loss_D = np.asarray([stats[d] for d in self.domains], float)
    self.w_D = loss_D / loss_D.sum()

  def state(self):
    return {"w": self.w_D.tolist()}

  def restore(self, state):
    self.w_D = np.asarray(state["w"])


def test_a_weight_source_updated_during_training_steers_the_next_batches_and_resumes():
  config = _config(None)

  def run(updates, state=None, steps=6, start=0):
    it = scheduled_pipeline.make_batch_iterator(config, 0, None, 6, state=state,
                                                weight_source=_FollowLoss(("math", "web")))
    out = []
    for step in range(start, steps):
      out.append(next(it))
      it.update(step + 1, updates[step])
    return out, it
  updates = [{"math": 1.0, "web": 1.0}, {"math": 3.0, "web": 1.0}, {"math": 1.0, "web": 0.0}] * 2
  straight, it = run(updates)
  assert it.step_metrics(3)["mixture/math/weight_scheduled"] == 0.75  # set after step 2
  assert it.step_metrics(4)["mixture/math/rows"] == 4 + 4 + 6 + 8
  half, half_it = run(updates, steps=3)
  state = json.loads(json.dumps(half_it.state()))
  rest, _ = run(updates, state=state, start=3)
  _assert_same_batches(half + rest, straight)


# ----------------------------------------------------------------------------------------------
# Training.


def test_training_logs_accounting_per_domain_eval_and_a_plot(tmp_path):
  kwargs = helpers.tiny_train_kwargs(tmp_path, mixture_tasks.TWO, steps=6, eval_period=3)
  kwargs["data"] = _config(mixtures.upsample_at_end(mixture_tasks.TWO, 0.5, {"math": 4.0}))
  kwargs["mixing"] = scheduled_pipeline.MixingConfig(count_sizes=True)  # epochs in the metrics
  loop.train(**kwargs)
  lines = metrics_lib.read_metrics(tmp_path)
  train = [m for m in lines if "loss" in m]
  math = [m["mixture/math/weight_scheduled"] for m in train]
  np.testing.assert_allclose(math, [0.25] * 3 + [4 / 7] * 3)  # rates 1:3, then 4:3
  tokens = [m["mixture/web/tokens"] for m in train]
  assert all(b > a for a, b in zip(tokens, tokens[1:]))
  assert train[-1]["mixture/web/epochs"] == pytest.approx(
      tokens[-1] / accounting.count_domain_size(f"{mixture_tasks.PREFIX}_web", kwargs["data"],
                                                200_000).tokens)
  assert train[-1]["mixture/math/rows"] + train[-1]["mixture/web/rows"] == 6 * 8
  evals = [m for m in lines if "eval/math/loss" in m]
  assert [m["step"] for m in evals] == [3, 6]
  assert "eval/web/loss" in evals[-1] and "probe/math/arithmetic/accuracy" in evals[-1]
  mixture_axes = report.report_figure(lines, window=2).axes[2]
  assert len(mixture_axes.get_lines()) == 2 * 2  # per domain: scheduled and realised
  with open(report.write_report(str(tmp_path), window=2), "rb") as f:  # what train() drew too
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _binary(args, log_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  return subprocess.Popen([sys.executable, "-m", "mixjax.train", *args], cwd=REPO, env=env,
                          stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


def _checkpoints(model_dir):
  path = model_dir / "checkpoints"
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if path.exists() else []


def _by_step(model_dir):
  """{step: (loss, batch fingerprint)} for every training line, checking repeats agree."""
  seen = {}
  for m in metrics_lib.read_metrics(model_dir):
    if "loss" in m:
      value = (m["loss"], m["data/fingerprint"])
      assert seen.setdefault(m["step"], value) == value, m["step"]  # redone after the kill
  return seen


def test_sigkill_mid_run_then_resume_matches_the_uninterrupted_run(tmp_path):
  (tmp_path / "tasks.gin").write_text("import tests.mixture_tasks\n")
  steps = 16
  args = ["--gin_file=gin/runs/pretrain.gin", "--gin_file=gin/models/tiny.gin",
          f"--gin_file={tmp_path / 'tasks.gin'}", "--gin_file=gin/upsample.gin",
          f"--gin.MIXTURE_OR_TASK_NAME='{mixture_tasks.TWO}'",
          "--gin.TASK_FEATURE_LENGTHS={'targets': 32}", "--gin.BATCH_SIZE=8",
          f"--gin.TRAIN_STEPS={steps}", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=0",
          "--gin.EvalConfig.num_batches=1", "--gin.EvalConfig.max_probes=4",
          "--gin.RunConfig.log_period=1", "--gin.RunConfig.progress_bar=False",
          "--gin.CheckpointConfig.keep=50", "--gin.OptimizerConfig.warmup_steps=1"]
  straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
  straight = _binary(args + [f"--gin.MODEL_DIR='{straight_dir}'"], tmp_path / "straight.log")
  killed = _binary(args + [f"--gin.MODEL_DIR='{killed_dir}'"], tmp_path / "killed.log")
  deadline = time.time() + 500
  while killed.poll() is None and not _checkpoints(killed_dir) and time.time() < deadline:
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  assert killed.wait() == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
  last = _checkpoints(killed_dir)[-1]
  assert last < steps
  resumed = _binary(args + [f"--gin.MODEL_DIR='{killed_dir}'"], tmp_path / "resumed.log")
  assert resumed.wait(timeout=500) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
  assert straight.wait(timeout=500) == 0, (tmp_path / "straight.log").read_text()[-3000:]
  expected, got = _by_step(straight_dir), _by_step(killed_dir)
  assert sorted(got) == sorted(expected) == list(range(1, steps + 1))
  for step in expected:  # same batches, same losses: before the kill, after it, and redone
    assert got[step][1] == expected[step][1], step
    np.testing.assert_allclose(got[step][0], expected[step][0], rtol=1e-6, err_msg=str(step))
