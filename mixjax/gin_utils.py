"""Command-line gin handling shared by the binaries (T5X conventions)."""

import argparse
import contextlib
import dataclasses
import logging
import os

import gin



def _gin_dir() -> str:
  """mixjax's gin files: installed as package data (`mixjax/gin/`, setup.py), or a checkout's
  `gin/` beside the package (editable installs, PYTHONPATH)."""
  package = os.path.dirname(os.path.abspath(__file__))
  candidates = (os.path.join(package, "gin"), os.path.join(os.path.dirname(package), "gin"))
  for candidate in candidates:
    if os.path.isfile(os.path.join(candidate, "quickstart.gin")):
      return candidate
  return candidates[-1]


REPO_GIN_DIR = _gin_dir()  # always on the search path of --gin_file and includes


def gin_path(name: str) -> str:
  """The path of one of mixjax's gin files, e.g. `gin_path('quickstart.gin')`,
  `gin_path('models/tiny.gin')` (what notebooks pass to `--gin_file`, from any directory)."""
  path = os.path.join(REPO_GIN_DIR, name)
  if not os.path.isfile(path):
    known = sorted(os.path.relpath(os.path.join(d, f), REPO_GIN_DIR)
                   for d, _, files in os.walk(REPO_GIN_DIR) for f in files if f.endswith(".gin"))
    raise FileNotFoundError(f"No gin file {name!r} in {REPO_GIN_DIR}; mixjax's are: "
                            f"{', '.join(known)}.")
  return path


def split_gin_overrides(argv):
  """Separates `--gin.NAME=VALUE` arguments (bindings) from the rest."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep:
        raise SystemExit(f"error: {arg!r} needs a value: --gin.{name}=VALUE")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  return bindings, rest


def parse_and_bind(argv, prog: str, add_flags=None):
  """Parses `--gin_file`, `--gin_search_paths`, `--gin_bindings` and `--gin.X=Y`; binds gin.

  `add_flags(parser)` adds a binary's own flags (e.g. the multi-process ones); the parsed
  arguments are returned.
  """
  bindings, rest = split_gin_overrides(argv)
  parser = argparse.ArgumentParser(prog=prog)
  if add_flags is not None:
    add_flags(parser)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated include dirs")
  parser.add_argument("--gin_bindings", action="append", default=[], help="NAME=VALUE binding")
  args = parser.parse_args(rest)
  if not args.gin_file:
    parser.error("at least one --gin_file is required, e.g. --gin_file=gin/quickstart.gin")
  search_paths = [p for p in args.gin_search_paths.split(",") if p] + [os.getcwd(), REPO_GIN_DIR]
  for path in search_paths:
    gin.add_config_file_search_path(path)
  files = [_resolve(f, search_paths) for f in args.gin_file]
  with _quiet_gin_path_probing():
    gin.parse_config_files_and_bindings(files, args.gin_bindings + bindings,
                                        finalize_config=False)
  return args


class _DropPathNotFound(logging.Filter):
  def filter(self, record):
    return not record.getMessage().startswith("Path not found:")


@contextlib.contextmanager
def _quiet_gin_path_probing():
  """gin logs an ERROR for every search path it tries before finding an include; hide those."""
  root = logging.getLogger()
  drop = _DropPathNotFound()
  root.addFilter(drop)
  try:
    yield
  finally:
    root.removeFilter(drop)


def _resolve(path, search_paths):
  if os.path.exists(path):
    return path
  for root in search_paths:
    candidate = os.path.join(root, path)
    if os.path.exists(candidate):
      return candidate
    # Allow `gin/quickstart.gin` from any working directory.
    candidate = os.path.join(root, os.path.relpath(path, "gin")) if path.startswith("gin") else ""
    if candidate and os.path.exists(candidate):
      return candidate
  raise SystemExit(f"error: gin file {path!r} not found in {search_paths}.")


# Run-level macros (T5X names) behind each required field, for error messages.
MACRO_OF_FIELD = {
    "RunConfig.model_dir": "MODEL_DIR",
    "RunConfig.train_steps": "TRAIN_STEPS",
    "DataConfig.mixture_or_task_name": "MIXTURE_OR_TASK_NAME",
    "DataConfig.task_feature_lengths": "TASK_FEATURE_LENGTHS",
    "DataConfig.batch_size": "BATCH_SIZE",
}


class MissingGinValueError(ValueError):
  """A field marked %gin.REQUIRED was never given a value."""


def check_required(*configs):
  """Raises naming every dataclass field still holding `gin.REQUIRED`, and how to set it."""
  missing = []
  for config in configs:
    for field in dataclasses.fields(config):
      if getattr(config, field.name) is gin.REQUIRED:
        missing.append(f"{type(config).__name__}.{field.name}")
  if missing:
    hints = [f"--gin.{MACRO_OF_FIELD[m]}=..." if m in MACRO_OF_FIELD else f"--gin.{m}=..."
             for m in missing]
    raise MissingGinValueError(
        f"Required gin values not set: {', '.join(missing)}. Set them in a gin file or on the "
        f"command line ({' '.join(hints)}; strings need inner quotes, e.g. "
        f"--gin.MODEL_DIR=\"'/tmp/run'\").")
