"""One training run per workdir: `WORKDIR/train.lock`, created atomically by process 0.

A second `train` on the same workdir (the same command twice, or another learning rate) would
interleave two runs' checkpoints and metrics; it stops instead with a one-line error naming the
holder. A lock left by a process that is gone (same host, pid not running) is taken over. On start
the holder also removes orbax's temporary directories left by a save that never finished. On gs://
the lock is a conditional create (`storage.create_exclusive`) and its release a delete conditional
on the generation we wrote.
"""

from __future__ import annotations

import json
import os
import socket
import time

import jax

from sora_jax import storage
from sora_jax.errors import SoraError

NAME = "train.lock"


class WorkdirBusy(SoraError):
  """Another training run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:

  def __init__(self, workdir, say=print):
    self.path, self.say, self.held = storage.path(workdir) / NAME, say, False
    self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"

  def __enter__(self):
    if jax.process_index() != 0:
      return self
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
          "token": self.token}
    for _ in range(2):
      try:
        self._create(me)
      except FileExistsError:
        holder = self._holder()
        if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
          self.say(f"taking over {self.path}: its run (pid {holder['pid']}) is gone")
          self.path.unlink(missing_ok=True)
          continue
        raise WorkdirBusy(
            f"workdir {self.path.parent} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('since', '?')}); stop that run or use another --workdir (if it is not running, "
            f"delete {self.path})") from None
      self.held = True
      break
    for tmp in (self.path.parent / "checkpoints").glob("*.orbax-checkpoint-tmp*"):
      self.say(f"removing {tmp.name}: a save that never finished")
      storage.rmtree(tmp)
    return self

  def _create(self, me: dict) -> None:
    """Creates the lock file or raises FileExistsError (`storage.create_exclusive`: atomic locally
    and on gs://)."""
    self.text = json.dumps(me)
    if not storage.create_exclusive(self.path, self.text):
      raise FileExistsError(os.fspath(self.path))

  def _holder(self) -> dict:
    try:
      holder = json.loads(self.path.read_text())
      return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
      return {}

  def __exit__(self, *exc):
    if self.held:
      storage.remove_if_holding(self.path, self.text)  # never a lock another run has taken over since
      self.held = False
