"""Preemption: on SIGTERM, checkpoint at the next step boundary and exit with `EXIT_CODE`.

Spot and preemptible TPU VMs (and most cluster schedulers) send SIGTERM and allow about 30 s
before the machine goes away. `rest_jax.main` installs `install_handler()`, which only records
the request; the loops ask `stop_requested()` at the boundaries they already resume from:

  * training phases (BC, value pretraining, Improve rounds): after every train step — the state
    is checkpointed at that step (nothing but the step in flight when the signal came is run
    after it, and no step is redone on resume);
  * Grow: after every shard written (a resumed Grow starts at the first missing shard);
  * between phases, after the phase-boundary checkpoint.

The loop then raises `Preempted`, and `rest_jax.main` exits with `EXIT_CODE` (75, `EX_TEMPFAIL`
of sysexits.h: "try again later"), which the TPU launcher reads as "resume this workdir". A second
SIGTERM takes the default action (the process ends at once; the run resumes from the newest
checkpoint).

With several processes every host must stop at the same step, or the collective checkpoint save
hangs. When `jax.distributed` runs JAX's preemption service (TPU pods), the hosts agree through
`multihost_utils.reached_preemption_sync_point`, which needs every host to ask at the same
sequence of points: they do, since each host runs the same steps and shards. (Its notifier then
catches SIGTERM in place of `install_handler`'s; with two CPU processes, SIGTERM to one of them
stopped both at the same point.) Without that service each host acts on its own signal.
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger(__name__)

EXIT_CODE = 75


class Preempted(Exception):
  """Raised at a step boundary after SIGTERM, once the position is checkpointed."""


_state = {"requested": False, "checks": 0}


def _on_sigterm(signum, frame):
  del frame
  _state["requested"] = True
  signal.signal(signum, signal.SIG_DFL)  # A second SIGTERM ends the process at once.
  logger.warning("SIGTERM received: checkpointing at the next step boundary, then exiting with "
                 "status %d.", EXIT_CODE)


def install_handler() -> None:
  """Makes SIGTERM a request to stop at the next step boundary (call from the main thread)."""
  _state["requested"] = False
  signal.signal(signal.SIGTERM, _on_sigterm)


def request() -> None:
  """Asks for a stop as SIGTERM does (tests and embedding programs)."""
  _state["requested"] = True


def requested() -> bool:
  """Whether this process got SIGTERM (or `request()`); the loops ask `stop_requested()`."""
  return _state["requested"]


def reset() -> None:
  _state["requested"], _state["checks"] = False, 0


def stop_requested() -> bool:
  """Whether to checkpoint and stop here. Every process must call it at the same points."""
  import jax  # Imported here: the launcher imports this module's EXIT_CODE without jax.
  _state["checks"] += 1
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    if distributed.global_state.preemption_sync_manager is not None:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(_state["checks"])
  return _state["requested"]
