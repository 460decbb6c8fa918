"""Multi-host start-up (jax.distributed) and host-local batches -> one global jax.Array.

Coordinator address, process count and id come from flags, else from the environment
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), else from the cluster
(SLURM, TPU pods: jax.distributed auto-detects them). Single process when none is set.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from orbax.checkpoint import multihost

from sora_jax.parallel.mesh import batch_sharding

_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}


def _in_cluster() -> bool:
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Calls jax.distributed.initialize when a multi-process run is asked for; returns whether it did.

  Must run before anything touches the devices. On CPU the cross-process collectives use gloo.
  """
  coordinator_address = coordinator_address or os.environ.get(_ENV["coordinator_address"]) or None
  if num_processes is None and os.environ.get(_ENV["num_processes"]):
    num_processes = int(os.environ[_ENV["num_processes"]])
  if process_id is None and os.environ.get(_ENV["process_id"]):
    process_id = int(os.environ[_ENV["process_id"]])
  explicit = coordinator_address is not None and (num_processes or 1) > 1
  if not explicit and not _in_cluster():
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  else:
    jax.distributed.initialize()
  return True


def barrier(name: str, timeout_s: int = 1800) -> None:
  """Waits until every process reaches `name`, through the coordination service (not a collective).

  Processes reach their first collective at different times (data generation, compilation); gloo
  gives up on a peer after 30 s, so a multi-process run meets here first, with a generous timeout.
  """
  if jax.process_count() > 1:
    multihost.sync_global_processes(name, timeout=timeout_s)


def host_to_global(tree: Any, mesh: Mesh) -> Any:
  """Host-local numpy batch (each process's rows) -> global jax.Array tree sharded over the batch axes.

  Every leaf has the batch as its leading axis; the global batch is the processes' rows in
  process order.
  """
  sharding = batch_sharding(mesh)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
