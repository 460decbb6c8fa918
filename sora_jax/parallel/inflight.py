"""When a loop must wait for each multi-device launch before dispatching the next.

XLA:CPU runs each simulated device's part of a program on a shared thread pool, and a collective
waits for every device of its launch. With several launches of a program with collectives in
flight on a loaded machine, the pool can fill with devices of later launches waiting at their
rendezvous while devices of an earlier launch are queued behind them: the rendezvous never
completes and XLA aborts the process after its timeout (seen with 8 CPU devices on 2 cores, in
`bash .ci/run`). On CPU, loops that launch such programs back to back therefore wait for each
launch; on accelerators launches stay asynchronous.
"""

from __future__ import annotations


def wait_each_launch(mesh) -> bool:
  """True for a multi-device CPU mesh (see the module docstring)."""
  devices = list(mesh.devices.flat)
  return len(devices) > 1 and devices[0].platform == "cpu"
