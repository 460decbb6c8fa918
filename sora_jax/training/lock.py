"""One training run per workdir: `WORKDIR/train.lock`, created atomically by process 0.

A second `train` on the same workdir (the same command twice, or another learning rate) would
interleave two runs' checkpoints and metrics; it stops instead with a one-line error naming the
holder. The lock is a lease: its holder rewrites its expiry every `HEARTBEAT_S`, and a lock is
taken over when it is stale by one of three rules, the same locally and on gs://: its lease has
expired (a run on a preempted VM, whatever host it comes back as), its process is gone (same
host, pid not running), or it names this very process but another token (a container restarted
under the same hostname as the same pid). Tokens decide, never pids alone: the holder releases
(and refreshes) only the lock that still holds its own token, so a run that lost its lease never
deletes its successor's. Creation and release go through `atomic.create_exclusive` and
`atomic.remove_if_holding` (O_EXCL locally; conditional create and delete on gs://). On start the
holder also removes orbax's temporary directories left by a save that never finished.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import jax

from sora_jax import atomic, storage
from sora_jax.errors import SoraError

NAME = "train.lock"
LEASE_S = 300.0  # a lock whose expiry has passed is stale (5 heartbeats missed)
HEARTBEAT_S = 60.0


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

  def __init__(self, workdir, say=print, *, lease_s: float | None = None, heartbeat_s: float | None = None):
    self.path, self.say, self.held = storage.path(workdir) / NAME, say, False
    self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    self.lease_s = LEASE_S if lease_s is None else lease_s
    self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    self.text, self._stop, self._beat = "", threading.Event(), None
    self.lost = threading.Event()  # set when another run took the lock over: the loop stops without saving

  def _record(self) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "token": self.token, "expires": round(time.time() + self.lease_s, 3)})

  def __enter__(self):
    if jax.process_index() != 0:
      return self
    for _ in range(3):
      self.text = self._record()
      if atomic.create_exclusive(self.path, self.text):
        self.held = True
        break
      holder, raw = self._holder()
      reason = self._stale(holder)
      if reason is None:
        raise WorkdirBusy(
            f"workdir {self.path.parent} is in use by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(since {holder.get('since', '?')}); stop that run or use another --workdir (if it is not running, "
            f"delete {self.path}, or wait for its lease to expire)") from None
      self.say(f"taking over {self.path}: {reason}")
      atomic.remove_if_holding(self.path, raw)  # only the stale lock read; a newer one stays
    else:
      raise WorkdirBusy(f"could not take {self.path}: other runs kept taking it; retry") from None
    self._beat = threading.Thread(target=self._heartbeat, name="sora-train-lock", daemon=True)
    self._beat.start()
    for tmp in (self.path.parent / "checkpoints").glob("*.orbax-checkpoint-tmp*"):
      self.say(f"removing {tmp.name}: a save that never finished")
      storage.rmtree(tmp)
    return self

  def _stale(self, holder: dict) -> str | None:
    """Why `holder` (the lock's record) no longer holds the workdir, or None while it does."""
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(holder.get("expires"), (int, float)) and time.time() > holder["expires"]:
      return f"its lease expired {time.time() - holder['expires']:.0f} s ago (pid {pid} on host {host})"
    if host == socket.gethostname() and isinstance(pid, int):
      if pid == os.getpid() and holder.get("token") != self.token:
        return f"it names this process (pid {pid}) from an earlier start"
      if not _alive(pid):
        return f"its run (pid {pid}) is gone"
    return None

  def _holder(self) -> tuple[dict, str | None]:
    try:
      raw = self.path.read_text()
      holder = json.loads(raw)
      return (holder if isinstance(holder, dict) else {}), raw
    except (OSError, ValueError):
      return {}, None

  def _heartbeat(self) -> None:
    """Moves the lease's expiry forward every heartbeat_s, as long as the lock is still ours."""
    while not self._stop.wait(self.heartbeat_s):
      try:
        if self._holder()[1] != self.text:
          self.lost.set()
          self.say(f"{self.path} is no longer this run's (taken over after its lease expired); "
                   "another run may be writing this workdir")
          return
        text = self._record()
        storage.write_text(self.path, text)
        self.text = text
      except OSError as e:  # a full disk or a storage hiccup: the next beat tries again
        self.say(f"could not refresh {self.path} ({e}); retrying in {self.heartbeat_s:.0f} s")

  def __exit__(self, *exc):
    if self._beat is not None:
      self._stop.set()
      self._beat.join()
    if self.held:
      atomic.remove_if_holding(self.path, self.text)  # never a lock another run has taken over since
      self.held = False
