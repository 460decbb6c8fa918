"""Project exceptions: one type a CLI can print in a single line, with the fix in the message."""

import errno
import os
import re


class SoraError(Exception):
  """An error a user can act on; the message names the bad value and the fix."""


class ConfigError(SoraError):
  """A config value is missing, of the wrong type, or out of range."""


class DataError(SoraError):
  """Input data is missing, empty, corrupt or of the wrong shape."""


class CheckpointError(SoraError):
  """A checkpoint is missing, incomplete or does not fit the model."""


class Stopped(SoraError):
  """Work stopped before its end (SIGTERM, Ctrl-C); what it had done is saved, and the same command resumes it."""


# errno -> what went wrong, for file accesses that fail for a reason outside the program (a full or
# read-only disk, permissions).
_UNWRITABLE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EFBIG: "file too large for the file system", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def unwritable(exc: BaseException) -> OSError | None:
  """The OSError behind `exc` (itself, its cause or context, or in a group) that says the disk is
  full or not writable; None when the failure is something else."""
  seen, todo = set(), [exc]
  while todo:
    e = todo.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _UNWRITABLE:
      return e
    # tensorstore (orbax's writer) raises ValueError('... local file "F" ... [os_error_code=\'28\']')
    code = re.search(r"os_error_code='?(\d+)", str(e)) if isinstance(e, ValueError) else None
    if code and int(code.group(1)) in _UNWRITABLE:
      name = re.search(r'file "([^"]+)"', str(e))
      return OSError(int(code.group(1)), os.strerror(int(code.group(1))), name and name.group(1))
    todo += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
  return None


def unwritable_message(err: OSError, where=None, kept: str = "what was written before is intact") -> str:
  """One line for an access the file system refused: what, where, and how to go on."""
  place = err.filename or where
  if err.errno in (errno.EACCES, errno.EPERM):  # also raised by reads: say what happened, not what was attempted
    return f"{place or 'a file'}: {_UNWRITABLE[err.errno]}; fix its permissions or use another path; {kept}"
  fix = "free some space or write elsewhere" if err.errno in _FULL else "write elsewhere"
  return (f"cannot write{f' {place}' if place else ''}: {_UNWRITABLE[err.errno]}; {fix} "
          f"(another --workdir/--out); {kept}")
