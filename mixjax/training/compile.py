"""Ahead-of-time compilation and the dry run: does this config fit that slice, and how fast could it be?

`dry_run(...)` builds the train step with the same function training uses
(`trainer.jit_train_step`), lowers it on abstract state and batch (nothing is allocated, nothing
trains) for a target, compiles it, and reports sizes, FLOPs, the compiled executable's memory
per device and a roofline estimate. Targets:

- a TPU slice by name, through libtpu's compile-only devices (`pip install 'mixjax[tpu]'`; no TPU
  needed): `v5e:4x4`, `v4:2x2x2`, `v5p:4x4x4`, `v6e:8x8`, or MaxText-style `v5e-256`, `v4-8`,
  `v5p-128` (v4 / v5p count TensorCores, two per chip; v5e / v6e count chips), times
  `num_slices` (multi-slice: the data axis spans the slices);
- the local devices (no topology).

`python -m mixjax.train --gin_file=... --dry_run [--topology=NAME] [--num_slices=N]
[--dry_run_step=train|eval|decode]` calls it (the eval step and one KV-cached decode step compile
the same way as the train step),
writes `MODEL_DIR/dry_run.json`, prints `format_report(...)` and exits 4 when the step does not
fit in HBM.
"""

import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping

import jax
from jax.experimental import topologies
import jax.numpy as jnp
import numpy as np

from mixjax import vocab as vocab_lib
from mixjax.data import features
from mixjax.data import pipeline
from mixjax.eval import evaluator
from mixjax.models import transformer
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import trainer

# Exit status of the binary's dry run when the step does not fit.
EXIT_DOES_NOT_FIT = 4


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation's per-chip figures (one jax device = one chip, megacore where it has two
  TensorCores). Sources: cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e} system architecture pages."""
  name: str
  device_kind: str          # jax's `device.device_kind`
  peak_bf16_flops: float    # FLOP/s
  hbm_bytes: int
  hbm_bytes_per_second: float
  dims: int                 # 2 (v5e, v6e: 2D torus) or 3 (v4, v5p: 3D)
  cores_per_chip: int       # MaxText-style names count cores (v4-8 = 4 chips)
  chip_config_name: str | None = None


GiB = 2**30
CHIPS = {
    "v4": Chip("v4", "TPU v4", 275e12, 32 * GiB, 1228e9, 3, 2, "megacore"),
    "v5e": Chip("v5e", "TPU v5 lite", 197e12, 16 * GiB, 819e9, 2, 1),
    "v5p": Chip("v5p", "TPU v5", 459e12, 95 * GiB, 2765e9, 3, 2, "megacore"),
    "v6e": Chip("v6e", "TPU v6 lite", 918e12, 32 * GiB, 1640e9, 2, 1),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}


@dataclasses.dataclass(frozen=True)
class Topology:
  """A named TPU slice (times `num_slices`) and its compile-only devices."""
  name: str          # canonical, `v5e:4x4`
  chip: Chip
  num_slices: int
  devices: tuple


def _shape_for_chips(chip: Chip, num_chips: int) -> tuple[int, ...]:
  """The slice shape MaxText and Cloud TPU use for `num_chips` (2x2 / 2x2x1 and up, doubling
  one axis at a time from the last)."""
  if num_chips < 4 or num_chips & (num_chips - 1):
    raise ValueError(f"{num_chips} {chip.name} chips: named slices here have a power of two of "
                     "at least 4 chips (e.g. v5e-4, v4-8 = 4 chips).")
  shape = [2, 2] + [1] * (chip.dims - 2)
  axis = chip.dims - 1
  while math.prod(shape) < num_chips:
    shape[axis] *= 2
    axis = (axis - 1) % chip.dims
  return tuple(shape)


def parse_topology(name: str) -> tuple[Chip, str]:
  """`(chip, 'v5e:4x4')` from `v5e:4x4`, `v5e-16` or `v5litepod-16`; a clear error otherwise."""
  valid = ("valid: GEN:AxB (v5e, v6e) or GEN:AxBxC (v4, v5p), e.g. v5e:4x4, v4:2x2x2, or "
           "MaxText-style GEN-N, e.g. v5e-256, v4-8, v5p-128")
  match = re.fullmatch(r"(v\d+[a-z]*)(?::(\d+(?:x\d+)+)|-(\d+))", name.strip().lower())
  if not match:
    raise ValueError(f"Unknown topology {name!r}; {valid}.")
  generation, shape_text, count = match.groups()
  chip = CHIPS.get(_ALIASES.get(generation, generation))
  if chip is None:
    raise ValueError(f"Unknown TPU generation {generation!r} in topology {name!r}; known: "
                     f"{sorted(CHIPS)}; {valid}.")
  if count is not None:
    cores = int(count)
    if cores % chip.cores_per_chip:
      raise ValueError(f"{name!r}: {chip.name} names count TensorCores ({chip.cores_per_chip} per "
                       "chip); the count must be a multiple of that.")
    shape = _shape_for_chips(chip, cores // chip.cores_per_chip)
  else:
    shape = tuple(int(s) for s in shape_text.split("x"))
    if len(shape) != chip.dims:
      raise ValueError(f"{name!r}: a {chip.name} slice has {chip.dims} dimensions; {valid}.")
  return chip, f"{chip.name}:{'x'.join(map(str, shape))}"


def tpu_topology(name: str, num_slices: int = 1) -> Topology:
  """The compile-only devices of `num_slices` slices of the named topology (needs libtpu)."""
  if num_slices < 1:
    raise ValueError(f"num_slices={num_slices} must be at least 1.")
  chip, canonical = parse_topology(name)
  kwargs = {"chip_config_name": chip.chip_config_name} if chip.chip_config_name else {}
  if num_slices > 1:
    kwargs["num_slices"] = num_slices
  try:
    desc = topologies.get_topology_desc(topology_name=canonical, platform="tpu", **kwargs)
  except RuntimeError as e:  # JaxRuntimeError, or "JAX TPU support not installed"
    hint = ("install libtpu: pip install 'mixjax[tpu]'" if "not installed" in str(e)
            else "check the slice shape (each side a multiple of the host's 2x2 chips)")
    raise ValueError(f"Cannot build TPU topology {canonical!r} ({name!r}): {e}; {hint}.") from e
  return Topology(canonical, chip, num_slices, tuple(desc.devices))


# ----------------------------------------------------------------------------------------------
# What the step costs, counted from the configs.


def abstract_batch(data: pipeline.DataConfig, mesh) -> dict[str, jax.ShapeDtypeStruct]:
  """The global training batch as the pipeline gives it (SeqIO model features, int32 [B, L])."""
  converter = features.feature_converter(data.feature_converter, data.pack)
  lengths = converter.get_model_feature_lengths(dict(data.task_feature_lengths))
  sharding = partitioning.batch_sharding(mesh)
  return {name: jax.ShapeDtypeStruct((data.batch_size, length), np.int32, sharding=sharding)
          for name, length in lengths.items()}


def param_counts(params) -> dict[str, int]:
  """Total, input-embedding and other parameters of an (abstract) parameter tree."""
  total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  embedding = math.prod(params["embedding"].shape) if "embedding" in params else 0
  return {"params_total": total, "params_embedding": embedding,
          "params_non_embedding": total - embedding}


def flops_per_token(model: transformer.TransformerConfig, params_non_embedding: int,
                    seq_len: int) -> float:
  """Analytic training FLOPs per token: 6 N (N: parameters other than the input embedding, so
  the unembedding matmul counts) plus attention, 6 x layers x heads x head_dim x seq_len: the
  QK^T and PV matmuls (2 x 2 FLOPs per score, x3 for forward + backward) over the causal half
  of the T x T scores. Encoder-decoder: both stacks at the same length, cross-attention counted
  as full (not causal)."""
  attention = 6 * model.num_layers * model.num_heads * model.head_dim * seq_len
  if model.architecture == "encoder_decoder":
    attention = attention * 2 + 12 * model.num_layers * model.num_heads * model.head_dim * seq_len
  return 6.0 * params_non_embedding + attention


def _bytes_per_device(compiled) -> dict[str, int]:
  stats = compiled.memory_analysis()
  argument, output = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
  temp, alias = int(stats.temp_size_in_bytes), int(stats.alias_size_in_bytes)
  code = int(getattr(stats, "generated_code_size_in_bytes", 0))
  # Donated state aliases its outputs, so live bytes are arguments + outputs + temporaries less
  # what is aliased (what XLA's own peak estimate reports where it offers one).
  peak = int(getattr(stats, "peak_memory_in_bytes", 0)) or argument + output + temp - alias + code
  return {"argument": argument, "output": output, "temp": temp, "alias": alias, "peak": peak}


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_HBM_OOM = re.compile(r"required for .*?\(([\d.]+)([KMGT]?)\) exceeds available HBM "
                      r"\(([\d.]+)([KMGT]?)\)", re.S)


def _hbm_overflow(error: Exception) -> int | None:
  """Bytes per device the compiler said the step needs, when it refused it for lack of HBM."""
  match = _HBM_OOM.search(str(error))
  if "RESOURCE_EXHAUSTED" not in str(error) or not match:
    return None
  return int(float(match.group(1)) * _UNITS[match.group(2)])


def _compile(lowered):
  """`(compiled, None)`, or `(None, bytes needed)` when XLA refuses the step for lack of HBM (the
  TPU compiler checks the fit itself); any other compile error propagates."""
  try:
    return lowered.compile(), None
  except jax.errors.JaxRuntimeError as e:
    needed = _hbm_overflow(e)
    if needed is None:
      raise
    return None, needed


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per executable
    cost = cost[0] if cost else {}
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


# ----------------------------------------------------------------------------------------------
# The dry run.


def _sized(model: transformer.TransformerConfig, data: pipeline.DataConfig):
  if model.vocab_size is not None:
    return model
  return dataclasses.replace(model, vocab_size=vocab_lib.embedding_size(data.vocabulary))


STEPS = ("train", "eval", "decode")


def _lower_decode_step(decoder, abstract_params, mesh, rules, batch: int, cache_len: int,
                       impl: str):
  """Lowers one cached decode step (`[B, 1]` tokens against a `cache_len`-slot KV cache, the
  cache donated and updated in place), as generation runs it; the cache is split over the batch
  axes like the rows."""
  rows = partitioning.batch_sharding(mesh)

  def prefill_cache(params):  # only its shapes: the cache's size does not depend on the prompt
    tokens_BT = jnp.zeros((batch, 8), jnp.int32)
    prefill = transformer.Decode("prefill", jnp.full((batch,), 8, jnp.int32), cache_len, impl)
    return decoder.apply({"params": params}, tokens_BT, decode=prefill, mutable=["cache"])[1]

  def step(params, cache, tokens_B1, lengths_B):
    logits_B1V, variables = decoder.apply(
        {"params": params, **cache}, tokens_B1, positions_BT=lengths_B[:, None],
        decode=transformer.Decode("step", lengths_B, impl=impl, mesh=mesh), mutable=["cache"])
    return logits_B1V, variables

  with partitioning.mesh_context(mesh, rules):
    cache_shapes = jax.eval_shape(prefill_cache, abstract_params)
    cache = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows),
                         cache_shapes)
    tokens_B1 = jax.ShapeDtypeStruct((batch, 1), np.int32, sharding=rows)
    lengths_B = jax.ShapeDtypeStruct((batch,), np.int32, sharding=rows)
    jitted = jax.jit(step, out_shardings=(rows, jax.tree.map(lambda x: x.sharding, cache)),
                     donate_argnums=1)
    return jitted.lower(abstract_params, cache, tokens_B1, lengths_B)


def decode_flops_per_token(model: transformer.TransformerConfig, params_non_embedding: int,
                           cache_len: int) -> float:
  """Analytic FLOPs of one decode step per row: 2 N (forward) plus attention over a full cache,
  4 x layers x heads x head_dim x cache_len (QK^T and PV, 2 FLOPs per multiply-add)."""
  return 2.0 * params_non_embedding + 4 * model.num_layers * model.num_heads * model.head_dim * cache_len


def dry_run(data: pipeline.DataConfig, model: transformer.TransformerConfig,
            optimizer: optim.OptimizerConfig, mesh_config: partitioning.MeshConfig, *,
            train_steps: int = 1, topology: str | None = None, num_slices: int = 1,
            step: str = "train") -> dict[str, Any]:
  """Compiles one step for `topology` (or the local devices); returns the report dict.

  `step`: `train` (the train step, state donated), `eval` (per-row loss sums, the evaluation
  step, on a batch of the same shape) or `decode` (one KV-cached generation step for
  `batch_size` rows with a cache of the row length; decoder-only models).
  Raises ValueError for an unknown topology or step, or a mesh that does not tile its devices.
  """
  if step not in STEPS:
    raise ValueError(f"Unknown dry-run step {step!r}; valid: {', '.join(STEPS)}.")
  if step == "decode" and model.architecture != "decoder":
    raise ValueError("The decode dry run supports decoder-only models (architecture='decoder').")
  if topology is not None:
    target = tpu_topology(topology, num_slices)
    devices, chip, target_name = list(target.devices), target.chip, target.name
    if num_slices > 1:
      target_name = f"{num_slices}x {target_name}"
  else:
    if num_slices != 1:
      raise ValueError("--num_slices needs --topology (the local devices are one slice).")
    devices, chip, target_name = jax.devices(), None, f"local:{jax.default_backend()}"
    chip = next((c for c in CHIPS.values() if c.device_kind == devices[0].device_kind), None)
  model = _sized(model, data)
  try:
    mesh = partitioning.make_mesh(mesh_config, devices)
  except (ValueError, AssertionError, NotImplementedError) as e:
    raise ValueError(f"MESH_SHAPE {tuple(mesh_config.shape)} does not tile {target_name} "
                     f"({len(devices)} devices): {e}") from e
  devices = list(mesh.devices.flat)  # MeshConfig.num_devices may use fewer than the target has
  dp = partitioning.data_parallel_size(mesh)
  if data.batch_size % dp:
    raise ValueError(f"batch_size={data.batch_size} must be a multiple of the data-parallel size "
                     f"{dp} (mesh {dict(mesh.shape)} on {target_name}).")
  decoder = transformer.build_model(model)
  tx = optim.make_optimizer(optimizer, train_steps)
  abstract_state, shardings = trainer.abstract_state_and_shardings(
      decoder, tx, mesh, mesh_config.rules, (dp, 8))
  batch = abstract_batch(data, mesh)
  counts = param_counts(abstract_state.params)
  seq_len = data.row_length
  tokens_per_step = data.batch_size * seq_len
  per_token = flops_per_token(model, counts["params_non_embedding"], seq_len)
  if step == "train":
    with partitioning.mesh_context(mesh, mesh_config.rules):
      lowered = trainer.jit_train_step(decoder, tx, mesh, shardings).lower(abstract_state, batch)
  elif step == "eval":
    per_token /= 3  # the forward pass alone
    with partitioning.mesh_context(mesh, mesh_config.rules):
      lowered = evaluator.jit_row_sums(decoder, mesh).lower(abstract_state.params, batch)
  else:
    tokens_per_step = data.batch_size  # one new token per row
    per_token = decode_flops_per_token(model, counts["params_non_embedding"], seq_len)
    impl = "pallas" if model.attention_impl == "pallas" else "xla"
    lowered = _lower_decode_step(decoder, abstract_state.params, mesh, mesh_config.rules,
                                 data.batch_size, seq_len, impl)
  compiled, needed = _compile(lowered)
  if compiled is None:  # only the compiler's total is known
    bytes_per_device = dict.fromkeys(("argument", "output", "temp", "alias"), None)
    bytes_per_device["peak"] = needed
    cost = {"flops": None, "bytes_accessed": None}
  else:
    bytes_per_device = _bytes_per_device(compiled)
    cost = _cost(compiled)  # per device: the compiled program is one SPMD partition
  report = {
      "step": step,
      "topology": target_name, "num_devices": len(devices), "num_slices": num_slices,
      "device_kind": devices[0].device_kind, "mesh": dict(mesh.shape),
      **counts,
      "seq_len": seq_len, "batch_size": data.batch_size, "tokens_per_step": tokens_per_step,
      "flops_per_token": per_token,
      "xla_flops_per_step": None if compiled is None else cost["flops"] * len(devices),
      "xla_bytes_accessed_per_device": cost["bytes_accessed"],
      "bytes_per_device": bytes_per_device,
      "dtype": model.dtype, "remat": transformer.remat_policy(model.remat),
      "attention_impl": model.attention_impl,
  }
  report.update(_fit_and_roofline(chip, devices, bytes_per_device["peak"], cost,
                                  per_token * tokens_per_step))
  return report


def _fit_and_roofline(chip: Chip | None, devices, peak_bytes: int, cost, model_flops: float):
  """`hbm_bytes_per_device`, `fits`, and the roofline step time / MFU (None where unknown)."""
  hbm = chip.hbm_bytes if chip else (devices[0].memory_stats() or {}).get("bytes_limit")
  out = {"hbm_bytes_per_device": hbm, "fits": True if hbm is None else peak_bytes <= hbm,
         "roofline_step_seconds": None, "roofline_mfu": None}
  if chip is not None and cost["flops"] is not None:
    # The slower of compute and HBM traffic at peak; MFU counts the analytic model FLOPs only.
    seconds = max(cost["flops"] / chip.peak_bf16_flops,
                  cost["bytes_accessed"] / chip.hbm_bytes_per_second)
    out["roofline_step_seconds"] = seconds
    if seconds > 0:
      out["roofline_mfu"] = model_flops / (len(devices) * chip.peak_bf16_flops * seconds)
    out["peak_bf16_flops_per_chip"] = chip.peak_bf16_flops
    out["hbm_bytes_per_second_per_chip"] = chip.hbm_bytes_per_second
  return out


def levers(report: Mapping[str, Any]) -> str:
  """What to change when the step does not fit (the message of exit status 4)."""
  mesh = report["mesh"]
  return (f"The step needs {report['bytes_per_device']['peak'] / GiB:.2f} GiB per device but "
          f"{report['topology']} has {report['hbm_bytes_per_device'] / GiB:.2f} GiB. Levers: "
          f"shard parameters and optimiser state over more devices (MESH_SHAPE fsdp, now "
          f"{mesh['fsdp']}; or tensor, now {mesh['tensor']}); rematerialise more "
          f"(TransformerConfig.remat, now '{report['remat']}': 'dots_saveable' or 'full'); a "
          f"smaller BATCH_SIZE (now {report['batch_size']}) or sequence length "
          f"(TASK_FEATURE_LENGTHS, {report['seq_len']} per row); or a larger slice (--topology).")


def _human(n: float | None, unit: str = "") -> str:
  if n is None:
    return "-"
  for scale, suffix in ((2**40, "Ti"), (GiB, "Gi"), (2**20, "Mi")) if unit == "B" else (
      (1e12, "T"), (1e9, "G"), (1e6, "M")):
    if abs(n) >= scale:
      return f"{n / scale:.2f} {suffix}{unit}"
  return f"{n:.4g} {unit}".strip()


def format_report(report: Mapping[str, Any]) -> str:
  """The printed table: one `key  value` line per reported figure."""
  b = report["bytes_per_device"]
  rows = [
      ("step", report.get("step", "train")),
      ("topology", f"{report['topology']} ({report['device_kind']})"),
      ("num_devices", report["num_devices"]),
      ("mesh", " ".join(f"{k}={v}" for k, v in report["mesh"].items())),
      ("params_total", _human(report["params_total"])),
      ("params_embedding", _human(report["params_embedding"])),
      ("params_non_embedding", _human(report["params_non_embedding"])),
      ("tokens_per_step", f"{report['tokens_per_step']} ({report['batch_size']} x "
                          f"{1 if report.get('step') == 'decode' else report['seq_len']})"),
      ("flops_per_token", _human(report["flops_per_token"], "FLOP")),
      ("xla_flops_per_step", _human(report["xla_flops_per_step"], "FLOP")),
      *((f"bytes_per_device.{k}", _human(v, "B")) for k, v in b.items()),
      ("hbm_bytes_per_device", _human(report["hbm_bytes_per_device"], "B")),
      ("fits", report["fits"]),
      ("roofline_step_seconds", "-" if report["roofline_step_seconds"] is None
       else f"{report['roofline_step_seconds']:.4g}"),
      ("roofline_mfu", "-" if report["roofline_mfu"] is None
       else f"{report['roofline_mfu']:.3f}"),
  ]
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_report(model_dir: str, report: Mapping[str, Any]) -> str:
  """Writes `MODEL_DIR/dry_run.json` (`dry_run_eval.json`, `dry_run_decode.json` for those
  steps); returns its path."""
  os.makedirs(model_dir, exist_ok=True)
  step = report.get("step", "train")
  path = os.path.join(model_dir, "dry_run.json" if step == "train" else f"dry_run_{step}.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
  return path
