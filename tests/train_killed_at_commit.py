"""The training binary, SIGKILLed by itself just before orbax commits the checkpoint of one step.

  python -m tests.train_killed_at_commit STEP [the flags of python -m mixjax.train]

The kill lands in orbax's commit of the step directory (`AtomicRenameTemporaryPath.finalize`):
every file of STEP is written under `checkpoints/STEP.orbax-checkpoint-tmp/` by then, and only the
step's `commit_success.txt` and the rename to `checkpoints/STEP` are left undone. A test hook kept
out of mixjax itself; tests/test_checkpoint_kill.py runs it.
"""

import os
import signal
import sys

from mixjax import train  # first: it quiets TensorFlow's start-up before anything loads it
from orbax.checkpoint.path import atomicity


def kill_at_commit(step: int):
  """Patches orbax so that committing the directory of `step` SIGKILLs this process instead."""
  commit = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize(self):
    if self.get_final().name == str(step):  # the step directory, not an item in it
      os.kill(os.getpid(), signal.SIGKILL)
    await commit(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize


if __name__ == "__main__":
  kill_at_commit(int(sys.argv.pop(1)))
  train.main()
