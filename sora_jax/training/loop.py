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

from sora_jax.errors import SoraError
from sora_jax.training import checkpoint as ckpt

log = logging.getLogger("sora_jax.train")

Hook = Callable[[int, dict], dict]


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
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))


class _TFSummaryWriter:
  """TensorBoard event files through tf.summary, for when clu's writers cannot import
  (clu.metric_writers needs the `tensorboard` package)."""

  def __init__(self, logdir: str):
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    # What tensorboard.summary.v2.scalar writes: the 'scalars' plugin, scalar data class.
    self._meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)

  def write_scalars(self, step: int, scalars: dict) -> None:
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(value, self._tf.float32), step=step, metadata=self._meta)

  def flush(self):
    self._writer.flush()


class _Writer:
  """metrics.jsonl + TensorBoard events (clu metric writers) on process 0; nothing elsewhere."""

  def __init__(self, workdir: pathlib.Path):
    self.active = jax.process_index() == 0
    if self.active:
      try:
        from clu import metric_writers
        self.tb = metric_writers.create_default_writer(str(workdir), asynchronous=False)
      except ImportError:
        self.tb = _TFSummaryWriter(str(workdir))
      self.jsonl = open(workdir / "metrics.jsonl", "a")

  def write(self, step: int, record: dict) -> None:
    if not self.active:
      return
    record = {k: float(v) for k, v in record.items()}
    self.tb.write_scalars(step, record)
    self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
    self.jsonl.flush()

  def close(self):
    if self.active:
      self.tb.flush()
      self.jsonl.close()


def train(config, workdir, *, hooks: Iterable[Hook] = (), stop_at_step: int | None = None,
          batch_callback: Callable[[int, dict], None] | None = None):
  """Trains to config.train.num_steps (resuming from workdir's latest checkpoint); returns the TrainState.

  hooks: `hook(step, variables) -> {name: float}` every train.quick_eval_every steps and at the end.
  stop_at_step: stop there as a preemption would (save, return); for tests and time-boxed runs.
  batch_callback: `f(step, host_batch)` before each step (tests check the batch order with it).
  """
  from sora_jax.config import to_json, validate
  from sora_jax.data.pipeline import TrainInput
  from sora_jax.models import build_encoder
  from sora_jax.parallel import distributed, mesh as mesh_lib
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  from sora_jax.training.step import device_batch, jit_train_step

  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = mesh_lib.make_mesh(config)  # ConfigError here, before anything compiles
  model = build_encoder(config)
  tx = build_optimizer(config)
  tc = config.train
  abstract = jax.eval_shape(lambda: init_state(config, tx))
  step_fn, shardings = jit_train_step(config, model, tx, abstract, mesh)
  manager = ckpt.make_manager(workdir, keep=tc.keep_checkpoints)
  data = TrainInput(config, process_index=jax.process_index(), process_count=jax.process_count())

  if manager.latest_step() is not None:
    target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    abstract, shardings)
    state, data_state, start = ckpt.restore(manager, target)
    if data_state is not None:
      data.set_state(data_state)
    else:
      _say(f"checkpoint {start} was written by another process count; the input restarts its stream")
    _say(f"resumed from {ckpt.checkpoint_dir(workdir)} at step {start} on {mesh.size} devices")
  else:
    # Init runs once: compiled without LLVM optimisation (same values, a fraction of the compile time).
    state = jax.jit(lambda: init_state(config, tx), out_shardings=shardings).lower().compile(
        compiler_options={"xla_backend_optimization_level": 0})()
    start = 0
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(to_json(config))

  writer = _Writer(workdir)
  hooks = tuple(hooks)
  clips_per_step = tc.batch_size
  last_good = manager.latest_step()
  window: list[dict] = []
  t_window, n_window = time.perf_counter(), 0
  bar = _progress(tc.num_steps, start)
  try:
    with _Preemption() as preempt:
      step = start
      while step < tc.num_steps:
        batch = next(data)
        if batch_callback is not None:
          batch_callback(step, batch)
        global_batch = distributed.host_to_global(device_batch(batch), mesh)
        if step == start and jax.process_count() > 1:
          step_fn = step_fn.lower(state, global_batch).compile()  # every process compiles, then all meet
          distributed.barrier(f"sora_jax_first_step_{start}")
        state, metrics = step_fn(state, global_batch)
        # Waits for the whole launch (its outputs are ready together), so on CPU meshes no second
        # launch is in flight before this one ends (see sora_jax/parallel/inflight.py).
        metrics = jax.device_get(metrics)
        step += 1
        if not metrics.pop("finite"):
          manager.wait_until_finished()
          raise DivergedError(
              f"loss is {metrics['loss']} (grad norm {metrics['grad_norm']}) at step {step}; stopped without "
              f"saving it. Last good checkpoint: step {last_good} in {ckpt.checkpoint_dir(workdir)}. Lower "
              "optimizer.learning_rate or set optimizer.clip_norm, then rerun to resume from it")
        window.append(metrics)
        n_window += 1
        bar.update(1)
        stopping = preempt.agreed() or step == stop_at_step
        record = {}
        if step % tc.log_every == 0 or step == tc.num_steps or stopping:
          elapsed = time.perf_counter() - t_window
          record = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
          record["clips_per_sec"] = n_window * clips_per_step / max(elapsed, 1e-9)
          bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{record['clips_per_sec']:.1f}")
          window = []
        if hooks and ((tc.quick_eval_every and step % tc.quick_eval_every == 0) or step == tc.num_steps):
          variables = state.inference_variables()
          for hook in hooks:
            record.update({k: float(v) for k, v in hook(step, variables).items()})
          if "knn_accuracy" in record:
            bar.write(f"step {step}: knn_accuracy {record['knn_accuracy']:.3f}")
        if record:
          writer.write(step, record)
        if (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.num_steps or stopping:
          ckpt.save(manager, step, state, data.get_state(), config, force=True)
          last_good = step
        if record:
          t_window, n_window = time.perf_counter(), 0
        if stopping:
          _say(f"stopping at step {step} ({'preempted' if preempt.requested else 'stop_at_step'}); "
               "checkpoint saved, rerun the same command to resume")
          break
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
    bar.close()
  return state


def _progress(total: int, initial: int):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
              disable=jax.process_index() != 0, mininterval=1.0)
