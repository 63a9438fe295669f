"""Train state, its sharded initialisation, and the jitted train step.

The state is created already sharded: shapes and logical axis names come from `jax.eval_shape`,
become NamedShardings through the mesh rules, and a jitted init writes each parameter straight
into its shards (`out_shardings`). The step donates the state so parameters are updated in place.
"""

import functools
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixjax.training import partitioning


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def model_inputs(batch: Mapping[str, jax.Array]) -> dict:
  """Maps SeqIO model-feature names (decoder-only or encoder-decoder) to the model's arguments."""
  if "encoder_input_tokens" in batch:
    return {
        "encoder_tokens_BS": batch["encoder_input_tokens"],
        "tokens_BT": batch["decoder_input_tokens"],
        "encoder_segment_ids_BS": batch.get("encoder_segment_ids"),
        "segment_ids_BT": batch.get("decoder_segment_ids"),
        "encoder_positions_BS": batch.get("encoder_positions"),
        "positions_BT": batch.get("decoder_positions"),
    }
  inputs = {
      "tokens_BT": batch["decoder_input_tokens"],
      "segment_ids_BT": batch.get("decoder_segment_ids"),
      "positions_BT": batch.get("decoder_positions"),
  }
  if "decoder_causal_attention" in batch:  # prefix-LM: bidirectional over the inputs
    inputs["inputs_mask_BT"] = batch["decoder_causal_attention"]
  return inputs


def token_losses(model: nn.Module, params, batch):
  """Per-token cross-entropy `[B, T]` (float32) and the loss weights `[B, T]`."""
  logits_BTV = model.apply({"params": params}, **model_inputs(batch))
  targets_BT = batch["decoder_target_tokens"]
  loss_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
  weights_BT = batch.get("decoder_loss_weights", (targets_BT > 0)).astype(jnp.float32)
  return loss_BT, weights_BT


def _mean_loss(params, model, batch):
  loss_BT, weights_BT = token_losses(model, params, batch)
  denom = jnp.maximum(weights_BT.sum(), 1.0)
  return (loss_BT * weights_BT).sum() / denom, weights_BT.sum()


def train_step(state: TrainState, batch, *, model: nn.Module, tx: optax.GradientTransformation):
  """One optimiser step. Returns the new state and scalar metrics."""
  (loss, num_tokens), grads = jax.value_and_grad(_mean_loss, has_aux=True)(
      state.params, model, batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "num_tokens": num_tokens, "grad_norm": optax.global_norm(grads)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _init_boxed(rng, *, model, tx, batch_shape):
  tokens_BT = jnp.zeros(batch_shape, jnp.int32)
  dummy = {"decoder_input_tokens": tokens_BT}
  if model.config.architecture == "encoder_decoder":
    dummy["encoder_input_tokens"] = tokens_BT
  params = model.init(rng, **model_inputs(dummy))["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def abstract_state_and_shardings(model, tx, mesh, rules, batch_shape):
  """Shape/dtype tree of the (unboxed) state and the matching NamedSharding tree."""
  init = functools.partial(_init_boxed, model=model, tx=tx, batch_shape=batch_shape)
  boxed = jax.eval_shape(init, jax.random.key(0))
  logical_specs = nn.get_partition_spec(boxed)
  with nn.logical_axis_rules(rules):
    shardings = partitioning.logical_to_sharding(logical_specs, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(boxed), shardings)
  return abstract, shardings


def create_state(model, tx, mesh, rules, batch_shape, seed: int):
  """Initialises parameters and optimiser state directly into their shards."""
  _, shardings = abstract_state_and_shardings(model, tx, mesh, rules, batch_shape)
  init = functools.partial(_init_boxed, model=model, tx=tx, batch_shape=batch_shape)
  with partitioning.mesh_context(mesh, rules):
    jitted = jax.jit(lambda rng: nn.unbox(init(rng)), out_shardings=shardings)
    return jitted(jax.random.key(seed)), shardings


def jit_train_step(model, tx, mesh, state_shardings):
  """The one jitted step, for training and for the dry run (`training/compile.py` lowers it).

  Batch split over (data, fsdp), state donated and kept in its shardings. Trace, lower or call it
  under `partitioning.mesh_context(mesh, rules)`.
  """
  return jax.jit(functools.partial(train_step, model=model, tx=tx),
                 in_shardings=(state_shardings, partitioning.batch_sharding(mesh)),
                 out_shardings=(state_shardings, None), donate_argnames="state")


def make_train_step(model, tx, mesh, rules, state_shardings):
  """`jit_train_step`, called under the run's mesh and rules."""
  step = jit_train_step(model, tx, mesh, state_shardings)

  def run(state, batch):
    with partitioning.mesh_context(mesh, rules):
      return step(state, batch)
  return run


def global_batch(mesh, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles this host's rows into global arrays sharded over (data, fsdp)."""
  sharding = partitioning.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in host_batch.items()}
