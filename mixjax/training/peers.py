"""A lost peer: how one process of a multi-process run tells that another one has gone.

A SIGKILLed, preempted or crashed host makes the others' next collective fail in the transport's
words (gloo's "Connection reset by peer", NCCL's, the coordination service's missed heartbeats),
wherever that collective happens to be: a train step, the data iterator's token count, a checkpoint
save. `lost_peer` says it in the run's words instead: which process, which step, and that a rerun
on every host resumes from the newest complete checkpoint.
"""

import re

import jax

_TRANSPORT_FAILURE = re.compile(
    r"Gloo \w+ failed|Connection (reset|closed) by peer|Broken pipe|heartbeat|coordination service"
    r"|NCCL .*(remote|system) error", re.IGNORECASE)


class PeerLostError(ConnectionError):
  """Another process of the run is gone (killed, preempted, crashed)."""


def is_peer_lost(e: BaseException) -> bool:
  """Whether `e` is a collective failing because a peer process went away."""
  return jax.process_count() > 1 and bool(_TRANSPORT_FAILURE.search(str(e)))


def lost_peer(e: BaseException, step: int, newest_checkpoint: int | None) -> PeerLostError:
  """The error to raise in place of `e` (see `is_peer_lost`), during `step`."""
  cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
  resume = (f"the newest complete checkpoint (step {newest_checkpoint})"
            if newest_checkpoint is not None else "the start (no checkpoint is complete yet)")
  return PeerLostError(
      f"Process {jax.process_index()} of {jax.process_count()} lost contact with another "
      f"process of the run during step {step} ({cause}). A host stopped (killed, preempted or "
      f"crashed): its own log says why. Rerun the same command on every host; it resumes from "
      f"{resume}.")
