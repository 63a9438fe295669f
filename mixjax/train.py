"""Training binary (T5X conventions).

  python -m mixjax.train --gin_file=gin/quickstart.gin [--gin_file=...] [--gin.TRAIN_STEPS=200]

Later `--gin_file`s override earlier ones; `--gin.NAME=VALUE` binds after all files;
`--gin_search_paths` lists directories for relative includes (the repo's `gin/` is always on it).
Multi-process runs add `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (not
needed under SLURM or on a TPU VM); only process 0 writes the run directory's files.
Task bindings (e.g. `--gin.register_synthetic.num_docs=2000`) apply whatever the order of imports
and bindings: the built-in tasks are registered again once every binding is parsed.
"""

import sys

from mixjax import gin_utils
from mixjax import user_errors
from mixjax.launch import distributed
from mixjax.training import checkpoints
from mixjax.training import loop
import mixjax_tasks


def configure(argv) -> None:
  """Parses the gin flags and registers the built-in tasks with the bindings they give."""
  args = gin_utils.parse_and_bind(argv, prog="mixjax.train", add_flags=distributed.add_flags)
  distributed.initialize(distributed.config_from_args(args))
  mixjax_tasks.register_all()


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  return user_errors.run_binary(lambda: _configure_and_train(argv), prog="mixjax.train",
                                expected=(checkpoints.CorruptCheckpointError,))


def _configure_and_train(argv):
  configure(argv)
  return loop.train()


if __name__ == "__main__":
  main()
