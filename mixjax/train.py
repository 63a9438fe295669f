"""Training binary (T5X conventions).

  python -m mixjax.train --gin_file=gin/quickstart.gin [--gin_file=...] [--gin.TRAIN_STEPS=200]
  python -m mixjax.train --gin_file=... --dry_run [--topology=v5e:4x4] [--num_slices=2]
      [--dry_run_step=train|eval|decode]

Later `--gin_file`s override earlier ones; `--gin.NAME=VALUE` binds after all files;
`--gin_search_paths` lists directories for relative includes (the repo's `gin/` is always on it).
Multi-process runs add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (not
needed under SLURM or on a TPU VM); only process 0 writes the run directory's files.
Task bindings (e.g. `--gin.register_synthetic.num_docs=2000`) apply whatever the order of imports
and bindings: the built-in tasks are registered again once every binding is parsed.

`--dry_run` compiles the train step ahead of time (for a named TPU slice with `--topology`, else
for the local devices), writes `MODEL_DIR/dry_run.json`, prints the report and trains nothing;
exit status 4 when the step does not fit in the chip's HBM (see `mixjax.training.compile`).
"""

import argparse
import os
import sys


def _dry_run_flags(argv):
  """Splits off --dry_run / --topology / --num_slices; the rest goes to gin."""
  parser = argparse.ArgumentParser(prog="mixjax.train", add_help=False)
  parser.add_argument("--dry_run", action="store_true")
  parser.add_argument("--topology", default=None)
  parser.add_argument("--num_slices", type=int, default=1)
  parser.add_argument("--dry_run_step", default="train", choices=("train", "eval", "decode"))
  return parser.parse_known_args(argv)


_FLAGS, _ = _dry_run_flags(sys.argv[1:])
if _FLAGS.topology:  # compile-only TPU devices: libtpu without metadata queries (before jax loads)
  for _name, _value in {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost",
                        "JAX_PLATFORMS": "cpu", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}.items():
    os.environ.setdefault(_name, _value)

from mixjax import console  # noqa: E402

console.quiet_start()  # before anything loads TensorFlow

from mixjax import gin_utils  # noqa: E402
from mixjax import user_errors  # noqa: E402
from mixjax.launch import distributed  # noqa: E402
from mixjax.training import checkpoints  # noqa: E402
from mixjax.training import compile as compile_lib  # noqa: E402
from mixjax.training import loop  # noqa: E402
import mixjax_tasks  # noqa: E402


def configure(argv) -> None:
  """Parses the gin flags and registers the built-in tasks with the bindings they give."""
  args = gin_utils.parse_and_bind(argv, prog="mixjax.train", add_flags=distributed.add_flags)
  distributed.initialize(distributed.config_from_args(args))
  mixjax_tasks.register_all()


def dry_run(flags) -> dict:
  """Compiles the configured step for the target; prints and writes the report."""
  configs = loop.configs_from_gin()
  if flags.topology is None and flags.num_slices != 1:
    raise SystemExit("error: --num_slices needs --topology.")
  try:
    report = compile_lib.dry_run(configs["data"], configs["model"], configs["optimizer"],
                                 configs["mesh"], train_steps=configs["run"].train_steps,
                                 topology=flags.topology, num_slices=flags.num_slices,
                                 step=flags.dry_run_step)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from e
  path = compile_lib.write_report(configs["run"].model_dir, report)
  print(compile_lib.format_report(report))
  print(f"wrote {path}")
  if not report["fits"]:
    print(compile_lib.levers(report), file=sys.stderr)
    raise SystemExit(compile_lib.EXIT_DOES_NOT_FIT)
  return report


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  return user_errors.run_binary(lambda: _configure_and_run(argv), prog="mixjax.train",
                                expected=(checkpoints.CorruptCheckpointError,))


def _configure_and_run(argv):
  flags, rest = _dry_run_flags(argv)
  configure(rest)
  if flags.dry_run:
    return dry_run(flags)
  if flags.topology or flags.num_slices != 1:
    raise SystemExit("error: --topology / --num_slices only apply with --dry_run.")
  return loop.train()


if __name__ == "__main__":
  main()
