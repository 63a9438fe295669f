"""How a binary ends on an error: one message naming the problem and the fix, then a prompt exit.

A bad input raises an exception whose message already names the bad value and what is valid
(`ValueError`, `OSError` and their subclasses, or a class the binary lists). `run_binary` prints
that message alone, without the traceback, and leaves with `os._exit`: a process whose tf.data or
orbax threads are still alive can otherwise hang at interpreter shutdown, or bury the message in
shutdown noise. Any other exception prints its traceback and exits the same prompt way.
`MIXJAX_TRACEBACK=1` prints the traceback for every error. Imports nothing heavy.
"""

import errno
import logging
import os
import re
import sys
import traceback
from typing import Callable

TRACEBACK_ENV = "MIXJAX_TRACEBACK"
USER_ERRORS = (ValueError, OSError, FloatingPointError)

# gin appends "  In call to configurable 'train' (<function ...>)" to an exception's message.
_GIN_CONTEXT = re.compile(r"\n?\s*In call to configurable '[^']*' \([^)]*\)")
# tf.data wraps an exception raised in a generator: "{{function_node ...}} Err: msg\n [[...]]".
_TF_FUNCTION = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_TF_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\].*", re.S)


def _is_tf_op_error(e: BaseException) -> bool:
  tf = sys.modules.get("tensorflow")
  return tf is not None and isinstance(e, tf.errors.OpError)


def message_of(e: BaseException) -> str:
  """The exception's own message, without gin's and tf.data's wrapping."""
  text = e.message if _is_tf_op_error(e) else str(e)
  text = _TF_NODE.sub("", _TF_FUNCTION.sub("", _GIN_CONTEXT.sub("", text))).strip()
  if isinstance(e, OSError) and e.errno == errno.ENOSPC and "space" not in text.lower():
    text += " (no space left on device: free some space or write to another disk)"
  return text or type(e).__name__


def is_user_error(e: BaseException, expected: tuple[type, ...] = ()) -> bool:
  return isinstance(e, USER_ERRORS + tuple(expected)) or _is_tf_op_error(e)


def _exit(code: int):
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  logging.shutdown()
  os._exit(code)  # pylint: disable=protected-access  (see the module docstring)


def run_binary(fn: Callable[[], object], prog: str, expected: tuple[type, ...] = ()):
  """Runs a binary's body; on an error prints one `prog: error: message` line and exits 1."""
  try:
    return fn()
  except SystemExit:
    raise
  except KeyboardInterrupt:
    print(f"{prog}: interrupted", file=sys.stderr)
    _exit(130)
  except BaseException as e:  # pylint: disable=broad-except  (the binary's last word)
    if os.environ.get(TRACEBACK_ENV) or not is_user_error(e, expected):
      traceback.print_exc()
    print(f"{prog}: error: {type(e).__name__}: {message_of(e)}", file=sys.stderr)
    if not os.environ.get(TRACEBACK_ENV):
      print(f"({TRACEBACK_ENV}=1 prints the full traceback.)", file=sys.stderr)
    _exit(1)
