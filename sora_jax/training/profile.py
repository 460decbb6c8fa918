"""`train.profile_steps = 'START:STOP'`: a profiler trace of steps START..STOP-1 (0-based) in the
workdir, where TensorBoard's profile tab finds it (`WORKDIR/plugins/profile/<run>/*.xplane.pb`).

Process 0 traces (its host's devices and threads); a run resumed inside the window traces what is
left of it. The trace stops once the window's last step has finished on the devices.

The trace holds the devices' work and the host threads' annotated regions (dispatch, transfers,
tf.data), not every Python call: JAX's Python tracer (its default) hooks every Python thread, and
this loop runs several (the device prefetch, orbax's writers), and a CI worker died in the profiler
with it on (2026-12-04, once in many runs; jax skips its own profiler tests on threaded Python 3.14
for the same hooks).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import jax

from sora_jax import storage


class StepProfiler:

  def __init__(self, spec: str, logdir, active: bool):
    self.start, self.stop = (int(s) for s in spec.split(":")) if spec else (-1, -1)
    self.logdir, self.active, self.tracing = storage.path(logdir), active and bool(spec), False
    # The profiler writes through its own file layer: a trace for a bucket is written locally, then uploaded.
    self.local = os.fspath(self.logdir) if storage.is_local(self.logdir) else None

  def before_step(self, step: int) -> None:
    """`step`: the 0-based index of the step about to run."""
    if self.active and not self.tracing and self.start <= step < self.stop:
      if self.local is None:
        self.staging = tempfile.mkdtemp(prefix="sora_jax_profile_")
      options = jax.profiler.ProfileOptions()
      options.python_tracer_level = 0
      jax.profiler.start_trace(self.local or self.staging, profiler_options=options)
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
    if self.local is None:
      for root, _, files in os.walk(self.staging):
        rel = os.path.relpath(root, self.staging)
        for name in files:
          dest = self.logdir / rel / name if rel != "." else self.logdir / name
          dest.parent.mkdir(parents=True, exist_ok=True)
          storage.upload(os.path.join(root, name), dest)
      shutil.rmtree(self.staging, ignore_errors=True)
    return f"profiler trace of steps {self.start}..{self.stop - 1} in {self.logdir / 'plugins' / 'profile'}"
