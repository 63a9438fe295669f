"""The dry run: the real train step compiled ahead of time for named TPU slices (libtpu's
compile-only devices, no TPU here) and for the local devices, with its report and its errors."""

import json
import math

import gin
import jax
import pytest

from mixjax import train
from mixjax.training import compile as compile_lib
from mixjax.training import loop
from mixjax.training import partitioning
from mixjax.training import trainer
from mixjax.models import transformer
from tests import helpers

pytest.importorskip("libtpu", reason="the [tpu] extra (libtpu) gives the compile-only devices")


def _configs(*bindings):
  return helpers.tiny_run_configs(*bindings)


def _main(args):
  gin.clear_config()
  try:
    return train.main(args)
  finally:
    gin.clear_config()


def _dry_run(configs, **kwargs):
  return compile_lib.dry_run(configs["data"], configs["model"], configs["optimizer"],
                             configs["mesh"], **kwargs)


@pytest.fixture(scope="module")
def tiny_v5e():
  """The tiny run on v5e:2x2 with data=2, fsdp=2 (one compile shared by the tests below), and
  how many times it built the step with `trainer.jit_train_step`, the function training uses."""
  original, calls = trainer.jit_train_step, []

  def counting(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  trainer.jit_train_step = counting
  try:
    report = _dry_run(_configs("MESH_SHAPE=(2, 2, 1)"), topology="v5e:2x2")
  finally:
    trainer.jit_train_step = original
  return dict(report, jit_train_step_calls=len(calls))


def test_dry_run_compiles_the_function_training_runs(tiny_v5e):
  assert tiny_v5e["jit_train_step_calls"] == 1


def test_tiny_dry_run_on_v5e_reports_the_compiled_step(tiny_v5e):
  r = tiny_v5e
  assert r["topology"] == "v5e:2x2" and r["num_devices"] == 4 and r["device_kind"] == "TPU v5 lite"
  assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert r["tokens_per_step"] == 8 * 64 and r["fits"] is True
  assert r["hbm_bytes_per_device"] == 16 * 2**30
  b = r["bytes_per_device"]
  assert b["argument"] > 0 and b["alias"] > 0 and b["peak"] >= b["argument"]
  # XLA's own count and the analytic one agree to within what the analytic count leaves out
  # (norms, softmax, the optimiser).
  analytic = r["flops_per_token"] * r["tokens_per_step"]
  assert 0.8 < r["xla_flops_per_step"] / analytic < 1.5
  assert 0 < r["roofline_mfu"] <= 1 and r["roofline_step_seconds"] > 0
  json.dumps(r)  # what dry_run.json holds


def test_params_total_is_the_real_parameter_count(tiny_v5e):
  configs = _configs()
  model = compile_lib._sized(configs["model"], configs["data"])
  params = jax.eval_shape(transformer.build_model(model).init, jax.random.key(0),
                          jax.numpy.zeros((1, 8), jax.numpy.int32))["params"]
  real = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  assert tiny_v5e["params_total"] == real
  assert tiny_v5e["params_embedding"] == model.vocab_size * model.d_model
  assert tiny_v5e["params_non_embedding"] == real - model.vocab_size * model.d_model


def test_v4_megacore_slice_and_peak_bytes_grow_with_batch():
  """v4:2x2x1 is 4 megacore chips; a larger batch needs more bytes per device."""
  small = _dry_run(_configs("BATCH_SIZE=4"), topology="v4:2x2x1")
  big = _dry_run(_configs("BATCH_SIZE=64"), topology="v4:2x2x1")
  assert small["num_devices"] == 4 and small["mesh"]["data"] == 4
  assert big["bytes_per_device"]["peak"] > small["bytes_per_device"]["peak"]


def test_pallas_attention_compiles_inside_the_sharded_step_on_v5e():
  """ATTENTION_IMPL='pallas': the Mosaic kernel under shard_map in the full train step."""
  r = _dry_run(_configs("MESH_SHAPE=(2, 2, 1)", "ATTENTION_IMPL='pallas'",
                        "TASK_FEATURE_LENGTHS={'targets': 128}"), topology="v5e:2x2")
  assert r["fits"] and r["attention_impl"] == "pallas" and r["mesh"]["fsdp"] == 2


def test_topology_names():
  assert compile_lib.parse_topology("v5e-256")[1] == "v5e:16x16"
  assert compile_lib.parse_topology("v5litepod-16")[1] == "v5e:4x4"
  assert compile_lib.parse_topology("v4-8")[1] == "v4:2x2x1"      # 8 TensorCores = 4 chips
  assert compile_lib.parse_topology("v5p-128")[1] == "v5p:4x4x4"
  assert compile_lib.parse_topology("v6e:8x8")[1] == "v6e:8x8"
  assert len(compile_lib.tpu_topology("v5e:2x2", num_slices=2).devices) == 8


@pytest.mark.parametrize("name,match", [
    ("v9:2x2", "Unknown TPU generation 'v9'"),
    ("tpu-big", "Unknown topology 'tpu-big'"),
    ("v5e:2x2x2", "a v5e slice has 2 dimensions"),
    ("v4-7", "must be a multiple"),
    ("v5e-6", "power of two"),
    ("v5e:3x3", "Cannot build TPU topology 'v5e:3x3'"),
])
def test_unknown_topology_is_a_clear_error(name, match):
  with pytest.raises(ValueError, match=match):
    compile_lib.tpu_topology(name)


def test_mesh_that_does_not_tile_the_slice_is_a_clear_error():
  with pytest.raises(ValueError, match=r"MESH_SHAPE \(2, 4, 1\) does not tile v5e:2x2 \(4 devices\)"):
    _dry_run(_configs("MESH_SHAPE=(2, 4, 1)"), topology="v5e:2x2")


def test_multi_slice_data_axis_must_span_the_slices():
  with pytest.raises(ValueError, match="multiple of the number of slices"):
    partitioning.make_mesh(partitioning.MeshConfig(shape=(1, 8, 1)),
                           compile_lib.tpu_topology("v5e:2x2", num_slices=2).devices)


def test_hbm_overflow_is_read_from_the_compiler_error():
  error = jax.errors.JaxRuntimeError(
      "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
      "temporaries (429.68G) exceeds available HBM (95.74G).")
  assert compile_lib._hbm_overflow(error) == int(429.68 * 2**30)
  assert compile_lib._hbm_overflow(jax.errors.JaxRuntimeError("INTERNAL: other")) is None


def test_binary_exits_4_naming_the_levers_when_the_step_does_not_fit(tmp_path, capsys):
  """A v5e chip holds 16 GiB: a 0.5B-parameter model (AdamW, fp32: 8 GB) on one chip's share
  with a long batch does not fit, and the binary says what to change."""
  args = ["--gin_file=gin/runs/tiny.gin", f"--gin.MODEL_DIR='{tmp_path}'",
          "--gin.MESH_SHAPE=(4, 1, 1)", "--gin.TransformerConfig.vocab_size=262144",
          "--gin.TransformerConfig.d_model=2048", "--dry_run", "--topology=v5e:2x2"]
  with pytest.raises(SystemExit) as exit_info:
    _main(args)
  assert exit_info.value.code == compile_lib.EXIT_DOES_NOT_FIT
  report = json.loads((tmp_path / "dry_run.json").read_text())
  assert report["fits"] is False and report["bytes_per_device"]["peak"] > 16 * 2**30
  err = capsys.readouterr().err
  for lever in ("fsdp", "remat", "BATCH_SIZE", "TASK_FEATURE_LENGTHS"):
    assert lever in err


def test_local_devices_dry_run_writes_the_report(tmp_path):
  report = _main(["--gin_file=gin/runs/tiny.gin", f"--gin.MODEL_DIR='{tmp_path}'",
                  "--gin.MESH_SHAPE=(2, 1, 1)", "--gin.MeshConfig.num_devices=2", "--dry_run"])
  assert report["topology"] == "local:cpu" and report["num_devices"] == 2
  assert report["fits"] is True and report["roofline_mfu"] is None
  assert json.loads((tmp_path / "dry_run.json").read_text())["params_total"] == report[
      "params_total"]


def test_eval_and_decode_steps_dry_run_on_v5e(tiny_v5e):
  configs = _configs("MESH_SHAPE=(2, 2, 1)")
  evaluation = _dry_run(configs, topology="v5e:2x2", step="eval")
  assert evaluation["step"] == "eval" and evaluation["fits"]
  assert evaluation["tokens_per_step"] == tiny_v5e["tokens_per_step"]
  # No gradients, no optimiser state: less memory and a third of the train step's FLOPs.
  assert evaluation["bytes_per_device"]["peak"] < tiny_v5e["bytes_per_device"]["peak"]
  assert evaluation["flops_per_token"] == pytest.approx(tiny_v5e["flops_per_token"] / 3)
  decode = _dry_run(configs, topology="v5e:2x2", step="decode")
  assert decode["step"] == "decode" and decode["tokens_per_step"] == configs["data"].batch_size
  assert decode["xla_flops_per_step"] > 0
  assert "decode" in compile_lib.format_report(decode)
  with pytest.raises(ValueError, match="valid: train, eval, decode"):
    _dry_run(configs, topology="v5e:2x2", step="prefill")


def test_pallas_decode_step_compiles_for_tpu_inside_the_mesh():
  configs = _configs("MESH_SHAPE=(2, 2, 1)", "ATTENTION_IMPL='pallas'",
                     "TransformerConfig.head_dim=128")
  report = _dry_run(configs, topology="v5e:2x2", step="decode")
  assert report["attention_impl"] == "pallas" and report["xla_flops_per_step"] > 0


def test_binary_dry_run_step_flag():
  flags, rest = train._dry_run_flags(["--dry_run", "--dry_run_step=decode", "--gin.SEED=1"])
  assert flags.dry_run and flags.dry_run_step == "decode" and rest == ["--gin.SEED=1"]
  assert train._dry_run_flags([])[0].dry_run_step == "train"
