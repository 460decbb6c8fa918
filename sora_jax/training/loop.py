"""The training loop: resume, steps, checkpoints, metrics, hooks, preemption, divergence.

One process per host; every process runs the same loop on its own slice of the input; the step
sees one global batch. Randomness: state.rng from config.seed, step keys by fold_in(step).

The host runs ahead of the devices: steps are dispatched asynchronously, a thread reads and
transfers the next global batches while a step runs (`data.device_prefetch`), and metrics stay on the
devices until a log, checkpoint or hook step. Only multi-device CPU meshes wait for each step
(`sora_jax/parallel/inflight.py`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import warnings
from typing import Callable, Iterable

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from sora_jax import storage
from sora_jax.config import terms, to_json, validate
from sora_jax.data.pipeline import TrainInput
from sora_jax.errors import ConfigError, SoraError, unwritable, unwritable_message
from sora_jax.parallel import distributed
from sora_jax.parallel.inflight import wait_each_launch
from sora_jax.training import checkpoint as ckpt, encoder_run
from sora_jax.training.captions import caption_features
from sora_jax.training.feed import DeviceFeed
from sora_jax.training.lock import WorkdirBusy, WorkdirLock
from sora_jax.training.log import DivergedError, Window, Writer
from sora_jax.training.profile import StepProfiler
from sora_jax.training.step import build_step

__all__ = ["train", "DivergedError"]

log = logging.getLogger("sora_jax.train")

Hook = Callable[[int, dict], dict]


def _say(message: str) -> None:
  """A line for the user on process 0 (stderr), whatever the logging set-up."""
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


class _QuietDiskErrors(logging.Filter):
  """Drops the tracebacks a full or read-only disk makes orbax print (one per failed write thread
  and asyncio task, ~350 lines): the run stops with one line that says the same."""

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else ValueError(record.getMessage())
    return unwritable(exc) is None

  def __enter__(self):
    for name in ("absl", "asyncio"):  # orbax's threads; tasks never awaited (logged at exit: kept)
      logging.getLogger(name).addFilter(self)
    self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
    self._thread_hook, threading.excepthook = threading.excepthook, self._thread_exception
    # orbax's write tasks that a failed save left pending, collected later
    warnings.filterwarnings("ignore", r"coroutine 'async_serialize_from_host", RuntimeWarning)
    return self

  def __exit__(self, *exc):
    sys.unraisablehook, threading.excepthook = self._hook, self._thread_hook

  def _thread_exception(self, args) -> None:  # a writer thread of ours or orbax's hitting the same disk
    if unwritable(args.exc_value) is None:
      self._thread_hook(args)

  def _unraisable(self, u) -> None:
    # tensorstore's callbacks into the event loop orbax closed after a failed write
    if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
      self._hook(u)


_QUIET_DISK_ERRORS = _QuietDiskErrors()  # one instance: adding it to a logger again is a no-op


class _Preemption:
  """SIGTERM or Ctrl-C (SIGINT) sets a flag; the loop saves at the next step where all processes
  agree and returns. A second Ctrl-C aborts at once."""

  SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}

  def __init__(self, every: int, lock_lost: threading.Event | None = None):
    self.requested, self.every, self.reason = False, every, ""
    self.lock_lost, self.workdir_lost = lock_lost, False  # another run took the workdir's lock over
    self._old = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.requested:
      raise KeyboardInterrupt  # the second Ctrl-C: abort now, without the save
    self.requested, self.reason = True, self.SIGNALS[signum]
    if signum == signal.SIGINT:
      _say("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to abort without saving)")

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)

  def agreed(self, step: int) -> bool:
    """All processes stop at the same step: any process's request counts for all. With several
    processes they ask each other every `train.preemption_check_every` steps (an allgather)."""
    flags = np.array([self.requested, self.lock_lost is not None and self.lock_lost.is_set()])
    if jax.process_count() > 1:
      if step % self.every:
        return False
      flags = np.any(multihost_utils.process_allgather(flags), axis=0)  # the lock: process 0 alone knows
    if flags[1]:
      self.workdir_lost, self.reason = True, "the workdir lock was taken over by another run"
    return bool(flags.any())


def train(config, workdir, *, hooks: Iterable[Hook] = (), stop_at_step: int | None = None,
          batch_callback: Callable[[int, dict], None] | None = None):
  """Trains to config.train.num_steps (resuming from workdir's latest checkpoint); returns the TrainState.

  config is validated here, where it enters training (ConfigError before anything compiles); a
  generate config first takes its encoder run's model (`encoder_run.adopt`).
  hooks: `hook(step, variables) -> {name: float}` every train.quick_eval_every steps and at the end.
  stop_at_step: stop there as a preemption would (save, return); for tests and time-boxed runs.
  batch_callback: `f(step, host_batch)` when a batch is read, before it goes to the devices (up to
    data.device_prefetch steps ahead of its step; tests check the batch order with it).
  """
  workdir = storage.path(workdir)  # a local folder or a URL (gs://bucket/run)
  config = validate(encoder_run.adopt(config, workdir))  # a generator takes its encoder run's model
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    with _QUIET_DISK_ERRORS, WorkdirLock(workdir, _say) as lock:  # one run per workdir (WorkdirBusy names the holder)
      return _train(config, workdir, tuple(hooks), stop_at_step, batch_callback, lock.lost)
  except Exception as e:  # noqa: BLE001 - a full or read-only disk: one line naming what survived
    cause = unwritable(e)
    if cause is None:
      raise
    steps = sorted(int(p.name) for p in ckpt.checkpoint_dir(workdir).glob("*") if p.name.isdigit())
    kept = (f"checkpoint {steps[-1]} is intact: rerun the same command to resume from it" if steps
            else "no checkpoint was saved")
    raise SoraError(unwritable_message(cause, workdir, kept)) from e


def _train(config, workdir: epath.Path, hooks, stop_at_step, batch_callback, lock_lost=None):
  run = _Run(config, workdir)
  state, start = run.restore_or_init()
  if jax.process_index() == 0:
    storage.write_text(workdir / "config.json", to_json(config))
  writer = Writer(workdir, start)
  bar = _progress(config.train.num_steps, start)
  profiler = StepProfiler(config.train.profile_steps, workdir, jax.process_index() == 0)
  try:
    with _Preemption(config.train.preemption_check_every, lock_lost) as preempt:
      state = _loop(run, state, start, hooks, writer, bar, preempt, stop_at_step, batch_callback, profiler)
  finally:
    with contextlib.ExitStack() as closing:  # each one runs even if one before it fails (a full disk)
      for close in (bar.close, writer.close, run.manager.close, run.manager.wait_until_finished, profiler.close):
        closing.callback(close)  # run last-in first-out: the profiler first, the bar last
  return state


class _Run:
  """What a run is made of: mesh, jitted step, checkpoint manager, input stream."""

  def __init__(self, config, workdir: epath.Path):
    self.config, self.workdir = config, workdir
    self.built = build_step(config)  # a bad mesh is a ConfigError here, before anything compiles
    self.mesh, self.step_fn, self.shardings = self.built.mesh, self.built.step, self.built.shardings
    self.manager = ckpt.make_manager(workdir, keep=config.train.keep_checkpoints)
    texts = caption_features(config) if "video_text" in terms(config.objective.name) else None
    self.data = TrainInput(config, process_index=jax.process_index(), process_count=jax.process_count(),
                           caption_features=texts)
    if texts is not None and self.data.captions.num_without:
      _say(f"{self.data.captions.num_without} of {self.data.num_examples} training videos have no caption: "
           "the video_text term leaves them out")

  def restore_or_init(self):
    """-> (state, first step): the latest checkpoint onto this mesh, else a fresh init. The input
    continues at the global step's position, whatever the process count that wrote it."""
    if self.manager.latest_step() is None:
      return self.built.init(), 0
    target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                    self.built.abstract, self.shardings)
    state, saved, start = ckpt.restore_newest_intact(self.manager, target, _say)
    self.manager.close()  # a fresh manager: it lists the steps without the ones set aside
    self.manager = ckpt.make_manager(self.workdir, keep=self.config.train.keep_checkpoints)
    self.data.seek(start)
    changes = self.data.changes_from(saved or {})
    if changes and not self.config.train.allow_data_change:
      raise ConfigError(f"checkpoint {start} was trained on other data ({'; '.join(changes)}): resuming would change the "
                        "data order; rerun with the saved values, or add --config.train.allow_data_change=true")
    if changes:
      _say(f"the input changed since checkpoint {start} ({'; '.join(changes)}); it continues at global step {start} "
           "of the new stream (train.allow_data_change)")
    _say(f"resumed from {ckpt.checkpoint_dir(self.workdir)} at step {start} on {self.mesh.size} devices")
    return state, start


def _loop(run: _Run, state, start, hooks, writer, bar, preempt, stop_at_step, batch_callback, profiler):
  tc = run.config.train
  last_good = run.manager.latest_step()
  wait = wait_each_launch(run.mesh)
  feed = DeviceFeed(run.data, run.mesh, run.config.data.device_prefetch, start, tc.num_steps, batch_callback,
                    config=run.config)
  window = Window(tc.batch_size, run.mesh.size)
  step_fn, step = run.step_fn, start
  try:
    while step < tc.num_steps:
      batch = feed.next()
      if step == start and jax.process_count() > 1:
        step_fn = step_fn.lower(state, batch).compile()  # every process compiles, then all meet
        distributed.barrier(f"sora_jax_first_step_{start}")
      profiler.before_step(step)
      state, metrics = step_fn(state, batch)
      if wait:  # no second launch in flight on CPU meshes (sora_jax/parallel/inflight.py)
        jax.block_until_ready(metrics)
      step += 1
      window.add(step, metrics, feed.take_wait())
      if (traced := profiler.after_step(step, state)) is not None:
        bar.write(traced)
      bar.update(1)
      stopping = step == stop_at_step or preempt.agreed(step)
      if preempt.workdir_lost:  # before anything more is written there
        raise WorkdirBusy(f"stopped at step {step} without saving: {run.workdir / 'train.lock'} was taken over by "
                          "another run (this one's lease had expired); the workdir is that run's now")
      end = step == tc.num_steps or stopping
      log_now = step % tc.log_every == 0 or end
      hook_now = bool(hooks) and ((tc.quick_eval_every and step % tc.quick_eval_every == 0) or step == tc.num_steps)
      save_now = (tc.checkpoint_every and step % tc.checkpoint_every == 0) or end
      if not (log_now or hook_now or save_now):
        continue
      window.fetch()  # the finite check of every step since the last fetch, before anything is saved
      record = window.summary() if log_now else {}
      if log_now:
        bar.set_postfix(loss=f"{record['loss']:.4f}", clips_s=f"{record['clips_per_sec']:.1f}")
      if hook_now:
        record.update(_run_hooks(hooks, step, state, bar))
      if record:
        writer.write(step, record)
      if save_now:
        ckpt.save(run.manager, step, state, run.data.position(step), run.config, force=True)
        last_good = step
      if stopping:
        _say(f"stopping at step {step} ({preempt.reason or 'stop_at_step'}); "
             "checkpoint saved, rerun the same command to resume")
        break
  except DivergedError as e:
    run.manager.wait_until_finished()
    raise DivergedError(
        f"{e}; stopped without saving it. Last good checkpoint: step {last_good} in "
        f"{ckpt.checkpoint_dir(run.workdir)}. Lower optimizer.learning_rate or set optimizer.clip_norm, "
        "then rerun to resume from it") from None
  finally:
    feed.close()  # stops the reading thread
  return state


def _run_hooks(hooks, step: int, state, bar) -> dict:
  variables = state.inference_variables()
  record = {}
  for hook in hooks:
    record.update({k: float(v) for k, v in hook(step, variables).items()})
  if record:  # whatever the hooks measured (the quick eval: knn_accuracy), by name
    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(record.items())))
  return record


def _progress(total: int, initial: int):
  return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
              disable=jax.process_index() != 0, mininterval=1.0)
