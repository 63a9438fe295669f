"""Prompt text to tokens and back, and the recompute decoding path.

Infilling prompts mark spans with `<X>`; each becomes the next sentinel id, and the generated
sentinels are shown back as `<X0>`, `<X1>`, ….

`generate_recompute` is the pre-cache path (one decoder-only prompt at a time, the whole buffer
recomputed every step, `jax.random.categorical`): kept as the peer `benchmarks/inference.py`
measures the KV-cached `mixjax.inference.generate` against.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mixjax import vocab as vocab_lib

SPAN_MARK = "<X>"
MODES = {"S2S": "[S2S]", "NLU": "[NLU]", "NLG": "[NLG]", "none": None}


def encode_prompt(text: str, mode: str = "none", vocabulary=None) -> list[int]:
  """Tokens of `text` with every `<X>` replaced by the next sentinel, after an optional mode
  token (the byte vocabulary unless another `seqio.Vocabulary` is given)."""
  if mode not in MODES:
    raise ValueError(f"Unknown mode {mode!r}; valid: {', '.join(MODES)}.")
  vocab = vocabulary or vocab_lib.get_vocabulary()
  ids = [] if MODES[mode] is None else [vocab_lib.mode_token_id(MODES[mode], vocab)]
  for i, piece in enumerate(text.split(SPAN_MARK)):
    if i:
      ids.append(vocab_lib.sentinel_id(i - 1, vocab))
    ids.extend(vocab.encode(piece))
  return ids


def decode_tokens(ids, vocabulary=None) -> str:
  """Tokens back to text; sentinels as `<Xi>`, mode tokens by name; stops at EOS."""
  vocab = vocabulary or vocab_lib.get_vocabulary()
  sentinels = {vocab_lib.sentinel_id(i, vocab): i for i in range(vocab_lib.max_sentinels(vocab))}
  modes = {vocab_lib.mode_token_id(m, vocab): m for m in vocab_lib.MODE_TOKENS}
  out, run = [], []
  for t in ids:
    t = int(t)
    if t == vocab.eos_id:
      break
    if t in sentinels or t in modes:
      out.append(vocab.decode(run))
      run = []
      out.append(f"<X{sentinels[t]}>" if t in sentinels else modes[t])
    elif t != vocab.pad_id:
      run.append(t)
  out.append(vocab.decode(run))
  return "".join(out)


@functools.partial(jax.jit, static_argnames=("apply_fn", "prefix_lm"))
def _next_logits(params, tokens_1L, cur, prompt_len, *, apply_fn, prefix_lm):
  length = tokens_1L.shape[1]
  pos_1L = jnp.arange(length, dtype=jnp.int32)[None, :]
  segment_1L = (pos_1L < cur).astype(jnp.int32)
  inputs_mask_1L = (pos_1L < prompt_len).astype(jnp.int32) if prefix_lm else None
  logits_1LV = apply_fn({"params": params}, tokens_1L, segment_1L, pos_1L, inputs_mask_1L)
  return logits_1LV[0, cur - 1]


def generate_recompute(apply_fn, params, prompt_ids, *, max_new_tokens=64, prefix_lm=False,
             temperature=0.0, seed=0, max_length=None, eos_id=1) -> list[int]:
  """Samples up to `max_new_tokens` after `prompt_ids` (greedy when temperature == 0).

  `apply_fn` is a decoder-only model's `apply`; with `prefix_lm` the prompt is attended to
  bidirectionally, as in UL2's prefix-LM training. Stops at EOS.
  """
  length = max_length or len(prompt_ids) + max_new_tokens + 1
  if len(prompt_ids) >= length:
    raise ValueError(f"Prompt of {len(prompt_ids)} tokens does not fit max_length={length}.")
  tokens = np.zeros((1, length), np.int32)
  # Decoder inputs are the targets shifted right: position 0 holds the BOS (0).
  tokens[0, 1:len(prompt_ids) + 1] = prompt_ids
  cur = len(prompt_ids) + 1
  rng = jax.random.key(seed)
  generated = []
  while len(generated) < max_new_tokens and cur < length:
    logits_V = _next_logits(params, jnp.asarray(tokens), cur, len(prompt_ids) + 1,
                            apply_fn=apply_fn, prefix_lm=prefix_lm)
    if temperature > 0:
      rng, key = jax.random.split(rng)
      token = int(jax.random.categorical(key, logits_V / temperature))
    else:
      token = int(jnp.argmax(logits_V))
    generated.append(token)
    if token == eos_id:
      break
    tokens[0, cur] = token
    cur += 1
  return generated
