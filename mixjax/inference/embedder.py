r"""The `checkpoint` ICLM embedder: documents embedded by a trained mixjax decoder.

Importing this module registers `checkpoint` in `mixjax.iclm.stages.EMBEDDERS`, so that

  python -m mixjax.iclm --input DOCS.jsonl --output DIR \
      --embedder checkpoint --embedder_path MODEL_DIR

mean-pools the final hidden states of the newest checkpoint in MODEL_DIR over each document's first
510 tokens (the CLI imports this module; from Python, import it before `stages.run`). It lives here,
not in `mixjax.iclm`, because it needs the model and checkpoint code, which the data layer must not
import.
"""

import dataclasses
import functools
from typing import Sequence

import numpy as np

from mixjax.iclm import embed
from mixjax.iclm import stages

NAME = "checkpoint"


def decoder_hidden_fn(model, params) -> embed.HiddenFn:
  """Jitted hidden states of a mixjax `Decoder`: returns a function giving the output of its
  final norm, `[B, T, D]`, for `(tokens_BT, mask_BT)`."""
  # A cost guard: the CLI imports this module for every run, most of which never embed with JAX.
  import jax  # pylint: disable=g-import-not-at-top

  def hidden(tokens_BT, mask_BT):
    _, state = model.apply({"params": params}, tokens_BT, segment_ids_BT=mask_BT.astype("int32"),
                           capture_intermediates=lambda module, _: module.name == "final_norm",
                           mutable=["intermediates"])
    return state["intermediates"]["final_norm"]["__call__"][0]
  return jax.jit(hidden)


@functools.lru_cache(maxsize=4)
def _checkpoint_hidden_fn(model_dir: str) -> embed.HiddenFn:
  """`decoder_hidden_fn` over the newest checkpoint in `model_dir` (restored once per process)."""
  # A cost guard, as in `decoder_hidden_fn`: the model, orbax and TensorFlow take seconds to load.
  # pylint: disable=g-import-not-at-top
  from mixjax.inference import restore
  from mixjax.models import transformer
  model_config, _, params = restore.restore_for_inference(model_dir)
  if model_config.architecture != "decoder":
    raise ValueError(f"The checkpoint embedder reads decoder-only runs; {model_dir} holds a "
                     f"{model_config.architecture!r} model.")
  return decoder_hidden_fn(transformer.build_model(model_config), params)


@dataclasses.dataclass(frozen=True)
class CheckpointEmbedder(embed.PretrainedEmbedder):
  """Mean-pooled final hidden states of the newest checkpoint of a mixjax run (its MODEL_DIR).

  Holds the directory, not the model, so that it pickles small (Beam workers carry it); the model
  is restored on first use in each process.
  """
  model_dir: str
  max_tokens: int = 510
  batch_size: int = 32
  dim: int = 0

  def embed(self, texts: Sequence[str], state: embed.State) -> np.ndarray:
    """Returns `emb_ND` float32, rows L2-normalised."""
    pooled = embed.MeanPooledLMEmbedder(_checkpoint_hidden_fn(self.model_dir), self.max_tokens,
                                        self.batch_size)
    return pooled.embed(texts, state)


stages.register_embedder(NAME, lambda config: CheckpointEmbedder(config.embedder_path),
                         path="the MODEL_DIR of a decoder-only mixjax training run")
