"""Training binary (T5X conventions).

  python -m mixjax.train --gin_file=gin/quickstart.gin [--gin_file=...] [--gin.TRAIN_STEPS=200]

Later `--gin_file`s override earlier ones; `--gin.NAME=VALUE` binds after all files;
`--gin_search_paths` lists directories for relative includes (the repo's `gin/` is always on it).
"""

import sys

from mixjax import gin_utils


def main(argv=None):
  gin_utils.parse_and_bind(sys.argv[1:] if argv is None else argv, prog="mixjax.train")
  # After parsing: the built-in tasks are registered (again) with the bindings just parsed.
  import mixjax_tasks  # pylint: disable=g-import-not-at-top
  from mixjax.training import loop  # pylint: disable=g-import-not-at-top
  mixjax_tasks.register_all()
  return loop.train()


if __name__ == "__main__":
  main()
