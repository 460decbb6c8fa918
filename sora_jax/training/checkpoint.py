"""Orbax checkpoints under `<workdir>/checkpoints`: the train state, the data position and the config.

Each checkpoint step holds three items: `state` (TrainState, restored onto whatever mesh the
current run has: written on N devices, restored on M), `data` (the input stream's position,
`TrainInput.position(step)`: the same on every process, since the batch order depends on the seed
and the global step alone), `config` (the resolved config). Saves are asynchronous (the arrays
are copied off the devices before `save` returns, the files are written in the background) and
atomic (orbax writes to a temporary directory and renames it when complete, or on an object store
marks it complete, so a run killed in the middle of a save leaves the previous checkpoints
intact). The workdir may be a URL (gs://bucket/run): orbax writes through tensorstore.
"""

from __future__ import annotations

import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint._src.serialization import jax_array_handlers

from sora_jax import storage
from sora_jax.parallel import distributed
from sora_jax.config import migrate, to_dict, validate
from sora_jax.errors import CheckpointError

ITEMS = ("state", "data", "config")


def checkpoint_dir(workdir) -> epath.Path:
  """`<workdir>/checkpoints`, local or a URL (orbax takes the epath as is)."""
  return storage.path(workdir) / "checkpoints"


def _serial_saves_on_cpu() -> None:
  """On CPU, orbax's replica-parallel saving slices every replicated array per replica, which
  compiles one tiny program per leaf (seconds on the first save); one replica writes instead."""
  if jax.default_backend() == "cpu":
    ocp.type_handlers.register_type_handler(
        jax.Array, jax_array_handlers.ArrayHandler(use_replica_parallel=False), override=True)


def make_manager(workdir, *, keep: int = 3, async_save: bool = True) -> ocp.CheckpointManager:
  _serial_saves_on_cpu()
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=_handlers(), options=options)


def _handlers() -> dict:
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
          "config": ocp.JsonCheckpointHandler()}


def saved_config(d: dict) -> ml_collections.ConfigDict:
  """A checkpoint's saved config, brought up to the current schema and validated (it enters here)."""
  return validate(migrate(d))


def save(manager: ocp.CheckpointManager, step: int, state, data_state: dict, config, *, force: bool = False) -> bool:
  """Starts an asynchronous save of `state` at `step` (all processes call it). `data_state`: the
  input position, JSON-able and the same on every process."""
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(to_dict(config))), force=force)


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None):
  """Restores (state, the saved input position or None, step) onto `abstract_state`'s shardings."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"no checkpoint in {manager.directory}")
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds; the caller gets one
    raise CheckpointError(f"checkpoint {manager.directory}/{step} is damaged or does not fit this "
                          f"model/config ({_reason(e)})") from e
  data = out["data"] or None
  if data is not None and "processes" in data:  # written by an earlier version: one entry per process
    data = data["processes"][0]
  return out["state"], data, step


def _reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:160] if text else ''}"


RESTORE_ATTEMPTS = 3  # reads of one checkpoint before it is called damaged (storage errors can be transient)
RESTORE_BACKOFF_S = 1.0  # the wait before the second read; doubled before each next one


def restore_newest_intact(manager: ocp.CheckpointManager, abstract_state, say) -> tuple:
  """`restore` of the newest checkpoint that restores on every process.

  Every process tries the same steps (process 0's listing), newest first; a failed read is
  retried (`RESTORE_ATTEMPTS`) before the step counts as damaged, and all processes then agree
  (an allgather) whether each restored it, so a shard one host cannot read makes every host move
  on, never some of them. Each newer step that fails anywhere is reported through `say` in one
  line and moved aside (by process 0; never deleted) to `<step>.damaged`, or `<step>.damaged-2`,
  ... when that name is taken, so the resumed run can save that step again. Raises the newest
  one's CheckpointError if none restores."""
  reader = _process_local_reader(manager)
  errors = []
  for step in _agreed_steps(manager):
    out, error = _restore_retrying(reader, abstract_state, step)
    if not _everywhere(error is None):
      errors.append((step, error or CheckpointError(f"checkpoint {manager.directory}/{step} could not be read on "
                                                    "another process")))
      continue
    _set_aside(epath.Path(manager.directory), [(bad, e, step) for bad, e in errors], say)
    _close_reader(reader, manager)
    return out
  _close_reader(reader, manager)
  if errors:
    raise errors[0][1]
  raise CheckpointError(f"no checkpoint in {manager.directory}")


def _process_local_reader(manager: ocp.CheckpointManager) -> ocp.CheckpointManager:
  """A read-only manager of the same directory whose restores wait for no other process: orbax
  ends each restore with a barrier of every process, which a process whose read failed never
  reaches (the others would wait there for minutes). Processes agree through `_everywhere`."""
  if jax.process_count() == 1:
    return manager
  me = jax.process_index()
  options = ocp.CheckpointManagerOptions(read_only=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"sora_jax_restore_{me}"))
  return ocp.CheckpointManager(manager.directory, item_handlers=_handlers(), options=options)


def _agreed_steps(manager) -> list[int]:
  """Process 0's steps, newest first, on every process (a host whose listing lags tries the same
  steps and fails the ones it cannot read, which the others then skip too)."""
  steps = np.asarray(sorted(manager.all_steps(), reverse=True), np.int64)
  if jax.process_count() == 1:
    return [int(s) for s in steps]
  n = int(multihost_utils.broadcast_one_to_all(np.int64(len(steps))))
  mine = np.zeros(n, np.int64)
  mine[:min(n, len(steps))] = steps[:n]
  return [int(s) for s in multihost_utils.broadcast_one_to_all(mine)]


def _everywhere(ok: bool) -> bool:
  """True when `ok` holds on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _restore_retrying(manager, abstract_state, step: int):
  """-> ((state, data, step), None), or (None, the last CheckpointError) after RESTORE_ATTEMPTS reads."""
  error = None
  for attempt in range(RESTORE_ATTEMPTS):
    if attempt:
      time.sleep(RESTORE_BACKOFF_S * 2 ** (attempt - 1))
    try:
      return restore(manager, abstract_state, step), None
    except CheckpointError as e:
      error = e
  return None, error


def _set_aside(directory: epath.Path, damaged: list, say) -> None:
  """Moves each damaged `directory/step` to the first free `step.damaged[-k]` (process 0 moves,
  after every process has named the places: all report the same names)."""
  places = []
  for bad, e, step in damaged:
    aside, k = directory / f"{bad}.damaged", 1
    while aside.exists():
      k += 1
      aside = directory / f"{bad}.damaged-{k}"
    places.append(aside)
    say(f"checkpoint {bad} is damaged ({_reason(e.__cause__ or e)}); resuming from {step} (moved to {aside})")
  if damaged:
    distributed.barrier(f"sora_jax_checkpoints_named_aside_{damaged[-1][2]}")
  if jax.process_index() == 0:
    for (bad, _, _), aside in zip(damaged, places):
      storage.move(directory / str(bad), aside)
  if damaged:
    distributed.barrier(f"sora_jax_checkpoints_set_aside_{damaged[-1][2]}")


def _close_reader(reader, manager) -> None:
  if reader is not manager:
    reader.close()


def load_for_inference(workdir, step: int | None = None):
  """-> (config, variables, step): the encoder's variables of the latest (or given) checkpoint.

  `variables` is `{'params': ..., **other collections}` on the first local device, usable as
  `sora_jax.models.build_encoder(config).apply(variables, video)`, whatever mesh wrote it.
  Raises CheckpointError naming the workdir when there is no checkpoint.
  """
  config, variables, _, step = load_run(workdir, step)
  return config, variables, step


def load_run(workdir, step: int | None = None):
  """-> (config, variables, objective_params, step): `load_for_inference` plus the objective's own
  parameters (e.g. video_text's text projection), read from the same checkpoint."""
  manager, candidates = _candidates(workdir, step)
  for i, s in enumerate(candidates):
    try:
      config, variables, objective_params = _read_for_inference(manager, s)
    except CheckpointError as e:
      if i + 1 == len(candidates):
        raise
      print(f"checkpoint {s} in {str(workdir)!r} is damaged ({_reason(e.__cause__ or e)}); using checkpoint {candidates[i + 1]}",
            file=sys.stderr)
      continue
    return config, variables, objective_params, int(s)


def saved_run_config(workdir, step: int | None = None) -> tuple[dict, int]:
  """-> (the config a run's checkpoint saved, as it was written (not brought up to this schema),
  its step: `step`, or the latest) without reading the checkpoint's arrays."""
  manager, candidates = _candidates(workdir, step)
  try:
    out = manager.restore(candidates[0], args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001 - as in _read_for_inference
    raise CheckpointError(f"checkpoint {candidates[0]} in {str(workdir)!r} cannot be read ({_reason(e)})") from e
  return dict(out["config"]), int(candidates[0])


def _candidates(workdir, step: int | None) -> tuple[ocp.CheckpointManager, list[int]]:
  """-> (a reader of the run's checkpoints, [step] or all its steps newest first); CheckpointError
  when there are none or not that one."""
  if not checkpoint_dir(workdir).is_dir():
    raise CheckpointError(f"no checkpoints in workdir {str(workdir)!r}; train first "
                          f"(python train.py --config configs/default.py --workdir {workdir})")
  manager = make_manager(workdir, async_save=False)
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no checkpoints in workdir {str(workdir)!r}; train first")
  if step is not None and step not in steps:
    raise CheckpointError(f"workdir {str(workdir)!r} has no checkpoint at step {step}; it has {sorted(steps)}")
  return manager, [step] if step is not None else sorted(steps, reverse=True)


def _read_for_inference(manager, step: int):
  try:
    meta = manager.item_metadata(step)["state"]
    if meta is None:
      raise ValueError("no readable state")
    # The whole state (with the optimizer moments) onto one local device: the saved tree's shapes
    # and dtypes, so no model or optimizer has to be rebuilt and any writing mesh works.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), dict(meta))
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
    state = out["state"]
    variables = {"params": state["params"]["encoder"], **dict(state["model_state"])}
  except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds; the caller gets one
    raise CheckpointError(f"checkpoint {step} in {str(manager.directory)!r} cannot be read ({_reason(e)})") from e
  return saved_config(out["config"]), variables, dict(state["params"]["objective"])
