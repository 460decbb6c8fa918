"""Global batches placed on the devices ahead of the step that uses them.

The host reads batch s + depth from the input and starts its transfer while step s runs: the step
is dispatched asynchronously, so the host's work and the transfer overlap the device's. With
depth 0 each batch is read and transferred just before its step. The time the host spends in the
input and the transfer is counted (`take_wait`), for the loop's data-wait share.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Iterator

from sora_jax.parallel import distributed
from sora_jax.training.step import device_batch


class DeviceFeed:

  def __init__(self, batches: Iterator[dict], mesh, depth: int, first_step: int, end_step: int,
               callback: Callable[[int, dict], None] | None = None):
    """`batches`: this process's host batches from global step `first_step` on; none is read for
    `end_step` or later. `callback(step, host_batch)` runs when a batch is read, before its
    transfer (so it may change the batch), up to `depth` steps ahead of the step."""
    self.batches, self.mesh, self.depth, self.callback = batches, mesh, int(depth), callback
    self.end_step = end_step
    self.queue: collections.deque = collections.deque()
    self.next_step = first_step  # the global step of the next batch read from `batches`
    self.wait = 0.0

  def _read(self) -> None:
    t = time.perf_counter()
    host = next(self.batches)
    if self.callback is not None:
      self.callback(self.next_step, host)
    device = distributed.host_to_global(device_batch(host), self.mesh)
    self.queue.append(device)
    self.next_step += 1
    self.wait += time.perf_counter() - t

  def next(self):
    """The next step's global batch on the devices; the following `depth` are on their way."""
    if not self.queue:
      self._read()
    return self.queue.popleft()

  def refill(self) -> None:
    """Reads ahead up to `depth` batches (call after dispatching a step, so it overlaps the step)."""
    while len(self.queue) < self.depth and self.next_step < self.end_step:
      self._read()

  def take_wait(self) -> float:
    """Seconds spent reading and transferring since the last call."""
    wait, self.wait = self.wait, 0.0
    return wait
