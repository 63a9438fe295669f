"""A proxy swarm: K small models trained at once, in one jit, each on its own mixture.

Parameters and optimiser states carry a leading proxy axis `K` and one `jax.vmap`ped step trains
them all; `lax.scan` runs `steps_per_call` steps per dispatch. The proxies read one set of shared
per-domain token pools (`Pools`: packed rows `[D, N, T]`), each gathering its rows by index.

Common random numbers: batch slot j of the run draws its domain by the inverse CDF of each
proxy's weights at one shared low-discrepancy point u_j (a pure function of the data seed), and
every proxy reads each domain's rows in the same order (the i-th row a proxy takes from domain d
is row i mod N of d's pool). Two proxies with close mixtures see nearly the same batches, and
their difference in loss is the mixture's, not the data order's. Proxies share one init seed
unless `init_seeds` says otherwise (`seed_noise` measures what a seed alone changes).

Evaluation: every proxy scores the same eval rows in one vmapped forward (`evaluate`), giving
the token-weighted mean loss of each eval set (a domain's validation split, or a target's).
"""

import dataclasses
from typing import Callable, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixjax.data import pipeline
from mixjax.models import transformer
from mixjax.training import optim
from mixjax.training import trainer

_FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_segment_ids",
             "decoder_positions", "decoder_loss_weights")
_PHI_U32 = np.uint32(2654435769)  # 2^32 (sqrt(5) - 1) / 2: the golden-ratio (Weyl) sequence step


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SwarmConfig:
  """How the proxies train. Steps, batch and learning rate are every proxy's."""
  train_steps: int = 200
  batch_size: int = 8           # rows per proxy step
  pool_rows: int = 1024         # packed train rows per domain in the shared pools
  eval_rows: int = 32           # validation rows per eval set
  eval_chunk_rows: int = 16     # eval rows scored per forward (bounds K x rows x T x V logits)
  steps_per_call: int = 25      # steps scanned inside one jit call
  data_seed: int = 0            # the shared data order (common random numbers)
  init_seed: int = 0            # every proxy's init seed, unless `init_seeds` is given


@dataclasses.dataclass(frozen=True)
class Pools:
  """Shared data: `train` features `[D, N, T]` per domain; `eval` rows `[E, T]`, each in the
  eval set `eval_set_E` of `eval_sets` (names)."""
  domains: tuple[str, ...]
  train: Mapping[str, np.ndarray]
  eval_sets: tuple[str, ...]
  eval: Mapping[str, np.ndarray]
  eval_set_E: np.ndarray

  @property
  def rows_per_domain(self) -> int:
    return next(iter(self.train.values())).shape[1]


def _as_features(rows: Sequence[Mapping[str, np.ndarray]], n: int, where: str) -> dict:
  if not rows:
    raise ValueError(f"{where} gave no packed rows; check that its split has documents.")
  out = {f: np.stack([r[f] for r in rows]) for f in _FEATURES if f in rows[0]}
  if "decoder_loss_weights" not in out:
    out["decoder_loss_weights"] = (out["decoder_target_tokens"] > 0).astype(np.int32)
  if len(rows) < n:  # a small domain repeats (its epochs are what the proxies see)
    out = {f: np.resize(v, (n,) + v.shape[1:]) for f, v in out.items()}
  return out


def _take_rows(config: pipeline.DataConfig, task: str, split: str, n: int, seed: int | None
               ) -> list[dict]:
  ds = pipeline.get_dataset(config, task, split, shuffle=seed is not None,
                            num_epochs=1, seed=seed)
  return list(pipeline.tf_options(ds.take(n)).as_numpy_iterator())


def validation_rows(config: pipeline.DataConfig, task: str, n: int) -> dict:
  """The first `n` packed validation rows of `task` (features `[n, T]`, in file order)."""
  return _as_features(_take_rows(config, task, "validation", n, None), 0, f"{task} (validation)")


def build_pools(config: pipeline.DataConfig, swarm: SwarmConfig,
                eval_tasks: Mapping[str, str] | None = None) -> Pools:
  """Packs `pool_rows` shuffled train rows of each of the mixture's domains (in the run's
  objective, layout and length) and `eval_rows` validation rows of each eval set: by default
  every domain's, plus `eval_tasks` (`{eval set name: task}`, e.g. a target task)."""
  domain_tasks = pipeline.domain_tasks(config.mixture_or_task_name)
  train = [_as_features(_take_rows(config, t, "train", swarm.pool_rows,
                                   pipeline.domain_seed(swarm.data_seed, t)),
                        swarm.pool_rows, f"{t} (train)") for t in domain_tasks.values()]
  sets = {**domain_tasks, **(eval_tasks or {})}
  evals = [validation_rows(config, t, swarm.eval_rows) for t in sets.values()]
  return Pools(
      domains=tuple(domain_tasks), train={f: np.stack([p[f] for p in train]) for f in train[0]},
      eval_sets=tuple(sets), eval={f: np.concatenate([e[f] for e in evals]) for f in evals[0]},
      eval_set_E=np.concatenate([np.full(len(e["decoder_target_tokens"]), i, np.int32)
                                 for i, e in enumerate(evals)]))


def slot_points(data_seed: int, first_slot: jax.Array, num_slots: int) -> jax.Array:
  """u_j in [0, 1) of batch slots j = first_slot, ...: a golden-ratio sequence from a seeded
  offset, in exact uint32 arithmetic (so every proxy, and every resume, sees the same points)."""
  offset = np.uint32(np.random.SeedSequence([data_seed, 0x5357]).generate_state(1)[0])
  j = jnp.asarray(first_slot).astype(jnp.uint32) + jnp.arange(num_slots, dtype=jnp.uint32)
  bits = (offset + j * _PHI_U32) >> 8  # the top 24 bits: exact in float32, so u < 1
  return bits.astype(jnp.float32) / np.float32(2.0**24)


def slot_domains(weights_KD: jax.Array, u_B: jax.Array) -> jax.Array:
  """Domain of each slot `[K, B]` by the inverse CDF of each proxy's weights at shared u_B."""
  cdf_KD = jnp.cumsum(weights_KD, axis=-1) / jnp.sum(weights_KD, axis=-1, keepdims=True)
  return jnp.sum(u_B[None, :, None] >= cdf_KD[:, None, :-1], axis=-1).astype(jnp.int32)


def gather_batch(train: Mapping[str, jax.Array], weights_KD, rows_KD, step, data_seed,
                 batch_size):
  """Each proxy's batch `[K, B, T]` of step `step` and its rows taken per domain after it."""
  num_domains, num_rows = train["decoder_target_tokens"].shape[:2]
  domain_KB = slot_domains(weights_KD, slot_points(data_seed, step * batch_size, batch_size))
  onehot_KBD = jax.nn.one_hot(domain_KB, num_domains, dtype=jnp.int32)
  before_KBD = jnp.cumsum(onehot_KBD, axis=1) - onehot_KBD + rows_KD[:, None, :]
  position_KB = jnp.take_along_axis(before_KBD, domain_KB[..., None], axis=-1)[..., 0]
  row_KB = position_KB % num_rows
  batch = {f: v[domain_KB, row_KB] for f, v in train.items()}
  return batch, rows_KD + onehot_KBD.sum(axis=1), domain_KB


def _mean_loss(params, model, batch):
  loss_BT, weights_BT = trainer.token_losses(model, params, batch)
  return (loss_BT * weights_BT).sum() / jnp.maximum(weights_BT.sum(), 1.0)


@dataclasses.dataclass
class SwarmState:
  """The proxies' parameters and optimiser states (leading axis K), rows read `[K, D]`, step."""
  params: object
  opt_state: object
  rows_KD: jax.Array
  step: int = 0


class Swarm:
  """Trains and evaluates K proxies of one model config, each on its own weights `[K, D]`."""

  def __init__(self, model: transformer.TransformerConfig, optimizer: optim.OptimizerConfig,
               pools: Pools, config: SwarmConfig):
    if model.vocab_size is None:
      raise ValueError("The proxies' TransformerConfig.vocab_size is None; size it from the "
                       "run's vocabulary (mixjax.vocab.embedding_size).")
    self.config, self.pools = config, pools
    self.model = transformer.build_model(model)
    self.tx = optim.make_optimizer(optimizer, config.train_steps)
    self._train = {f: jnp.asarray(v) for f, v in pools.train.items()}
    self._chunk = jax.jit(self._train_chunk, static_argnames="num_steps",
                          donate_argnames=("params", "opt_state"))
    self._eval_chunk = jax.jit(self._eval_losses)

  def init(self, weights_KD: np.ndarray, init_seeds: Sequence[int] | None = None
           ) -> SwarmState:
    """Fresh proxies; all from `config.init_seed` unless `init_seeds` (one per proxy) says."""
    num_proxies = len(_check_weights(weights_KD, len(self.pools.domains)))
    seeds = list(init_seeds) if init_seeds is not None else [self.config.init_seed] * num_proxies
    if len(seeds) != num_proxies:
      raise ValueError(f"init_seeds has {len(seeds)} seeds for {num_proxies} proxies.")
    tokens_BT = jnp.zeros((1, self.pools.train["decoder_target_tokens"].shape[-1]), jnp.int32)

    def init_one(key):
      params = nn.unbox(self.model.init(key, tokens_BT)["params"])
      return params, self.tx.init(params)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    params, opt_state = jax.jit(jax.vmap(init_one))(keys)
    return SwarmState(params, opt_state, jnp.zeros((num_proxies, len(self.pools.domains)),
                                                   jnp.int32))

  def _train_chunk(self, params, opt_state, rows_KD, weights_KD, step0, train, *, num_steps):
    def proxy_step(params, opt_state, batch):
      loss, grads = jax.value_and_grad(_mean_loss)(params, self.model, batch)
      updates, opt_state = self.tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    def body(carry, step):
      params, opt_state, rows_KD = carry
      batch, rows_KD, _ = gather_batch(train, weights_KD, rows_KD, step,
                                       self.config.data_seed, self.config.batch_size)
      params, opt_state, loss_K = jax.vmap(proxy_step)(params, opt_state, batch)
      return (params, opt_state, rows_KD), loss_K
    steps = step0 + jnp.arange(num_steps, dtype=jnp.int32)
    (params, opt_state, rows_KD), loss_SK = jax.lax.scan(body, (params, opt_state, rows_KD),
                                                         steps)
    return params, opt_state, rows_KD, loss_SK

  def train(self, state: SwarmState, weights_KD: np.ndarray, num_steps: int | None = None,
            on_chunk: Callable[[int], None] | None = None) -> tuple[SwarmState, np.ndarray]:
    """Trains `num_steps` more steps (default: to `config.train_steps`); returns the new state
    and the training losses `[S, K]`. `on_chunk(steps_done)` is called after each jit call."""
    weights_KD = jnp.asarray(_check_weights(weights_KD, len(self.pools.domains)), jnp.float32)
    remaining = (self.config.train_steps - state.step) if num_steps is None else num_steps
    losses, params, opt_state, rows_KD = [], state.params, state.opt_state, state.rows_KD
    step = state.step
    while remaining > 0:
      n = min(self.config.steps_per_call, remaining)
      params, opt_state, rows_KD, loss_SK = self._chunk(
          params, opt_state, rows_KD, weights_KD, jnp.int32(step), self._train, num_steps=n)
      losses.append(loss_SK)
      step, remaining = step + n, remaining - n
      if on_chunk:
        on_chunk(n)
    loss_SK = np.concatenate([np.asarray(x) for x in losses]) if losses else np.zeros((0,))
    return SwarmState(params, opt_state, rows_KD, step), loss_SK

  def _eval_losses(self, params, rows):
    def one(params):
      loss_BT, weights_BT = trainer.token_losses(self.model, params, rows)
      return (loss_BT * weights_BT).sum(-1), weights_BT.sum(-1)
    return jax.vmap(one)(params)  # one forward of the shared rows for all K

  def evaluate(self, state: SwarmState) -> np.ndarray:
    """Token-weighted mean loss `[K, S]` of each eval set (`pools.eval_sets` order)."""
    rows, set_E = self.pools.eval, self.pools.eval_set_E
    chunk = self.config.eval_chunk_rows
    total = len(set_E)
    loss_KE, tokens_KE = [], []
    for start in range(0, total, chunk):
      part = {f: _pad_rows(v[start:start + chunk], chunk) for f, v in rows.items()}
      loss, tokens = self._eval_chunk(state.params, part)
      keep = min(chunk, total - start)
      loss_KE.append(np.asarray(loss)[:, :keep])
      tokens_KE.append(np.asarray(tokens)[:, :keep])
    loss_KE, tokens_KE = np.concatenate(loss_KE, 1), np.concatenate(tokens_KE, 1)
    num_sets = len(self.pools.eval_sets)
    onehot_ES = np.eye(num_sets)[set_E]
    return (loss_KE @ onehot_ES) / np.maximum(tokens_KE @ onehot_ES, 1.0)


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
  """Pads rows with zeros (zero loss weight) up to `n`, so every eval chunk has one shape."""
  return np.concatenate([x, np.zeros((n - len(x),) + x.shape[1:], x.dtype)]) if len(x) < n else x


def _check_weights(weights_KD, num_domains: int) -> np.ndarray:
  weights_KD = np.asarray(weights_KD, np.float64)
  if weights_KD.ndim != 2 or weights_KD.shape[1] != num_domains:
    raise ValueError(f"Proxy weights must be [K, {num_domains}] (one row per proxy, one column "
                     f"per domain), got shape {weights_KD.shape}.")
  if not np.all(np.isfinite(weights_KD)) or np.any(weights_KD < 0) or np.any(
      weights_KD.sum(1) <= 0):
    raise ValueError("Every proxy's weights must be finite, >= 0 and not all 0.")
  return weights_KD / weights_KD.sum(1, keepdims=True)


def run_swarm(swarm: Swarm, weights_KD: np.ndarray, max_proxies: int | None = None,
              init_seeds: Sequence[int] | None = None,
              on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
  """Trains proxies for `weights_KD` (at most `max_proxies` at a time) and returns their eval
  losses `[K, S]`; `on_chunk(proxy_steps)` reports progress."""
  weights_KD = np.asarray(weights_KD)
  n = max_proxies or len(weights_KD)
  seeds = list(init_seeds) if init_seeds is not None else [swarm.config.init_seed] * len(
      weights_KD)
  out = []
  for start in range(0, len(weights_KD), n):
    part = weights_KD[start:start + n]
    state = swarm.init(part, seeds[start:start + n])
    progress = on_chunk and (lambda steps, k=len(part): on_chunk(steps * k))  # proxy-steps
    state, _ = swarm.train(state, part, on_chunk=progress)
    out.append(swarm.evaluate(state))
  return np.concatenate(out)


def seed_noise(swarm: Swarm, weights_D: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
  """Std over init seeds `[S]` of each eval set's loss for one mixture (the noise floor that
  every comparison between proxies is read against)."""
  weights_KD = np.repeat(np.asarray(weights_D)[None], len(seeds), axis=0)
  return run_swarm(swarm, weights_KD, init_seeds=seeds).std(axis=0, ddof=1)
