"""Hugging Face parity without downloads: tiny random Llama 3 (rope scaling, GQA), Llama 2 (tied,
MHA, head_dim != width / heads, eps 1e-5), Qwen2 (q/k/v biases) and Mistral models built with
`transformers` on CPU, saved, converted, and compared with mixjax: logits at 256 positions (fp32,
relative error <= 1e-4), every layer's hidden states, 32 greedy tokens, the HF -> mixjax -> HF
round trip bit-exact, `transformers` loading the export, and the strict parser's refusals."""

import copy
import dataclasses
import json
import os
import re

import flax.linen as nn
import numpy as np
import pytest
import safetensors
import torch
import transformers

import tests.mixture_tasks  # noqa: F401  (registers the test_sched_* tasks)
from mixjax import convert as convert_binary
from mixjax import infer
from mixjax.compat import hf
from mixjax.inference import generate
from mixjax.inference import restore
from mixjax.inference import sampling
from mixjax.models import transformer
from mixjax.training import init_from
from mixjax.training import loop
from mixjax.training import metrics as metrics_lib
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import trainer
from tests import helpers
from tests import hf_tokenizers

VOCAB = 300
TRAIN_TASK = f"{tests.mixture_tasks.PREFIX}_math"
SEQ = 256
WORDS = ("alpha", "beta", "gamma", "delta", "river", "stone", "house", "tree", "seven", "twelve")
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, bos_token_id=1, eos_token_id=2)
FAMILIES = {
    "llama3": (transformers.LlamaConfig, dict(
        rope_theta=500_000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "llama2_tied": (transformers.LlamaConfig, dict(
        tie_word_embeddings=True, num_key_value_heads=4, head_dim=32, rms_norm_eps=1e-5)),
    "qwen2": (transformers.Qwen2Config, dict(rope_theta=1_000_000.0)),
    "mistral": (transformers.MistralConfig, dict(sliding_window=4096)),
}


def bpe_tokenizer() -> transformers.PreTrainedTokenizerFast:
  """A 300-token byte-level BPE (Llama's specials: 0 <unk>, 1 <s>, 2 </s>) on seeded text."""
  rng = np.random.default_rng(0)
  tok = hf_tokenizers.train_bpe((" ".join(rng.choice(WORDS, 20)) for _ in range(200)), VOCAB)
  return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                              bos_token="<s>", eos_token="</s>")


@dataclasses.dataclass
class Converted:
  name: str
  hf_model: torch.nn.Module
  hf_dir: str
  model_dir: str
  run: restore.RestoredRun


@pytest.fixture(scope="module")
def tokenizer():
  return bpe_tokenizer()


def _convert(name: str, root, tokenizer) -> Converted:
  config_cls, overrides = FAMILIES[name]
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(
      config_cls(vocab_size=VOCAB, **{**SMALL, **overrides}))
  with torch.no_grad():  # HF zero-initialises biases and norm scales: make them tell
    for pname, p in model.named_parameters():
      if pname.endswith("bias") or "norm" in pname:
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  hf_dir, model_dir = str(root / "hf"), str(root / "mixjax")
  model.save_pretrained(hf_dir)
  tokenizer.save_pretrained(hf_dir)
  # Llama 3 is converted onto a (data 2, fsdp 2, tensor 2) mesh (parameters placed sharded), the
  # others onto one device (quicker; test_parameters_are_placed_sharded covers every family).
  mesh = (partitioning.MeshConfig(shape=(2, 2, 2)) if name == "llama3" else restore.ONE_DEVICE)
  hf.import_hf(hf_dir, model_dir, hf.ImportConfig(sequence_length=SEQ), mesh)
  return Converted(name, model, hf_dir, model_dir, restore.restore_run(model_dir))


@pytest.fixture(scope="module")
def convert(tmp_path_factory, tokenizer):
  """`convert(family)`: that family's tiny model, saved and converted once per module."""
  done = {}

  def get(name: str) -> Converted:
    if name not in done:
      done[name] = _convert(name, tmp_path_factory.mktemp(name), tokenizer)
    return done[name]
  return get


@pytest.fixture(params=sorted(FAMILIES))
def converted(request, convert) -> Converted:
  return convert(request.param)


# Greedy decoding compiles a decode loop per family (~10 s each on 2 cores): the default suite
# runs the families whose decode step has its own code (rope scaling, q/k/v biases).
GREEDY_FAMILIES = ["llama3", "qwen2", pytest.param("llama2_tied", marks=pytest.mark.slow),
                   pytest.param("mistral", marks=pytest.mark.slow)]


def _tokens(batch=2, length=SEQ, seed=0):
  return np.random.default_rng(seed).integers(3, VOCAB, (batch, length)).astype(np.int32)


def test_the_converted_config_has_the_families_math(converted):
  cfg = converted.run.model_config
  expected = {"llama3": dict(rope_type="llama3", rope_max_wavelength=500_000.0),
              "llama2_tied": dict(tie_embeddings=True, num_kv_heads=4, head_dim=32,
                                  norm_eps=1e-5),
              "qwen2": dict(qkv_bias=True, rope_max_wavelength=1_000_000.0),
              "mistral": dict(num_kv_heads=2)}[converted.name]
  assert {k: getattr(cfg, k) for k in expected} == expected
  # 300 tokenizer ids + 100 extra ids (mode tokens, sentinels) on top.
  assert cfg.vocab_size == VOCAB + 100
  assert ("unembed" in converted.run.params) == (not cfg.tie_embeddings)


def test_logits_and_every_layers_hidden_states_match_hf(converted):
  tokens_BT = _tokens()
  with torch.no_grad():
    out = converted.hf_model(torch.from_numpy(tokens_BT).long(), output_hidden_states=True)
  model = transformer.build_model(converted.run.model_config)
  logits_BTV, state = model.apply(
      {"params": converted.run.params}, tokens_BT, mutable=["intermediates"],
      capture_intermediates=lambda m, _: isinstance(m, transformer.DecoderBlock))
  ref_BTV = out.logits.numpy()
  rel = np.abs(np.asarray(logits_BTV)[..., :VOCAB] - ref_BTV).max() / np.abs(ref_BTV).max()
  assert rel <= 1e-4, rel
  layers = converted.run.model_config.num_layers
  assert len(out.hidden_states) == layers + 1  # embeddings, then each layer (last one normed)
  for i in range(layers - 1):
    ours = np.asarray(state["intermediates"][f"layer_{i}"]["__call__"][0])
    ref = out.hidden_states[i + 1].numpy()
    assert np.abs(ours - ref).max() / np.abs(ref).max() <= 1e-4, i


@pytest.mark.parametrize("family", GREEDY_FAMILIES)
def test_greedy_generations_of_32_tokens_equal_hf(convert, family):
  converted = convert(family)
  run = converted.run
  prompts = [list(_tokens(1, 12, seed=1)[0]), list(_tokens(1, 5, seed=2)[0])]
  generator = generate.Generator(transformer.build_model(run.model_config), run.params,
                                 run.data_config, mesh=run.mesh)
  with run.mesh, nn.logical_axis_rules(run.rules):
    out = generator(generate.prompt_batch(run.data_config, prompts),
                    sampling.SamplingConfig(temperature=0.0, max_new_tokens=32), eos_id=-1)
  for prompt, ours in zip(prompts, out.tokens_BN):
    # SeqIO's LM rows start with input id 0 (the shifted-in pad), so HF sees [0] + prompt.
    ids = torch.tensor([[0] + prompt])
    with torch.no_grad():
      # An explicit mask: HF would otherwise read the leading 0 (its pad_token_id) as padding.
      ref = converted.hf_model.generate(ids, attention_mask=torch.ones_like(ids),
                                        max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                        pad_token_id=0)
    assert ours.tolist() == ref[0, ids.shape[1]:].tolist()


def _tensors(directory):
  reader = hf.CheckpointReader(directory)
  out = {}
  for name, path in reader.files.items():
    with safetensors.safe_open(path, "numpy") as f:
      out[name] = f.get_tensor(name)
  return out


def test_round_trip_is_bit_exact_and_transformers_loads_the_export(converted, tmp_path):
  out_dir = str(tmp_path / "export")
  convert_binary.main([f"--to_hf={out_dir}", f"--model_dir={converted.model_dir}",
                       "--max_shard_size=200KB"])  # several shards
  assert os.path.exists(os.path.join(out_dir, "model.safetensors.index.json"))
  original, exported = _tensors(converted.hf_dir), _tensors(out_dir)
  assert sorted(original) == sorted(exported)
  for name, array in original.items():
    assert exported[name].dtype == array.dtype and np.array_equal(exported[name], array), name
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval()
  tokens = torch.from_numpy(_tokens(1, 64)).long()
  with torch.no_grad():
    assert torch.equal(reloaded(tokens).logits, converted.hf_model(tokens).logits)
  tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
  assert tokenizer("alpha river")["input_ids"] == transformers.AutoTokenizer.from_pretrained(
      converted.hf_dir)("alpha river")["input_ids"]


def test_a_bfloat16_checkpoint_round_trips_bit_exact(convert, tmp_path, tokenizer):
  """Public checkpoints are mostly bfloat16 and sharded: read exactly (into float32) through the
  shard index, written back exactly."""
  source = convert("llama3")
  hf_dir, out_dir = str(tmp_path / "bf16"), str(tmp_path / "export")
  copy.deepcopy(source.hf_model).to(torch.bfloat16).save_pretrained(hf_dir, max_shard_size="100KB")
  tokenizer.save_pretrained(hf_dir)
  assert os.path.exists(os.path.join(hf_dir, "model.safetensors.index.json"))
  hf.import_hf(hf_dir, str(tmp_path / "mixjax"), hf.ImportConfig(sequence_length=SEQ),
               restore.ONE_DEVICE)
  hf.export_hf(str(tmp_path / "mixjax"), out_dir, dtype="bfloat16")
  original, exported = hf.CheckpointReader(hf_dir), hf.CheckpointReader(out_dir)
  assert original.names() == exported.names()
  for name in original.names():
    with safetensors.safe_open(original.files[name], "pt") as a, \
         safetensors.safe_open(exported.files[name], "pt") as b:
      assert a.get_tensor(name).dtype == torch.bfloat16
      assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name


def test_parameters_are_placed_sharded_one_tensor_at_a_time(converted):
  cfg = converted.run.model_config
  mesh_config = partitioning.MeshConfig(shape=(2, 2, 2))
  mesh = partitioning.make_mesh(mesh_config)
  model = transformer.build_model(cfg)
  tx = optim.make_optimizer(optim.OptimizerConfig(), 0)
  abstract, _ = trainer.abstract_state_and_shardings(model, tx, mesh, mesh_config.rules, (4, 8))
  params = hf.load_params(hf.CheckpointReader(converted.hf_dir), cfg, abstract.params)
  query = params["layer_0"]["attention"]["query"]["kernel"]  # [D, H, Dh]: embed fsdp, heads tensor
  assert query.addressable_shards[0].data.shape == (cfg.d_model // 2, cfg.num_heads // 2,
                                                     cfg.head_dim)
  restored = converted.run.params["layer_0"]["attention"]["query"]["kernel"]
  np.testing.assert_array_equal(np.asarray(query), np.asarray(restored))


def test_infer_uses_the_converted_tokenizer(convert, tokenizer):
  converted = convert("llama3")  # the binary's text path; the families differ in math only
  prompt = "alpha river stone"
  [completion] = infer.infer(converted.model_dir, [prompt], max_new_tokens=8)
  ids = torch.tensor([[0] + tokenizer(prompt)["input_ids"]])
  with torch.no_grad():
    ref = converted.hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                      do_sample=False, pad_token_id=0, eos_token_id=2)
  new = ref[0, ids.shape[1]:].tolist()
  assert completion == tokenizer.decode(new[:new.index(2) + 1] if 2 in new else new)


def test_a_converted_model_continues_pretraining_evaluates_and_generates(convert, tmp_path):
  """Continued pre-training from the converted directory (INIT_FROM, gin/cpt.gin's mechanism):
  Qwen2's biases and the hf vocabulary come from the source, its parameters are the start, the
  loop evaluates at the end, and the new run generates through `mixjax.infer`."""
  source = convert("qwen2")
  model_dir = str(tmp_path / "cpt")
  kwargs = helpers.tiny_train_kwargs(model_dir, TRAIN_TASK, steps=2, checkpoint_period=0,
                                     length=64)
  kwargs["model"] = transformer.TransformerConfig()  # shape and vocabulary from INIT_FROM
  kwargs["init"] = init_from.InitConfig(from_dir=source.model_dir)
  kwargs["optimizer"] = dataclasses.replace(kwargs["optimizer"], learning_rate=1e-2)
  final = loop.train(**kwargs)
  assert any(k.startswith("eval/") for k in final)
  lines = [m for m in metrics_lib.read_metrics(model_dir) if "loss" in m]
  assert len(lines) == 2 and all(np.isfinite([m["loss"] for m in lines]))
  trained = restore.restore_run(model_dir)
  assert trained.model_config == source.run.model_config
  assert trained.data_config.vocab == source.run.data_config.vocab
  bias = np.asarray(trained.params["layer_0"]["attention"]["query"]["bias"])
  start = np.asarray(source.run.params["layer_0"]["attention"]["query"]["bias"])
  assert not np.array_equal(bias, start) and np.abs(bias - start).max() < 0.1  # moved, from there
  [completion] = infer.infer(model_dir, ["alpha river stone"], max_new_tokens=4)
  assert isinstance(completion, str)


# ----------------------------------------------------------------------------------------------
# The strict parser.

LLAMA = transformers.LlamaConfig(vocab_size=VOCAB, **SMALL).to_dict()
REFUSED = [
    ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("llama", {"mlp_bias": True}, "mlp_bias=True"),
    ("llama", {"attention_bias": True}, "attention_bias=True"),
    ("llama", {"attention_dropout": 0.1}, "attention_dropout=0.1"),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}},
     "rope_type='yarn'"),
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}},
     "without low_freq_factor"),
    ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                   "partial_rotary_factor": 0.5}}, "partial_rotary_factor=0.5"),
    ("llama", {"quantization_config": {"bits": 4}}, "quantization_config="),
    ("mistral", {"sliding_window": 128}, "sliding_window=128"),
    ("qwen2", {"use_sliding_window": True}, "use_sliding_window=True"),
    ("qwen2", {"use_mrope": True}, "use_mrope=True"),
    ("gpt2", {}, "model_type='gpt2'"),
]


@pytest.mark.parametrize("model_type,change,message", REFUSED)
def test_the_parser_refuses_what_it_does_not_implement(model_type, change, message):
  config = {**LLAMA, "model_type": model_type, **change}
  with pytest.raises(hf.UnsupportedConfigError, match=re.escape(message)):
    hf.parse_config(config, sequence_length=SEQ)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_an_exported_config_parses_back_to_the_same_model(family):
  fields = {k: v for k, v in LLAMA.items()  # Qwen2 has no attention_bias / mlp_bias fields
            if family != "qwen2" or k not in ("attention_bias", "mlp_bias")}
  cfg = hf.parse_config({**fields, "model_type": family, "head_dim": 32})
  assert hf.parse_config(hf.hf_config(cfg, family, VOCAB), sequence_length=SEQ) == cfg


def test_the_parser_accepts_harmless_fields_and_a_window_that_never_binds():
  config = {**LLAMA, "model_type": "mistral", "sliding_window": SEQ, "torch_dtype": "bfloat16",
            "architectures": ["MistralForCausalLM"], "pad_token_id": 0}
  assert hf.parse_config(config, sequence_length=SEQ).num_kv_heads == 2


def test_shard_sizes_parse_and_a_bad_one_is_named():
  assert convert_binary.parse_size("5GB") == 5 * 10**9
  assert convert_binary.parse_size("200KB") == 200_000
  assert convert_binary.parse_size("1GiB") == 2**30
  with pytest.raises(ValueError, match="--max_shard_size='5 parsecs'"):
    convert_binary.parse_size("5 parsecs")


def test_the_convert_binary_reports_a_refused_config(tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text(json.dumps({**LLAMA, "hidden_act": "relu"}))
  with pytest.raises(SystemExit, match="hidden_act='relu'"):
    convert_binary.main([f"--from_hf={bad}", f"--model_dir={tmp_path / 'out'}"])
