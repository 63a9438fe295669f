"""Small tokenizers trained here (no downloads) for the Hugging Face tests: a byte-level BPE with
Llama's special ids (0 <unk>, 1 <s>, 2 </s>), saved as `tokenizer.json` +
`tokenizer_config.json` the way `transformers` writes them."""

import json
import os
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

LLAMA_SPECIALS = ("<unk>", "<s>", "</s>")


def train_bpe(texts: Iterable[str], vocab_size: int,
              specials: tuple[str, ...] = LLAMA_SPECIALS) -> tokenizers.Tokenizer:
  """A byte-level BPE of exactly `vocab_size` ids, `specials` first (ids 0, 1, ...)."""
  tok = tokenizers.Tokenizer(models.BPE(unk_token=specials[0] if specials else None))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(list(texts), trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
  return tok


def save(tok: tokenizers.Tokenizer, directory: str, **special_tokens) -> str:
  """Writes `tokenizer.json` and a `tokenizer_config.json` naming `special_tokens` (e.g.
  eos_token='</s>'); returns the tokenizer.json path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "tokenizer.json")
  tok.save(path)
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **special_tokens}, f)
  return path
