"""Hugging Face Llama 2/3, Qwen2 and Mistral checkpoints <-> mixjax run directories.

`import_hf(HF_DIR, MODEL_DIR)` writes a normal run directory: `run_configs.json` (the model as a
`TransformerConfig`, data with an `hf` vocabulary naming the tokenizer copied to `MODEL_DIR/hf/`,
the default optimiser, `train_steps=0`), `config.gin` (the task registrations `mixjax.eval`
reads) and `checkpoints/0` (a full `TrainState`: step 0, the parameters, a fresh optimiser
state), so `restore_run`, `mixjax.infer` and `mixjax.eval` work on it as on a trained run.
`export_hf(MODEL_DIR, OUT_DIR)` writes `config.json`, `model.safetensors` (sharded with an index
past `max_shard_size`) and the tokenizer files, which `transformers` loads.

The config parser is strict: every `config.json` field is either implemented, checked to have
the one value mixjax implements (`hidden_act='silu'`, no MLP bias, no sliding window that binds
at the run's length, ...), or on an explicit list of fields that cannot change the math (token
ids, dtypes, architectures, ...). Anything else is refused with an error naming field and value.

Tensor layouts. HF stores `torch.nn.Linear` weights `[out, in]`; mixjax kernels are `[in, out]`
with heads split out (`query` `[D, H, Dh]`, `out` `[H, Dh, D]`). HF checkpoints already hold
q/k in the half-split rotary layout (`rotate_half`) that `transformer.apply_rotary` uses, and
query head h reads kv head h // (H / K) on both sides, so no head permutation is applied (the
parity tests check the logits at 256 positions). Embedding rows past the HF vocabulary (the
mixjax vocabulary's extra ids: mode tokens, sentinels) start as the mean of the HF rows;
export drops them again, writing the source model's vocabulary size.

Tensors are read one at a time (`safetensors.safe_open`) and placed with
`jax.make_array_from_callback` straight into the training shardings: each device receives only
its shard; the host holds one tensor at a time.
"""

import dataclasses
import json
import math
import os
import shutil
from typing import Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from mixjax import vocab as vocab_lib
from mixjax.data import pipeline
from mixjax.inference import restore
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import loop
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import trainer

FAMILIES = ("llama", "qwen2", "mistral")
HF_SUBDIR = "hf"  # MODEL_DIR/hf: the tokenizer files and the source config.json
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "generation_config.json")
# Fields that cannot change the forward pass or training math (ids, bookkeeping, dtypes; the
# positional limit, since rotary positions have no table). Everything else must be implemented.
HARMLESS_FIELDS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache",
    "max_position_embeddings", "pretraining_tp", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tokenizer_class",
    # PretrainedConfig's generic fields (classification heads, encoder-decoder bookkeeping).
    "id2label", "label2id", "problem_type", "is_encoder_decoder", "chunk_size_feed_forward",
})
# Tensors some checkpoints carry that are derived, not parameters.
DERIVED_TENSOR_SUFFIXES = ("rotary_emb.inv_freq",)
LLAMA3_ROPE_FIELDS = ("factor", "low_freq_factor", "high_freq_factor",
                      "original_max_position_embeddings")
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' default shard size


class UnsupportedConfigError(ValueError):
  """A config.json field mixjax does not implement (with a value that would change the math)."""


# ----------------------------------------------------------------------------------------------
# config.json <-> TransformerConfig.


def _rope_fields(hf: dict, problems: list[str]) -> dict:
  """TransformerConfig rope fields from `rope_parameters` (transformers 5) or the older
  `rope_theta` + `rope_scaling`."""
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  theta = rope.pop("rope_theta", hf.get("rope_theta", 10_000.0))
  rope_type = rope.pop("rope_type", rope.pop("type", "default"))
  partial = rope.pop("partial_rotary_factor", 1.0)
  if partial != 1.0:
    problems.append(f"partial_rotary_factor={partial} (only 1.0: rotary over the whole head)")
  fields = {"rope_max_wavelength": float(theta)}
  if rope_type == "llama3":
    missing = [k for k in LLAMA3_ROPE_FIELDS if k not in rope]
    if missing:
      problems.append(f"rope_type='llama3' without {', '.join(missing)}")
      return fields
    fields.update(rope_type="llama3", rope_factor=float(rope.pop("factor")),
                  rope_low_freq_factor=float(rope.pop("low_freq_factor")),
                  rope_high_freq_factor=float(rope.pop("high_freq_factor")),
                  rope_original_max_positions=int(rope.pop("original_max_position_embeddings")))
  elif rope_type != "default":
    problems.append(f"rope_type={rope_type!r} (implemented: 'default', 'llama3')")
  problems += [f"rope parameter {k}={v!r} (not implemented)" for k, v in rope.items()]
  return fields


def _require(hf: dict, field: str, allowed, problems: list[str], default=None, why: str = ""):
  value = hf.get(field, default)
  if value not in allowed:
    problems.append(f"{field}={value!r} (mixjax implements {allowed!r}{why})")


def _family_checks(hf: dict, family: str, sequence_length: int | None, problems: list[str]):
  """The fields each family may set only to what mixjax computes."""
  _require(hf, "hidden_act", ("silu",), problems, "silu")
  _require(hf, "attention_dropout", (0, 0.0), problems, 0.0,
           ": mixjax trains without dropout")
  if family in ("llama", "mistral"):
    _require(hf, "attention_bias", (False,), problems, False,
             ": this bias also covers o_proj")
    _require(hf, "mlp_bias", (False,), problems, False)
  if family == "qwen2":
    _require(hf, "use_sliding_window", (False,), problems, False)
    _require(hf, "use_mrope", (False,), problems, False, ": multimodal rotary (Qwen2-VL)")
    types = set(hf.get("layer_types") or ["full_attention"])
    if types != {"full_attention"}:
      problems.append(f"layer_types={sorted(types)} (only full_attention)")
  window = hf.get("sliding_window")
  if family == "mistral" and window is not None and (sequence_length is None
                                                     or sequence_length > window):
    problems.append(f"sliding_window={window} binds at sequence length {sequence_length} "
                    "(mixjax attends to the whole context; convert for a sequence length "
                    f"<= {window}, where the window never binds)")


_CONSUMED = {
    "llama": {"attention_bias", "mlp_bias", "head_dim"},
    "qwen2": {"use_sliding_window", "sliding_window", "max_window_layers", "layer_types",
              "use_mrope", "head_dim"},
    "mistral": {"sliding_window", "head_dim", "attention_bias", "mlp_bias"},
}
_COMMON = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "num_key_value_heads", "vocab_size", "rms_norm_eps", "tie_word_embeddings",
           "hidden_act", "attention_dropout", "rope_parameters", "rope_scaling", "rope_theta"}


def parse_config(hf: dict, sequence_length: int | None = None) -> transformer.TransformerConfig:
  """The `TransformerConfig` of a Llama / Qwen2 / Mistral `config.json` (its `vocab_size` the
  HF one). Raises `UnsupportedConfigError` listing every field it cannot honour; a Mistral
  `sliding_window` is accepted only for runs no longer than the window (`sequence_length`)."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise UnsupportedConfigError(f"model_type={family!r}; mixjax converts {FAMILIES}.")
  problems = []
  _family_checks(hf, family, sequence_length, problems)
  rope = _rope_fields(hf, problems)
  unknown = set(hf) - _COMMON - _CONSUMED[family] - HARMLESS_FIELDS
  problems += [f"{k}={hf[k]!r} (unknown to mixjax, so it may change the math)"
               for k in sorted(unknown)]
  missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "vocab_size") if k not in hf]
  problems += [f"{k} missing" for k in missing]
  if problems:
    raise UnsupportedConfigError(f"config.json ({family}) has fields mixjax does not implement: "
                                 + "; ".join(problems) + ".")
  heads = hf["num_attention_heads"]
  return transformer.TransformerConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      mlp_dim=hf["intermediate_size"], norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=family == "qwen2",
      **rope)


def hf_config(cfg: transformer.TransformerConfig, family: str, vocab_size: int,
              source: dict | None = None) -> dict:
  """A `config.json` for `cfg`: the source model's fields kept (ids, dtype, ...), the math ones
  written from `cfg`."""
  if family == "llama" and cfg.qkv_bias:
    raise ValueError("A model with q/k/v biases exports as qwen2, not llama.")
  architecture = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "mistral": "MistralForCausalLM"}[family]
  out = dict(source or {"architectures": [architecture], "model_type": family,
                        "hidden_act": "silu", "attention_dropout": 0.0})
  for legacy in ("rope_scaling", "rope_theta"):
    out.pop(legacy, None)
  rope = {"rope_type": cfg.rope_type, "rope_theta": cfg.rope_max_wavelength}
  if cfg.rope_type == "llama3":
    rope.update(factor=cfg.rope_factor, low_freq_factor=cfg.rope_low_freq_factor,
                high_freq_factor=cfg.rope_high_freq_factor,
                original_max_position_embeddings=cfg.rope_original_max_positions)
  out.update(vocab_size=vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.num_layers,
             num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
             head_dim=cfg.head_dim, intermediate_size=cfg.mlp_dim, rms_norm_eps=cfg.norm_eps,
             tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope)
  return out


# ----------------------------------------------------------------------------------------------
# Tensor names and layouts.


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One HF tensor and its mixjax parameter. `kind`: 'linear' (`[out, in]` <-> a kernel whose
  first `in_dims` axes are the input), 'copy' (a reshape), 'rows' (the embedding; mixjax may have
  more rows) or 'vocab_linear' (lm_head `[V, D]` <-> unembed `[D, V']`)."""
  hf_name: str
  path: tuple[str, ...]
  kind: str
  in_dims: int = 1


def tensor_specs(cfg: transformer.TransformerConfig) -> list[TensorSpec]:
  specs = [TensorSpec("model.embed_tokens.weight", ("embedding",), "rows"),
           TensorSpec("model.norm.weight", ("final_norm", "scale"), "copy")]
  if not cfg.tie_embeddings:
    specs.append(TensorSpec("lm_head.weight", ("unembed", "kernel"), "vocab_linear"))
  for i in range(cfg.num_layers):
    hf, mj = f"model.layers.{i}.", f"layer_{i}"
    specs += [
        TensorSpec(hf + "input_layernorm.weight", (mj, "pre_attention_norm", "scale"), "copy"),
        TensorSpec(hf + "post_attention_layernorm.weight", (mj, "pre_mlp_norm", "scale"), "copy"),
        TensorSpec(hf + "self_attn.o_proj.weight", (mj, "attention", "out", "kernel"), "linear",
                   in_dims=2),
        TensorSpec(hf + "mlp.gate_proj.weight", (mj, "mlp", "wi_gate", "kernel"), "linear"),
        TensorSpec(hf + "mlp.up_proj.weight", (mj, "mlp", "wi_up", "kernel"), "linear"),
        TensorSpec(hf + "mlp.down_proj.weight", (mj, "mlp", "wo", "kernel"), "linear"),
    ]
    for hf_proj, mj_proj in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      specs.append(TensorSpec(f"{hf}self_attn.{hf_proj}.weight",
                              (mj, "attention", mj_proj, "kernel"), "linear"))
      if cfg.qkv_bias:
        specs.append(TensorSpec(f"{hf}self_attn.{hf_proj}.bias",
                                (mj, "attention", mj_proj, "bias"), "copy"))
  return specs


def _pad_rows(rows_VD: np.ndarray, num_rows: int) -> np.ndarray:
  """Rows past the HF vocabulary start as the mean HF row (new tokens look like an average one)."""
  extra = num_rows - rows_VD.shape[0]
  if extra < 0:
    raise ValueError(f"The model has {num_rows} vocabulary rows, fewer than the checkpoint's "
                     f"{rows_VD.shape[0]}.")
  mean_1D = rows_VD.mean(axis=0, keepdims=True, dtype=np.float64).astype(rows_VD.dtype)
  return np.concatenate([rows_VD, np.repeat(mean_1D, extra, axis=0)])


def to_mixjax(spec: TensorSpec, hf_array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """An HF tensor in the layout of the mixjax parameter of `shape`."""
  if spec.kind == "linear":
    return hf_array.T.reshape(shape)
  if spec.kind == "copy":
    return hf_array.reshape(shape)
  if spec.kind == "rows":
    return _pad_rows(hf_array, shape[0])
  return _pad_rows(hf_array, shape[1]).T  # vocab_linear


def to_hf(spec: TensorSpec, param: np.ndarray, vocab_size: int) -> np.ndarray:
  """A mixjax parameter in HF's layout (vocabulary rows past `vocab_size` dropped)."""
  if spec.kind == "linear":
    return np.ascontiguousarray(param.reshape(math.prod(param.shape[:spec.in_dims]), -1).T)
  if spec.kind == "copy":
    return np.ascontiguousarray(param.reshape(-1))
  if spec.kind == "rows":
    return np.ascontiguousarray(param[:vocab_size])
  return np.ascontiguousarray(param[:, :vocab_size].T)  # vocab_linear


def _get(tree, path):
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path, value):
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


# ----------------------------------------------------------------------------------------------
# Reading and writing safetensors.


class CheckpointReader:
  """The tensors of an HF directory (`model.safetensors` or an index of shards), one at a time.
  Returned as float32 numpy arrays (bfloat16 is read through the flax framework, which numpy
  lacks)."""

  def __init__(self, hf_dir: str):
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(index):
      with open(index) as f:
        self.files = {name: os.path.join(hf_dir, file)
                      for name, file in json.load(f)["weight_map"].items()}
    elif os.path.exists(single):
      with safetensors.safe_open(single, "numpy") as f:
        self.files = {name: single for name in f.keys()}
    else:
      raise FileNotFoundError(f"No model.safetensors (or model.safetensors.index.json) in "
                              f"{hf_dir}; save the model with save_pretrained(..., "
                              "safe_serialization=True).")
    self.hf_dir = hf_dir

  def names(self) -> set[str]:
    return set(self.files)

  def dtype(self, name: str) -> str:
    with safetensors.safe_open(self.files[name], "numpy") as f:
      return f.get_slice(name).get_dtype()

  def read(self, name: str) -> np.ndarray:
    if name not in self.files:
      raise KeyError(f"{self.hf_dir} has no tensor {name!r}: is this a checkpoint of the family "
                     "its config.json names?")
    if self.dtype(name) == "BF16":
      with safetensors.safe_open(self.files[name], "flax") as f:
        return np.asarray(f.get_tensor(name), np.float32)
    with safetensors.safe_open(self.files[name], "numpy") as f:
      return f.get_tensor(name).astype(np.float32)


def write_safetensors(tensors: Iterator[tuple[str, np.ndarray]], out_dir: str,
                      max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
  """Writes `model.safetensors`, or shards `model-0000i-of-0000N.safetensors` and
  `model.safetensors.index.json` once the tensors pass `max_shard_bytes`. Holds at most one
  shard in memory. Returns the files written."""
  shards, current, size, total, weight_map = [], {}, 0, 0, {}

  def flush():
    path = os.path.join(out_dir, f"shard-{len(shards)}.tmp")
    safetensors.numpy.save_file(current, path, metadata={"format": "pt"})
    shards.append((path, list(current)))

  for name, array in tensors:
    if current and size + array.nbytes > max_shard_bytes:
      flush()
      current, size = {}, 0
    current[name] = array
    size += array.nbytes
    total += array.nbytes
  if current:
    flush()
  if len(shards) == 1:
    final = os.path.join(out_dir, "model.safetensors")
    os.replace(shards[0][0], final)
    return [final]
  files = []
  for i, (path, names) in enumerate(shards):
    final = os.path.join(out_dir, f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
    os.replace(path, final)
    files.append(final)
    weight_map.update({n: os.path.basename(final) for n in names})
  index = os.path.join(out_dir, "model.safetensors.index.json")
  with open(index, "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
  return files + [index]


# ----------------------------------------------------------------------------------------------
# Import.


@dataclasses.dataclass(frozen=True)
class ImportConfig:
  """The run an imported checkpoint is set up for (its `run_configs.json` data section)."""
  mixture_or_task_name: str = "mixjax_synthetic_mix"
  sequence_length: int = 256
  batch_size: int = 8
  extra_ids: int | None = None  # the hf vocabulary's extra ids (None: 100)


def _copy_tokenizer(hf_dir: str, target: str, source_config: dict):
  if not os.path.exists(os.path.join(hf_dir, "tokenizer.json")):
    raise FileNotFoundError(f"{hf_dir} has no tokenizer.json; save the tokenizer beside the model "
                            "(tokenizer.save_pretrained(HF_DIR)).")
  os.makedirs(target, exist_ok=True)
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(hf_dir, name)):
      shutil.copy(os.path.join(hf_dir, name), os.path.join(target, name))
  with open(os.path.join(target, "config.json"), "w") as f:
    json.dump(source_config, f, indent=1)


def _sharded(host_array: np.ndarray, abstract: jax.ShapeDtypeStruct) -> jax.Array:
  """One host tensor placed into its sharding: each device gets only its slice."""
  if host_array.shape != abstract.shape:
    raise ValueError(f"Tensor of shape {host_array.shape} for a parameter of shape "
                     f"{abstract.shape}.")
  host_array = host_array.astype(abstract.dtype)
  return jax.make_array_from_callback(abstract.shape, abstract.sharding,
                                      lambda index: host_array[index])


def load_params(reader: CheckpointReader, cfg: transformer.TransformerConfig, abstract_params):
  """The parameter tree of `cfg` from the checkpoint, sharded as `abstract_params`. Every
  parameter must come from a tensor and every tensor (derived ones aside) must be used."""
  specs = tensor_specs(cfg)
  unused = {n for n in reader.names() if not n.endswith(DERIVED_TENSOR_SUFFIXES)}
  unused -= {s.hf_name for s in specs}
  if unused:
    raise UnsupportedConfigError(f"{reader.hf_dir} holds tensors mixjax has no parameter for: "
                                 f"{sorted(unused)[:8]}.")
  params = {}
  for spec in specs:
    abstract = _get(abstract_params, spec.path)
    _set(params, spec.path, _sharded(to_mixjax(spec, reader.read(spec.hf_name), abstract.shape),
                                     abstract))
  expected = {p for p, _ in jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
  got = {p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  if expected != got:
    raise AssertionError(f"Parameters without a tensor: {sorted(map(str, expected - got))}.")
  return params


def import_hf(hf_dir: str, model_dir: str, config: ImportConfig = ImportConfig(),
              mesh_config: partitioning.MeshConfig = partitioning.MeshConfig()
              ) -> transformer.TransformerConfig:
  """Converts an HF checkpoint directory into the run directory `model_dir` (see the module
  docstring); returns the model config. Refuses a directory that already holds checkpoints."""
  with open(os.path.join(hf_dir, "config.json")) as f:
    source = json.load(f)
  cfg = parse_config(source, config.sequence_length)
  if os.path.isdir(os.path.join(model_dir, "checkpoints")):
    raise FileExistsError(f"{model_dir} already holds checkpoints; convert into a new MODEL_DIR.")
  os.makedirs(model_dir, exist_ok=True)
  hf_copy = os.path.join(os.path.abspath(model_dir), HF_SUBDIR)
  _copy_tokenizer(hf_dir, hf_copy, source)
  vocab = vocab_lib.VocabConfig(kind="hf", path=os.path.join(hf_copy, "tokenizer.json"),
                                extra_ids=config.extra_ids)
  cfg = dataclasses.replace(cfg, vocab_size=max(cfg.vocab_size, vocab.build().vocab_size))
  data = pipeline.DataConfig(
      mixture_or_task_name=config.mixture_or_task_name,
      task_feature_lengths={"targets": config.sequence_length}, batch_size=config.batch_size,
      vocab=vocab)
  optimizer = optim.OptimizerConfig()
  run = loop.RunConfig(model_dir=os.path.abspath(model_dir), train_steps=0)

  mesh = partitioning.make_mesh(mesh_config)
  model = transformer.build_model(cfg)
  tx = optim.make_optimizer(optimizer, run.train_steps)
  abstract, shardings = trainer.abstract_state_and_shardings(
      model, tx, mesh, mesh_config.rules, (partitioning.data_parallel_size(mesh), 8))
  params = load_params(CheckpointReader(hf_dir), cfg, abstract.params)
  with partitioning.mesh_context(mesh, mesh_config.rules):
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  state = trainer.TrainState(step=step, params=params, opt_state=opt_state)
  ckpt = checkpoints.Checkpointer(model_dir, checkpoints.CheckpointConfig())
  try:
    ckpt.save(0, state, {"converted_from": os.path.abspath(hf_dir)})
  finally:
    ckpt.close()
  if jax.process_index() == 0:
    checkpoints.write_run_configs(model_dir, model=cfg, data=data, optimizer=optimizer, run=run)
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
      f.write(f"# Converted by mixjax.convert from {os.path.abspath(hf_dir)}: the task\n"
              "# registrations mixjax.eval reads (the model and data are in run_configs.json).\n"
              "import mixjax_tasks\n")
  return cfg


# ----------------------------------------------------------------------------------------------
# Export.


def _family_of(cfg: transformer.TransformerConfig, source: dict | None) -> str:
  if source is not None:
    return source["model_type"]
  return "qwen2" if cfg.qkv_bias else "llama"


def export_hf(model_dir: str, out_dir: str, step: int | None = None,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
              dtype: str = "float32") -> list[str]:
  """Writes one checkpoint of a run as an HF model directory; returns the files written. The
  family and the fields mixjax does not use come from the source config of an imported run
  (`MODEL_DIR/hf/config.json`); a run trained from scratch exports as llama (qwen2 with q/k/v
  biases) and needs an `hf` vocabulary for its tokenizer."""
  run = restore.restore_run(model_dir, step)
  cfg = run.model_config
  if cfg.architecture != "decoder":
    raise ValueError(f"Only decoder-only models export to HF; {model_dir} is {cfg.architecture}.")
  if run.data_config.vocab.kind != "hf":
    raise ValueError(f"{model_dir} uses a {run.data_config.vocab.kind!r} vocabulary; HF export "
                     "needs an 'hf' one (a tokenizer.json) to write the tokenizer.")
  hf_copy = os.path.dirname(run.data_config.vocab.path)
  source_path = os.path.join(hf_copy, "config.json")
  source = None
  if os.path.exists(source_path):
    with open(source_path) as f:
      source = json.load(f)
  vocab_size = source["vocab_size"] if source else cfg.vocab_size
  family = _family_of(cfg, source)
  os.makedirs(out_dir, exist_ok=True)
  target_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16,
                  "float16": np.float16}[dtype]
  tensors = ((spec.hf_name, to_hf(spec, np.asarray(_get(run.params, spec.path)),
                                  vocab_size).astype(target_dtype))
             for spec in tensor_specs(cfg))
  written = write_safetensors(tensors, out_dir, max_shard_bytes)
  config = hf_config(cfg, family, vocab_size, source)
  config["dtype"] = dtype
  config.pop("torch_dtype", None)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
  for name in TOKENIZER_FILES:
    if os.path.exists(os.path.join(hf_copy, name)):
      shutil.copy(os.path.join(hf_copy, name), os.path.join(out_dir, name))
      written.append(os.path.join(out_dir, name))
  return written + [os.path.join(out_dir, "config.json")]
