"""A clean console for the binaries: TensorFlow's start-up notices dropped, real warnings kept.

TensorFlow (which SeqIO loads, and mixjax uses only to feed data) prints, on every start, notices
nobody can act on: `All log messages before absl::InitializeLog()...`, the oneDNN notice, `Could
not find cuda drivers`, `failed call to cuInit`, CPU-instruction notices. Its C++ logging writes
them to stderr before `TF_CPP_MIN_LOG_LEVEL` takes effect, so they are filtered line by line at
the file descriptor while TensorFlow loads; every other line (a real warning) is written back.

`quiet_start()` is the first thing each binary does, before anything imports TensorFlow. It does
not choose JAX's platform: JAX finds its GPU or TPU (or CPU) as it would have, and `JAX_PLATFORMS`
is left to the user.
"""

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, Sequence

# Lines TensorFlow prints at start-up that say nothing a user of mixjax can act on.
NOISE = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
    r"failed call to cuInit",
    r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
))

_started = False


def is_noise(line: str, patterns: Sequence[re.Pattern] = NOISE) -> bool:
  return any(p.search(line) for p in patterns)


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[re.Pattern] = NOISE) -> Iterator[None]:
  """Captures file descriptor 2 (C++ and Python writes alike) for the block, then writes back
  every line that matches none of `patterns`, in order."""
  sys.stderr.flush()
  saved_fd = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved_fd, 2)
      os.close(saved_fd)
      capture.seek(0)
      kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(True)
              if not is_noise(line, patterns)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


def quiet_start() -> None:
  """Loads TensorFlow quietly and keeps it off the accelerators (it only feeds data; JAX owns the
  GPUs). Idempotent; call it before anything imports TensorFlow."""
  global _started
  if _started:
    return
  _started = True
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's INFO lines off; warnings stay
  with filtered_stderr():
    # Imported here, not at the top: the environment must be set and stderr filtered first.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    # A TensorFlow that saw the GPUs would reserve their memory beside JAX's. Listing them is
    # also where it calls cuInit (and fails, noisily, on a machine without a GPU).
    try:
      tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already ran (e.g. in a notebook): its devices are fixed
      pass
