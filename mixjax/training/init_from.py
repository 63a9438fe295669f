"""Continued pre-training: a fresh run whose parameters start from another run's checkpoint.

`InitConfig.from_dir` (gin: `INIT_FROM`) names a mixjax run directory: a trained run, or one
`python -m mixjax.convert --from_hf` wrote. A new MODEL_DIR then starts at step 0 with that
checkpoint's parameters, its own learning-rate schedule (re-warming to the run's peak), its own
data stream (e.g. a replay mixture, `mixjax.mixing.schedules.replay_rates`) and, by `optimizer`:

- `fresh`: new AdamW moments (the usual continued pre-training recipe);
- `restored`: the source's moments and Adam step count (bias correction carries on), with the
  learning-rate schedule's own count reset to 0 so the new schedule starts at its beginning.

The model shape and vocabulary are the source's: a run's config may leave them unset. A field the
run sets to another value than the source's is an error naming it (runtime fields such as
`attention_impl` or `remat` are the run's own). Once the run has its first checkpoint, a rerun
resumes from it as any run does; `from_dir` is then only recorded in `run_configs.json`.
"""

import dataclasses
import os

import gin
import jax
import jax.numpy as jnp
import optax

from mixjax import vocab as vocab_lib
from mixjax.models import transformer
from mixjax.training import checkpoints
from mixjax.training import optim
from mixjax.training import partitioning
from mixjax.training import run_dir
from mixjax.training import trainer

OPTIMIZER_MODES = ("fresh", "restored")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class InitConfig:
  from_dir: str | None = None   # a mixjax run directory (trained, or converted from HF); None: init
  step: int | None = None       # its checkpoint to start from; None: the newest
  optimizer: str = "fresh"      # fresh | restored (see the module docstring)

  def __post_init__(self):
    if self.optimizer not in OPTIMIZER_MODES:
      raise ValueError(f"InitConfig.optimizer={self.optimizer!r}; valid: {OPTIMIZER_MODES}.")


class InitFromError(ValueError):
  """INIT_FROM names no usable run, or the run's config contradicts it."""


def source_configs(init: InitConfig) -> dict:
  """The source run's `run_configs.json`, with errors naming what is wrong with INIT_FROM."""
  run_dir.check_local(init.from_dir, "INIT_FROM")
  if not os.path.isdir(init.from_dir):
    raise InitFromError(f"INIT_FROM={init.from_dir!r} is not a directory: give the MODEL_DIR of "
                        "a mixjax run, or a directory `python -m mixjax.convert --from_hf` wrote.")
  try:
    return checkpoints.read_run_configs(init.from_dir)
  except FileNotFoundError as e:
    raise InitFromError(f"INIT_FROM={init.from_dir!r}: {e}") from None


def source_step(init: InitConfig) -> int:
  steps = run_dir.checkpoint_steps(init.from_dir)
  if not steps:
    raise InitFromError(f"INIT_FROM={init.from_dir!r} holds no checkpoint "
                        f"({os.path.join(init.from_dir, 'checkpoints')} is empty or missing).")
  if init.step is None:
    return steps[-1]
  if init.step not in steps:
    raise InitFromError(f"InitConfig.step={init.step}: {init.from_dir} holds checkpoints at steps "
                        f"{steps}.")
  return init.step


def adopt_source(saved: dict, model: transformer.TransformerConfig,
                 vocab: vocab_lib.VocabConfig, where: str
                 ) -> tuple[transformer.TransformerConfig, vocab_lib.VocabConfig]:
  """The run's model and vocabulary with the source's shape fields and vocabulary filled in.

  A field the run leaves at its default takes the source's value; a field set to another value
  than the source's raises `InitFromError` naming each such field."""
  conflicts, updates = [], {}
  defaults = transformer.TransformerConfig()
  for field in dataclasses.fields(transformer.TransformerConfig):
    name = field.name
    if name in run_dir.RUNTIME_MODEL_FIELDS or name not in saved.get("model", {}):
      continue
    then, now = saved["model"][name], getattr(model, name)
    if run_dir.plain(now) == run_dir.plain(then):
      continue
    if run_dir.plain(now) == run_dir.plain(getattr(defaults, name)):
      updates[name] = tuple(then) if isinstance(then, list) else then  # JSON lists: tuples
    else:
      conflicts.append((f"TransformerConfig.{name}", then, now))
  source_vocab = vocab_lib.VocabConfig(**saved["data"]["vocab"]) if "vocab" in saved.get(
      "data", {}) else vocab_lib.VocabConfig()
  if vocab != source_vocab:
    if vocab == vocab_lib.VocabConfig():
      vocab = source_vocab
    else:
      conflicts.append(("VocabConfig", run_dir.plain(dataclasses.asdict(source_vocab)),
                        run_dir.plain(dataclasses.asdict(vocab))))
  if conflicts:
    listed = "; ".join(f"{name}: {then!r} in INIT_FROM, {now!r} in this run"
                       for name, then, now in conflicts)
    raise InitFromError(
        f"INIT_FROM={where} holds a model this run's config contradicts ({listed}). The model "
        "shape and vocabulary come from INIT_FROM: drop those bindings (e.g. the models/*.gin "
        "file) or set them to INIT_FROM's values.")
  return dataclasses.replace(model, **updates), vocab


def _reset_schedule_counts(opt_state):
  """The optimiser state with every learning-rate schedule's step count set to 0."""
  def reset(node):
    if isinstance(node, optax.ScaleByScheduleState):
      return node._replace(count=jnp.zeros_like(node.count))
    return node
  return jax.tree.map(reset, opt_state,
                      is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState))


def initial_state(init: InitConfig, saved: dict, model: "flax.linen.Module",
                  tx: optax.GradientTransformation, mesh, rules, batch_shape):
  """(state at step 0 with the source checkpoint's parameters, state shardings, source step).

  Arrays are restored straight into this run's shardings (orbax reshards), never gathered."""
  step = source_step(init)
  source_tx = optim.make_optimizer(optim.OptimizerConfig(**saved["optimizer"]),
                                   saved["run"]["train_steps"])
  abstract, shardings = trainer.abstract_state_and_shardings(model, source_tx, mesh, rules,
                                                             batch_shape)
  ckpt = checkpoints.Checkpointer(init.from_dir, checkpoints.CheckpointConfig())
  try:
    restored, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  with partitioning.mesh_context(mesh, rules):
    if init.optimizer == "fresh":
      opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(restored.params)
    else:
      opt_state = jax.jit(_reset_schedule_counts, out_shardings=shardings.opt_state)(
          restored.opt_state)
    step0 = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
  return trainer.TrainState(step=step0, params=restored.params, opt_state=opt_state), shardings, step
