"""Writes that must not race, on a local disk and on object stores: an exclusive create, a delete
and a replace each conditional on what the caller saw (on gs://, GCS preconditions on the object's
generation), and the short critical-section lock built on them (`index.lock`). `train.lock`'s lease
(sora_jax/training/lock.py) rests on the same create and delete."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from urllib.parse import quote

from sora_jax import storage

SETTLE_S = 1.0  # an object store's lock: pause between writing the lock object and reading it back


@contextlib.contextmanager
def exclusive(lock_path, *, timeout_s: float = 600.0, poll_s: float = 0.5):
  """Holds an exclusive lock for a short critical section (other holders wait, up to `timeout_s`).
  A local file: `fcntl.flock`, released by the kernel if the holder dies. An object: a lock object
  holding our token, made by `create_exclusive` (on gs://, a conditional create) and deleted by
  `remove_if_holding`; a writer that cannot create it waits. A lock object left by a holder that
  died is reported after `timeout_s` with the object to delete."""
  lock_path = storage.path(lock_path)
  if storage.is_local(lock_path):
    with open(lock_path, "a") as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(f, fcntl.LOCK_UN)
    return
  token = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{time.time_ns()}"
  deadline = time.monotonic() + timeout_s
  while not create_exclusive(lock_path, token):
    if time.monotonic() > deadline:
      raise storage.StorageError(f"{lock_path} has been held for over {timeout_s:.0f} s; if no writer is "
                                 "running, delete it and retry")
    time.sleep(poll_s)
  try:
    yield
  finally:
    remove_if_holding(lock_path, token)


def create_exclusive(p, text: str) -> bool:
  """Creates file `p` holding `text` unless it exists; True if this call created it. Local: O_EXCL.
  gs://: a conditional create (`ifGenerationMatch=0`): GCS refuses it (412) when the object exists,
  and a refusal is read back, since a retried request whose first attempt landed is refused too
  (the object then holds our own `text`, which is unique to the caller). Other object stores
  (no conditional create through fsspec): written when absent and read back after `SETTLE_S`."""
  p = storage.path(p)
  if storage.is_local(p):
    try:
      fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(text)
    return True
  if storage.scheme(p) in ("gs", "gcs"):
    try:
      storage.filesystem(os.fspath(p)).pipe_file(os.fspath(p), text.encode(), mode="create")
    except FileExistsError:
      return storage.read_text_or_none(p) == text
    return True
  if p.exists():
    return False
  p.write_text(text)
  time.sleep(SETTLE_S)
  return storage.read_text_or_none(p) == text


def remove_if_holding(p, text: str) -> bool:
  """Deletes file `p` if it holds `text` (a lock we created); True if it did. gs://: the delete is
  conditional on the generation that held `text`, so an object replaced since by another writer
  (a lock taken over) is never deleted."""
  p = storage.path(p)
  if storage.scheme(p) not in ("gs", "gcs"):
    if storage.read_text_or_none(p) != text:
      return False
    p.unlink(missing_ok=True)
    return True
  fs, url = storage.filesystem(os.fspath(p)), os.fspath(p)
  try:
    generation = fs.info(url, refresh=True).get("generation")
  except FileNotFoundError:
    return False
  if storage.read_text_or_none(p) != text or generation is None:
    return False
  bucket, key, _ = fs.split_path(url)
  try:
    fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(generation))
  except (FileNotFoundError, FileExistsError):  # gone, or replaced since (412)
    return False
  fs.invalidate_cache(url)
  return True


def _is_gs(p) -> bool:
  return storage.scheme(p) in ("gs", "gcs")


def read_versioned(p) -> tuple[str | None, str | None]:
  """(text, version) of file `p`, the version to hand to `replace_if_version`; (None, None) when
  absent. gs://: the object's generation, asked before and after the read until it holds still.
  Elsewhere: the text itself."""
  p = storage.path(p)
  if not _is_gs(p):
    text = storage.read_text_or_none(p)
    return text, text
  fs, url = storage.filesystem(os.fspath(p)), os.fspath(p)
  for _ in range(5):
    try:
      before = fs.info(url, refresh=True).get("generation")
      text = fs.cat_file(url).decode("utf-8")
      after = fs.info(url, refresh=True).get("generation")
    except FileNotFoundError:
      return None, None
    if before == after and before is not None:
      return text, str(before)
  raise storage.StorageError(f"{url} changed under each of 5 reads; another writer is rewriting it: retry later")


def replace_if_version(p, text: str, version: str | None) -> bool:
  """Replaces file `p` with `text` if it still has `version` (from `read_versioned`); True if this
  call wrote it. gs://: an upload conditional on the generation (`ifGenerationMatch`), refused (412)
  when another writer replaced the object since; a refusal is read back, since a retried request
  whose first attempt landed is refused too (`text` must be unique to the caller). Elsewhere: the
  text is compared, then replaced, exactly only under a lock that holds (a local one always does)."""
  p = storage.path(p)
  if not _is_gs(p):
    if storage.read_text_or_none(p) != version:
      return False
    storage.write_text(p, text)
    return True
  fs, url = storage.filesystem(os.fspath(p)), os.fspath(p)
  bucket, key, _ = fs.split_path(url)
  try:
    fs.call("POST", f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o", uploadType="media", name=key,
            ifGenerationMatch=str(version if version is not None else 0), data=text.encode("utf-8"),
            headers={"Content-Type": "application/octet-stream"}, json_out=True)
  except FileExistsError:  # 412
    fs.invalidate_cache(url)
    return storage.read_text_or_none(p) == text
  fs.invalidate_cache(url)
  return True
