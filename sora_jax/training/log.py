"""What the loop records: a window of step metrics kept on the devices until a log or checkpoint
step, and the writer of `metrics.jsonl` + TensorBoard events.

Fetching metrics every step would make the host wait for every step, so nothing would overlap
the device's work; the window fetches them together, checks that every step's loss and gradient
were finite, and summarises them with the window's throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from sora_jax import storage
from sora_jax.errors import SoraError

# What tensorboard.summary.v2.scalar writes: the 'scalars' plugin, scalar data class.
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                                      data_class=summary_pb2.DATA_CLASS_SCALAR)


class DivergedError(SoraError):
  """The loss became NaN or Inf."""


class Window:
  """Metrics of the steps since the last summary: device arrays until `fetch`, then host floats."""

  def __init__(self, clips_per_step: int, devices: int):
    self.clips_per_step, self.devices = clips_per_step, devices
    self.pending: list[tuple[int, dict]] = []
    self.fetched: list[dict] = []
    self.started, self.data_wait = time.perf_counter(), 0.0

  def add(self, step: int, metrics: dict, data_wait: float) -> None:
    self.pending.append((step, metrics))
    self.data_wait += data_wait

  def fetch(self) -> list[dict]:
    """Brings the pending steps' metrics to the host (waits for those steps). Raises DivergedError,
    naming the steps, if any step's loss or gradient norm was not finite."""
    if self.pending:
      steps, metrics = zip(*self.pending)
      host = jax.device_get(list(metrics))
      self.pending = []
      bad = [(s, m) for s, m in zip(steps, host) if not m["finite"]]
      if bad:
        first, m = bad[0]
        raise DivergedError(f"loss is {m['loss']} (grad norm {m['grad_norm']}) at step {first}"
                            + (f" ({len(bad)} of steps {steps[0]}..{steps[-1]} not finite)" if len(bad) > 1 else ""))
      self.fetched += [{k: v for k, v in m.items() if k != "finite"} for m in host]
    return self.fetched

  def summary(self) -> dict:
    """Mean of each metric over the window, with its throughput; starts a new window."""
    rows = self.fetch()
    elapsed = max(time.perf_counter() - self.started, 1e-9)
    record = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    clips_per_sec = len(rows) * self.clips_per_step / elapsed
    record.update(clips_per_sec=clips_per_sec, clips_per_sec_per_device=clips_per_sec / self.devices,
                  step_time=elapsed / len(rows), data_wait_share=min(self.data_wait / elapsed, 1.0))
    self.fetched, self.started, self.data_wait = [], time.perf_counter(), 0.0
    return record


def _step_of(line: str) -> float:
  """The step of a metrics.jsonl line; inf for one that is not a record (e.g. cut by a kill)."""
  try:
    record = json.loads(line)
    return float(record["step"]) if isinstance(record, dict) else float("inf")
  except (ValueError, KeyError, TypeError):
    return float("inf")


class Writer:
  """metrics.jsonl + TensorBoard event files on process 0; nothing elsewhere. On resume at step
  `start`, lines after it (steps that are being redone) are dropped, so the log reads as one run.
  In a bucket, the event files are written locally and uploaded at each write (TensorFlow's own
  GCS client would bypass `storage`), and metrics.jsonl is rewritten whole (objects have no append)."""

  def __init__(self, workdir, start: int):
    self.active = jax.process_index() == 0
    if self.active:
      self.workdir = storage.path(workdir)
      path = self.workdir / "metrics.jsonl"
      keep = ""
      if path.exists():
        keep = "".join(line for line in path.read_text().splitlines(keepends=True) if _step_of(line) <= start)
      self.jsonl = storage.Appender(path, keep)
      self.staging = None if storage.is_local(self.workdir) else tempfile.mkdtemp(prefix="sora_jax_events_")
      self.tb = tf.summary.create_file_writer(self.staging or os.fspath(self.workdir))

  def write(self, step: int, record: dict) -> None:
    if not self.active:
      return
    record = {k: float(v) for k, v in record.items()}
    with self.tb.as_default():
      for name, value in record.items():
        tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)
    self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
    self.jsonl.flush()
    self._upload_events()

  def _upload_events(self) -> None:
    if self.staging is not None:
      self.tb.flush()
      for name in os.listdir(self.staging):
        storage.upload(os.path.join(self.staging, name), self.workdir / name)

  def close(self):
    if self.active:
      self.tb.flush()
      self._upload_events()
      self.jsonl.close()
      if self.staging is not None:
        shutil.rmtree(self.staging, ignore_errors=True)
