"""Where files live: a local path or a URL (`gs://bucket/run`, `s3://...`), one layer for every stage.

`path(p)` is an `etils.epath.Path` (orbax takes it as is) served by fsspec, whatever the
environment says (see `EPATH_USE_TF` below); a URL stays a URL (`pathlib` would turn
`gs://b/run` into a local folder `gs:/b/run`). Byte ranges of a file (the records of prepared
shards) are read with `os.pread` for local files and with ranged reads through fsspec elsewhere
(gcsfs for gs://), never through `tf.io.gfile`, so that the same code reads a bucket, a GCS
emulator on localhost, or a local disk.

Object stores have no rename and no append: `move` copies and deletes, `Appender` rewrites the
object, `Staged` writes a local file and uploads it whole when it is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading

import fsspec
from etils import epath
from etils.epath import gpath as epath_gpath

from sora_jax.errors import SoraError

# etils sends every gs:// / s3:// path operation (orbax's, TFDS's, ours) through TensorFlow's own
# file system whenever TensorFlow is installed, which it always is here, unless EPATH_USE_TF says
# otherwise: a second storage stack, with its own retries and credentials, that no test exercises.
# The choice is made here instead, for the whole process: fsspec (gcsfs for gs://), the stack
# every read and write of ours goes through and the tests run against a GCS emulator. etils caches
# its answer on first use, so the cache is cleared too (code that touched a gs:// path before
# importing sora_jax would otherwise keep TF's).
os.environ["EPATH_USE_TF"] = "false"
_etils_tf_check = getattr(epath_gpath, "_is_tf_installed", None)
if hasattr(_etils_tf_check, "cache_clear"):
  _etils_tf_check.cache_clear()

# The package that serves each common scheme (the one-line error names it).
_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs", "hf": "huggingface_hub"}


class StorageError(SoraError):
  """A path that cannot be read or written (unknown scheme, missing filesystem package)."""


def scheme(p) -> str:
  """'gs' for 'gs://b/x', '' for a local path."""
  text = os.fspath(p) if not isinstance(p, str) else p
  return text.split("://", 1)[0] if "://" in text else ""


def is_local(p) -> bool:
  return scheme(p) in ("", "file")


def path(p) -> epath.Path:
  """The epath.Path of a user's path: `~` expanded and made absolute for local paths, a URL kept."""
  text = os.fspath(p)
  if is_local(text):
    text = text[len("file://"):] if text.startswith("file://") else text
    return epath.Path(os.path.abspath(os.path.expanduser(text)))
  filesystem(text)  # one-line error for a scheme nothing serves
  return epath.Path(text)


_FS: dict = {}
_FS_LOCK = threading.Lock()


def filesystem(url: str):
  """The fsspec filesystem of a URL (cached per scheme); a one-line StorageError naming the package
  to install when the scheme has none."""
  proto = scheme(url)
  with _FS_LOCK:
    if proto not in _FS:
      try:
        _FS[proto] = fsspec.filesystem(proto)
      except ImportError as e:
        pkg = _PACKAGES.get(proto)
        if pkg is None:
          raise StorageError(f"{url!r}: {proto}:// paths need a filesystem package ({e})") from e
        raise StorageError(f"{url!r}: {proto}:// paths need {pkg}; install it (pip install {pkg})") from e
      except ValueError as e:
        raise StorageError(f"{url!r}: no filesystem knows the scheme {proto}:// (fsspec: {e}); use a local "
                           "path or gs://") from e
    return _FS[proto]


class RangeReader:
  """`read(file_index, offset, length) -> bytes` over a list of files; safe from many threads."""

  def __init__(self, paths):
    self.paths = [os.fspath(p) for p in paths]
    self.local = [is_local(p) for p in self.paths]
    self._fds: dict = {}
    self._lock = threading.Lock()

  def size(self, i: int) -> int:
    if self.local[i]:
      return os.path.getsize(self.paths[i])
    return int(filesystem(self.paths[i]).size(self.paths[i]))

  def open(self, i: int):
    """A buffered binary file object for scanning file `i` from its start."""
    if self.local[i]:
      return open(self.paths[i], "rb")
    return filesystem(self.paths[i]).open(self.paths[i], "rb", block_size=8 << 20, cache_type="readahead")

  def read(self, i: int, offset: int, length: int) -> bytes:
    if self.local[i]:
      return os.pread(self._fd(i), length, offset)
    return filesystem(self.paths[i]).cat_file(self.paths[i], start=offset, end=offset + length)

  def _fd(self, i: int) -> int:
    fd = self._fds.get(i)
    if fd is None:
      with self._lock:
        fd = self._fds.get(i)
        if fd is None:
          fd = self._fds[i] = os.open(self.paths[i], os.O_RDONLY)
    return fd


def write_text(p, text: str) -> None:
  """Replaces a file's text whole: a local file through a temporary file + rename (a reader never
  sees half a file); an object in one upload (objects are replaced atomically)."""
  write_bytes(p, text.encode())


def write_bytes(p, data: bytes) -> None:
  """`write_text` for bytes."""
  p = path(p)
  if is_local(p):
    tmp = p.parent / f".{p.name}.tmp-{os.getpid()}"
    try:
      tmp.write_bytes(data)
      os.replace(tmp, p)
    except BaseException:
      tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind
      raise
  else:
    p.write_bytes(data)


def move(src, dst) -> None:
  """Renames a file or a folder; on an object store, copies then deletes (there is no rename)."""
  src, dst = path(src), path(dst)
  if is_local(src):
    os.replace(src, dst)
    return
  fs = filesystem(os.fspath(src))
  fs.copy(os.fspath(src), os.fspath(dst), recursive=True)
  fs.rm(os.fspath(src), recursive=True)


def rmtree(p) -> None:
  p = path(p)
  if is_local(p):
    shutil.rmtree(p, ignore_errors=True)
  elif p.exists():
    filesystem(os.fspath(p)).rm(os.fspath(p), recursive=True)


def upload(local_file, dest) -> None:
  """Copies a local file to `dest` (a local path or a URL)."""
  dest = path(dest)
  if is_local(dest):
    if os.path.abspath(local_file) != os.fspath(dest):
      shutil.copyfile(local_file, dest)
  else:
    filesystem(os.fspath(dest)).put_file(os.fspath(local_file), os.fspath(dest))


class Staged:
  """A local file to write (`.name`), put at `dest` whole by `commit()`: for writers that need a real
  file (tf.io.TFRecordWriter, TensorBoard, the profiler) when `dest` is in a bucket. For a local
  `dest` it is written in place under a temporary name and renamed."""

  def __init__(self, dest, suffix: str = ""):
    self.dest = path(dest)
    if is_local(self.dest):
      self.name = os.fspath(self.dest.parent / f".{self.dest.name}.tmp-{os.getpid()}")
    else:
      fd, self.name = tempfile.mkstemp(prefix="sora_jax_", suffix=suffix)
      os.close(fd)

  def commit(self) -> None:
    if is_local(self.dest):
      os.replace(self.name, self.dest)
    else:
      upload(self.name, self.dest)
      os.unlink(self.name)

  def discard(self) -> None:
    if os.path.exists(self.name):
      os.unlink(self.name)


class Appender:
  """Appends lines to a text file: a local file is appended to; an object (no append in object
  stores) is rewritten whole at each `flush` from the lines kept here."""

  def __init__(self, p, initial: str = ""):
    self.path = path(p)
    self.local = is_local(self.path)
    if self.local:
      write_text(self.path, initial)
      self._f = open(self.path, "a")
    else:
      self._text = [initial]
      self.flush()

  def write(self, line: str) -> None:
    if self.local:
      self._f.write(line)
    else:
      self._text.append(line)

  def flush(self) -> None:
    if self.local:
      self._f.flush()
    else:
      self.path.write_text("".join(self._text))

  def close(self) -> None:
    self.flush()
    if self.local:
      self._f.close()


def read_text_or_none(p) -> str | None:
  """A file's text; None if it is absent or cannot be read."""
  try:
    return path(p).read_text()
  except (FileNotFoundError, OSError):
    return None


def read_bytes_many(paths) -> list[bytes]:
  """Whole files, in order; on an object store in concurrent requests (one round trip, not N)."""
  paths = [path(p) for p in paths]
  if not paths or is_local(paths[0]):
    return [p.read_bytes() for p in paths]
  fs = filesystem(os.fspath(paths[0]))
  got = fs.cat([os.fspath(p) for p in paths])
  return [got[os.fspath(p)] if os.fspath(p) in got else got[fs._strip_protocol(os.fspath(p))] for p in paths]


def remove(p) -> None:
  """Deletes a file if it is there (best effort: what is left is never listed anywhere)."""
  with contextlib.suppress(FileNotFoundError, OSError):
    path(p).unlink(missing_ok=True)
