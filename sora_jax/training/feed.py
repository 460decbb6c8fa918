"""Global batches placed on the devices ahead of the step that uses them.

A background thread reads the next host batches and starts their transfer to the devices
(`parallel.prefetch`), up to `depth` ahead, while the main thread dispatches steps; with depth 0
each batch is read and transferred just before its step. The time the loop is blocked waiting for
a batch is counted (`take_wait`), for the loop's data-wait share.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from sora_jax.parallel import distributed
from sora_jax.parallel.prefetch import prefetch
from sora_jax.training.step import device_batch


class DeviceFeed:

  def __init__(self, batches: Iterator[dict], mesh, depth: int, first_step: int, end_step: int,
               callback: Callable[[int, dict], None] | None = None, *, config):
    """`batches`: this process's host batches from global step `first_step` on; none is read for
    `end_step` or later. `callback(step, host_batch)` runs when a batch is read, before its
    transfer (so it may change the batch), up to `depth` + 1 steps ahead of the step."""

    def produce():
      for step in range(first_step, end_step):
        host = next(batches)
        if callback is not None:
          callback(step, host)
        yield distributed.host_to_global(device_batch(host, config), mesh)

    self._batches = prefetch(produce(), depth) if depth > 0 else produce()
    self.wait = 0.0

  def next(self):
    """The next step's global batch on the devices."""
    t = time.perf_counter()
    batch = next(self._batches)
    self.wait += time.perf_counter() - t
    return batch

  def take_wait(self) -> float:
    """Seconds the loop waited for batches since the last call."""
    wait, self.wait = self.wait, 0.0
    return wait

  def close(self) -> None:
    """Stops the reading thread (batches read ahead are dropped: the input position is the step's)."""
    self._batches.close()
