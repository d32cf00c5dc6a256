"""Multi-process start-up through JAX's own runtime (`jax.distributed`).

On TPU VMs (and SLURM/GKE clusters JAX recognises) `jax.distributed.initialize()` discovers
the coordinator, process count and process id itself. Elsewhere they come from arguments or the
environment: REST_JAX_COORDINATOR_ADDRESS (host:port of process 0), REST_JAX_NUM_PROCESSES and
REST_JAX_PROCESS_ID. On CPU, cross-process collectives use gloo.

After initialisation every process sees the global device list; rest_jax builds global arrays
from process-local rows (`sharding.shard_batch`), writes grown shards per process, gathers
evaluation outputs on every process and lets process 0 alone write reports.
"""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "REST_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "REST_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "REST_JAX_PROCESS_ID"


def _int_or_none(value, name):
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Initialises jax.distributed from arguments, else the environment, else auto-detection."""
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _int_or_none(
      os.environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
  process_id = process_id if process_id is not None else _int_or_none(
      os.environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  explicit = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise ValueError(
        "Multi-process set-up needs all of coordinator address, process count and process id "
        f"(got {ENV_COORDINATOR}={coordinator_address!r}, {ENV_NUM_PROCESSES}={num_processes!r}, "
        f"{ENV_PROCESS_ID}={process_id!r}); give none of them to auto-detect (TPU VMs).")
  if num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"{ENV_PROCESS_ID}={process_id} must be in [0, {num_processes}).")
  if os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address is None:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                               process_id=process_id)
