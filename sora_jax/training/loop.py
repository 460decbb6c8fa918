"""The training loop: resume, steps, checkpoints, metrics, hooks, preemption, divergence.

One process per host; every process runs the same loop on its own slice of the input; the step
sees one global batch. Randomness: state.rng from config.seed, step keys by fold_in(step).
"""

from __future__ import annotations

import json
import logging
import pathlib
import signal
import sys
import threading
import time
from typing import Callable, Iterable

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils
from tensorflow.core.framework import summary_pb2
from tqdm.auto import tqdm

from sora_jax.config import to_json, validate
from sora_jax.data.pipeline import TrainInput
from sora_jax.errors import SoraError
from sora_jax.models import encoder
from sora_jax.parallel import distributed, mesh as mesh_lib
from sora_jax.training import checkpoint as ckpt
from sora_jax.training.optim import build_optimizer
from sora_jax.training.profile import StepProfiler
from sora_jax.training.state import init_state
from sora_jax.training.step import device_batch, jit_train_step

log = logging.getLogger("sora_jax.train")

Hook = Callable[[int, dict], dict]

# What tensorboard.summary.v2.scalar writes: the 'scalars' plugin, scalar data class.
_SCALAR = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
                                      data_class=summary_pb2.DATA_CLASS_SCALAR)


def _say(message: str) -> None:
  """A line for the user on process 0 (stderr), whatever the logging set-up."""
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


class DivergedError(SoraError):
  """The loss became NaN or Inf."""


class _Preemption:
  """SIGTERM sets a flag; the loop saves at the next step boundary and returns."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def agreed(self) -> bool:
    """All processes stop at the same step: any process's request counts for all."""
    if jax.process_count() == 1:
      return self.requested
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


class _Writer:
  """metrics.jsonl + TensorBoard event files (through tf.summary) on process 0; nothing elsewhere."""

  def __init__(self, workdir: pathlib.Path):
    self.active = jax.process_index() == 0
    if self.active:
      self.tb = tf.summary.create_file_writer(str(workdir))
      self.jsonl = open(workdir / "metrics.jsonl", "a")

  def write(self, step: int, record: dict) -> None:
    if not self.active:
      return
    record = {k: float(v) for k, v in record.items()}
    with self.tb.as_default():
      for name, value in record.items():
        tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_SCALAR)
    self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
    self.jsonl.flush()

  def close(self):
    if self.active:
      self.tb.flush()
      self.jsonl.close()


def train(config, workdir, *, hooks: Iterable[Hook] = (), stop_at_step: int | None = None,
          batch_callback: Callable[[int, dict], None] | None = None):
  """Trains to config.train.num_steps (resuming from workdir's latest checkpoint); returns the TrainState.

  config is validated here, where it enters training (ConfigError before anything compiles).
  hooks: `hook(step, variables) -> {name: float}` every train.quick_eval_every steps and at the end.
  stop_at_step: stop there as a preemption would (save, return); for tests and time-boxed runs.
  batch_callback: `f(step, host_batch)` before each step (tests check the batch order with it).
  """
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run = _Run(config, workdir)
  state, start = run.restore_or_init()
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(to_json(config))
  writer = _Writer(workdir)
  bar = _progress(config.train.num_steps, start)
  profiler = StepProfiler(config.train.profile_steps, workdir, jax.process_index() == 0)
  try:
    with _Preemption() as preempt:
      state = _loop(run, state, start, tuple(hooks), writer, bar, preempt, stop_at_step, batch_callback,
                    profiler)
  finally:
    profiler.close()
    run.manager.wait_until_finished()
    run.manager.close()
    writer.close()
    bar.close()
  return state


class _Run:
  """What a run is made of: mesh, jitted step, checkpoint manager, input stream."""

  def __init__(self, config, workdir: pathlib.Path):
    self.config, self.workdir = config, workdir
    self.mesh = mesh_lib.make_mesh(config)  # ConfigError here, before anything compiles
    self.tx = build_optimizer(config)
    self.abstract = jax.eval_shape(lambda: init_state(config, self.tx))
    self.step_fn, self.shardings = jit_train_step(config, encoder(config), self.tx, self.abstract, self.mesh)
    self.manager = ckpt.make_manager(workdir, keep=config.train.keep_checkpoints)
    self.data = TrainInput(config, process_index=jax.process_index(), process_count=jax.process_count())

  def restore_or_init(self):
    """-> (state, first step): the latest checkpoint onto this mesh, else a fresh init."""
    if self.manager.latest_step() is None:
      # Init runs once: compiled without LLVM optimisation (same values, a fraction of the compile time).
      state = jax.jit(lambda: init_state(self.config, self.tx), out_shardings=self.shardings).lower().compile(
          compiler_options={"xla_backend_optimization_level": 0})()
      return state, 0
    target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    self.abstract, self.shardings)
    state, data_state, start = ckpt.restore(self.manager, target)
    if data_state is not None:
      self.data.set_state(data_state)
    else:
      _say(f"checkpoint {start} was written by another process count; the input restarts its stream")
    _say(f"resumed from {ckpt.checkpoint_dir(self.workdir)} at step {start} on {self.mesh.size} devices")
    return state, start


def _loop(run: _Run, state, start, hooks, writer, bar, preempt, stop_at_step, batch_callback, profiler):
  tc = run.config.train
  last_good = run.manager.latest_step()
  window: list[dict] = []
  t_window, n_window = time.perf_counter(), 0
  step_fn, step = run.step_fn, start
  while step < tc.num_steps:
    batch = next(run.data)
    if batch_callback is not None:
      batch_callback(step, batch)
    global_batch = distributed.host_to_global(device_batch(batch), run.mesh)
    if step == start and jax.process_count() > 1:
      step_fn = step_fn.lower(state, global_batch).compile()  # every process compiles, then all meet
      distributed.barrier(f"sora_jax_first_step_{start}")
    profiler.before_step(step)
    state, metrics = step_fn(state, global_batch)
    # Waits for the whole launch (its outputs are ready together), so on CPU meshes no second
    # launch is in flight before this one ends (see sora_jax/parallel/inflight.py).
    metrics = jax.device_get(metrics)
    step += 1
    if (traced := profiler.after_step(step, state)) is not None:
      bar.write(traced)
    if not metrics.pop("finite"):
      run.manager.wait_until_finished()
      raise DivergedError(
          f"loss is {metrics['loss']} (grad norm {metrics['grad_norm']}) at step {step}; stopped without "
          f"saving it. Last good checkpoint: step {last_good} in {ckpt.checkpoint_dir(run.workdir)}. Lower "
          "optimizer.learning_rate or set optimizer.clip_norm, then rerun to resume from it")
    window.append(metrics)
    n_window += 1
    bar.update(1)
    stopping = preempt.agreed() or step == stop_at_step
    record = {}
    if step % tc.log_every == 0 or step == tc.num_steps or stopping:
      record = _summarise(window, n_window * tc.batch_size / max(time.perf_counter() - t_window, 1e-9))
      bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{record['clips_per_sec']:.1f}")
      window = []
    if hooks and ((tc.quick_eval_every and step % tc.quick_eval_every == 0) or step == tc.num_steps):
      record.update(_run_hooks(hooks, step, state, bar))
    if record:
      writer.write(step, record)
    if (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.num_steps or stopping:
      ckpt.save(run.manager, step, state, run.data.get_state(), run.config, force=True)
      last_good = step
    if record:
      t_window, n_window = time.perf_counter(), 0
    if stopping:
      _say(f"stopping at step {step} ({'preempted' if preempt.requested else 'stop_at_step'}); "
           "checkpoint saved, rerun the same command to resume")
      break
  return state


def _summarise(window: list[dict], clips_per_sec: float) -> dict:
  """The mean of each metric over the steps since the last log line, and the throughput."""
  record = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
  record["clips_per_sec"] = clips_per_sec
  return record


def _run_hooks(hooks, step: int, state, bar) -> dict:
  variables = state.inference_variables()
  record = {}
  for hook in hooks:
    record.update({k: float(v) for k, v in hook(step, variables).items()})
  if "knn_accuracy" in record:
    bar.write(f"step {step}: knn_accuracy {record['knn_accuracy']:.3f}")
  return record


def _progress(total: int, initial: int):
  return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
              disable=jax.process_index() != 0, mininterval=1.0)
