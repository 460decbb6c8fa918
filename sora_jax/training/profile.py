"""`train.profile_steps = 'START:STOP'`: a profiler trace of steps START..STOP-1 (0-based) in the
workdir, where TensorBoard's profile tab finds it (`WORKDIR/plugins/profile/<run>/*.xplane.pb`).

Process 0 traces (its host's devices and threads); a run resumed inside the window traces what is
left of it. The trace stops once the window's last step has finished on the devices.
"""

from __future__ import annotations

import pathlib

import jax


class StepProfiler:

  def __init__(self, spec: str, logdir: pathlib.Path, active: bool):
    self.start, self.stop = (int(s) for s in spec.split(":")) if spec else (-1, -1)
    self.logdir, self.active, self.tracing = logdir, active and bool(spec), False

  def before_step(self, step: int) -> None:
    """`step`: the 0-based index of the step about to run."""
    if self.active and not self.tracing and self.start <= step < self.stop:
      jax.profiler.start_trace(str(self.logdir))
      self.tracing = True

  def after_step(self, done: int, outputs) -> str | None:
    """`done`: steps finished. Returns a line for the user when the trace was written."""
    if self.tracing and done >= self.stop:
      jax.block_until_ready(outputs)
      return self.close()
    return None

  def close(self) -> str | None:
    if not self.tracing:
      return None
    jax.profiler.stop_trace()
    self.tracing, self.active = False, False
    return f"profiler trace of steps {self.start}..{self.stop - 1} in {self.logdir / 'plugins' / 'profile'}"
