"""PyTorch checkpoints (`torch.save`'s zip format) read and written without PyTorch, running no code from the file.

A `.pth` file is a zip: `<name>/data.pkl` pickles the state_dict, whose tensors point at raw storages
`<name>/data/<key>`. A pickle can call any importable function while it loads, so `load` unpickles
with an allow-list that only rebuilds what a state_dict is made of (ordered dicts, tensors, their
storages) from our own functions: any other global (`os.system`, `builtins.open`, a class from the
file's author) is refused before anything runs, like `torch.load(weights_only=True)`. Tensors come
back as numpy arrays (bfloat16 through ml_dtypes). `save` writes the same format (the pickle
opcodes written out here, since the globals it names belong to PyTorch): `torch.load` reads it.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

from sora_jax import storage
from sora_jax.errors import CheckpointError

# torch.<Name>Storage -> numpy dtype (the storage types torch.save names in its persistent ids)
STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
            "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_STORAGE_OF = {np.dtype(v): k for k, v in STORAGES.items()}


class _Storage(str):
  """The allowed stand-in for a `torch.<Name>Storage` global: its name, which gives the dtype."""


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) -> a
  view of the storage (`_state_dict` copies it once every storage is filled)."""
  itemsize = storage.dtype.itemsize
  if offset < 0 or any(s < 0 for s in (*size, *stride)):
    raise ValueError(f"negative offset/size/stride {offset}/{size}/{stride}")
  end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
  if end > storage.size:
    raise ValueError(f"a tensor of size {tuple(size)} reads past its storage of {storage.size} elements")
  return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), tuple(s * itemsize for s in stride))


def _rebuild_parameter(data, *unused):
  return data


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): _Storage(name) for name in STORAGES}}


class _Unpickler(pickle.Unpickler):
  """Rebuilds only what `_ALLOWED` names; `storage(key, dtype, numel)` gives a persistent id's array."""

  def __init__(self, stream, where: str, storage=None):
    super().__init__(stream)
    self.where, self.storage, self.storages = where, storage, {}

  def find_class(self, module, name):
    found = _ALLOWED.get((module, name)) if self.storage else None
    if found is None:
      raise CheckpointError(
          f"{self.where}: refused: its pickle asks for {module}.{name}, which a state_dict of tensors never needs "
          "(nothing from the file was run); load only checkpoints you trust, or re-save the model's state_dict alone")
    return found

  def persistent_load(self, pid):
    # ('storage', torch.<Type>Storage, key, location, numel) and, in the pre-1.6 format, a 6th item: a view
    if not (self.storage and isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _Storage) and isinstance(pid[4], int) and pid[4] >= 0):
      raise CheckpointError(f"{self.where}: refused: an unknown persistent id {str(pid)[:80]!r} in its pickle")
    kind, key, numel = pid[1], str(pid[2]), pid[4]
    if key not in self.storages:
      self.storages[key] = self.storage(key, np.dtype(STORAGES[kind]), numel)
    view = pid[5] if len(pid) == 6 else None
    if view is not None:  # (view key, offset, size) into the root storage
      _, offset, size = view
      return self.storages[key][offset:offset + size]
    return self.storages[key]


def load(path) -> dict[str, np.ndarray]:
  """A state_dict saved by `torch.save` -> {name: numpy array}, running no code from the file.

  Reads the zip format (PyTorch >= 1.6) and the older single-stream format. Raises CheckpointError
  (one line) for a file that is neither, a pickle that names anything but tensors, or damaged data."""
  return loads(read_bytes(path), str(path))


def read_bytes(path) -> bytes:
  """A weights file's bytes (local or a URL); CheckpointError (one line) when it cannot be read."""
  try:
    return storage.path(path).read_bytes()
  except OSError as e:
    raise CheckpointError(f"cannot read {path} ({type(e).__name__}: {e.strerror or e})") from e


def loads(data: bytes, where: str = "checkpoint") -> dict[str, np.ndarray]:
  """`load` of a file's bytes; `where` names it in errors."""
  try:
    if zipfile.is_zipfile(io.BytesIO(data)):
      obj = _load_zip(data, where)
    elif data[:2] == pickle.PROTO + b"\x02":
      obj = _load_legacy(data, where)
    else:
      raise CheckpointError(f"{where} is not a PyTorch checkpoint (torch.save's zip or older format); save it "
                            "with `torch.save(model.state_dict(), F)`")
  except CheckpointError:
    raise
  except Exception as e:  # noqa: BLE001 - a damaged pickle raises many kinds; the caller gets one
    raise CheckpointError(f"{where}: damaged PyTorch checkpoint ({type(e).__name__}: {str(e)[:160]})") from e
  return _state_dict(obj, where)


def _load_zip(data: bytes, where: str):
  with zipfile.ZipFile(io.BytesIO(data)) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise CheckpointError(f"{where}: a zip without one <name>/data.pkl is not a PyTorch checkpoint")
    prefix = pickles[0].split("/")[0]
    big = f"{prefix}/byteorder" in archive.namelist() and archive.read(f"{prefix}/byteorder").strip() == b"big"

    def read(key, dtype, numel):
      raw = archive.read(f"{prefix}/data/{key}")
      return np.frombuffer(raw, dtype.newbyteorder(">" if big else "<"), count=numel).astype(dtype)

    return _Unpickler(io.BytesIO(archive.read(f"{prefix}/data.pkl")), where, read).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_legacy(data: bytes, where: str):
  """The pre-1.6 format, one stream: pickles of the magic number, the protocol version and system
  info, then the object's pickle, the list of storage keys, and each storage's raw data in that
  order (an int64 element count, then the elements, little-endian)."""
  stream = io.BytesIO(data)
  plain = lambda: _Unpickler(stream, where).load()  # noqa: E731 - no globals allowed at all
  if plain() != _LEGACY_MAGIC:
    raise CheckpointError(f"{where} is a pickle, not a PyTorch checkpoint; save `model.state_dict()` with torch.save")
  plain(), plain()  # protocol version, system info
  empty = {}

  def allocate(key, dtype, numel):
    empty[key] = np.empty(numel, dtype)
    return empty[key]

  obj = _Unpickler(stream, where, allocate).load()
  for key in plain():
    buffer = empty[str(key)]
    count = int.from_bytes(stream.read(8), "little")
    raw = stream.read(count * buffer.dtype.itemsize)
    if count != buffer.size or len(raw) != buffer.nbytes:
      raise CheckpointError(f"{where}: storage {key} holds {count} elements where its tensors need {buffer.size} "
                            "(a truncated or damaged file)")
    buffer[:] = np.frombuffer(raw, buffer.dtype.newbyteorder("<"))
  return obj


def _state_dict(obj, where: str) -> dict[str, np.ndarray]:
  """The {name: array} in a loaded pickle: a state_dict, or one inside a training checkpoint's dict
  ('state_dict' | 'model' | 'model_state_dict'), without DataParallel's 'module.' prefix."""
  if isinstance(obj, dict) and not all(isinstance(v, np.ndarray) for v in obj.values()):
    inner = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), dict)]
    if len(inner) != 1:
      raise CheckpointError(f"{where} holds a {type(obj).__name__} with keys {sorted(map(str, obj))[:8]}, not a "
                            "state_dict of tensors; save `model.state_dict()`")
    obj = obj[inner[0]]
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise CheckpointError(f"{where} does not hold a state_dict of tensors; save `model.state_dict()`")
  if obj and all(str(k).startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return {str(k): np.array(v) for k, v in obj.items()}  # copies that own their memory, C-ordered


class _Writer:
  """Protocol-2 pickle opcodes for an OrderedDict of tensors, as torch.save writes it."""

  def __init__(self):
    self.out = io.BytesIO()
    self.out.write(pickle.PROTO + b"\x02")

  def op(self, code: bytes, payload: bytes = b""):
    self.out.write(code + payload)

  def global_(self, module: str, name: str):
    self.op(pickle.GLOBAL, f"{module}\n{name}\n".encode())

  def str_(self, s: str):
    b = s.encode()
    self.op(pickle.BINUNICODE, struct.pack("<I", len(b)) + b)

  def int_(self, i: int):
    self.op(pickle.BININT, struct.pack("<i", i)) if -2**31 <= i < 2**31 else self.op(
        pickle.LONG1, bytes([8]) + struct.pack("<q", i))

  def ints(self, values):
    self.op(pickle.MARK)
    for v in values:
      self.int_(int(v))
    self.op(pickle.TUPLE)

  def ordered_dict(self):
    self.global_("collections", "OrderedDict")
    self.op(pickle.EMPTY_TUPLE)
    self.op(pickle.REDUCE)


def save(path, arrays: dict[str, np.ndarray], *, name: str = "archive") -> None:
  """Writes {name: array} as a PyTorch state_dict file (`torch.load(path, weights_only=True)` reads it)."""
  w, blobs = _Writer(), {}
  w.ordered_dict()
  w.op(pickle.MARK)
  for i, (key, value) in enumerate(arrays.items()):
    a = np.asarray(value)
    a = a if a.flags.c_contiguous else a.copy(order="C")  # (np.ascontiguousarray makes a 0-d array 1-d)
    if a.dtype not in _STORAGE_OF:
      raise CheckpointError(f"{key}: dtype {a.dtype} has no PyTorch storage type")
    blobs[str(i)] = a.astype(a.dtype.newbyteorder("<")).tobytes()
    w.str_(key)
    w.global_("torch._utils", "_rebuild_tensor_v2")
    w.op(pickle.MARK)
    w.op(pickle.MARK)  # the persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel)
    w.str_("storage")
    w.global_("torch", _STORAGE_OF[a.dtype])
    w.str_(str(i))
    w.str_("cpu")
    w.int_(a.size)
    w.op(pickle.TUPLE)
    w.op(pickle.BINPERSID)
    w.int_(0)
    w.ints(a.shape)
    w.ints([s // a.itemsize for s in a.strides] if a.size else [1] * a.ndim)
    w.op(pickle.NEWFALSE)
    w.ordered_dict()  # backward hooks
    w.op(pickle.TUPLE)
    w.op(pickle.REDUCE)
  w.op(pickle.SETITEMS)
  w.op(pickle.STOP)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
    z.writestr(f"{name}/data.pkl", w.out.getvalue())
    z.writestr(f"{name}/byteorder", "little")
    for key, blob in blobs.items():
      z.writestr(f"{name}/data/{key}", blob)
    z.writestr(f"{name}/version", "3\n")
  storage.write_bytes(path, buffer.getvalue())
