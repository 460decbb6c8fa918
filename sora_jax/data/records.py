"""Random access to the records of TFRecord files, local or in a bucket, without scanning them twice."""

from __future__ import annotations

import struct

import numpy as np
import tensorflow as tf

from sora_jax import storage
from sora_jax.errors import DataError


class RecordIndex:
  """Random access to the records of TFRecord files (uncompressed), in file order, local or in a
  bucket (`storage.RangeReader`). `lengths[i]`, when given (prepare's receipts hold them), are the
  record sizes of file i, so the file need not be scanned: a bucket's shards are indexed from
  dataset_info.json alone."""

  def __init__(self, paths, lengths=None):
    self.reader = storage.RangeReader(paths)
    self.paths = self.reader.paths
    offsets, sizes, files = [], [], []
    for fi, path in enumerate(self.paths):
      known = lengths[fi] if lengths is not None else None
      found = _record_sizes(self.reader, fi) if known is None else [(n, o) for n, o in _offsets(known)]
      sizes += [n for n, _ in found]
      offsets += [o for _, o in found]
      files += [fi] * len(found)
    self.offsets = np.asarray(offsets, np.int64)
    self.lengths = np.asarray(sizes, np.int64)
    self.files = np.asarray(files, np.int32)

  def __len__(self) -> int:
    return len(self.offsets)

  def read(self, index) -> bytes:
    i = int(index)
    return self.reader.read(int(self.files[i]), int(self.offsets[i]), int(self.lengths[i]))

  def tf_read(self, index):
    """tf.string [] record `index`, usable inside tf.data.map (reads release the GIL)."""
    out = tf.numpy_function(lambda i: np.bytes_(self.read(i)), [index], tf.string, stateful=False)
    return tf.reshape(out, [])


def _offsets(lengths):
  """(length, data offset) of each record of a TFRecord file whose record sizes are `lengths`."""
  pos = 0
  for n in lengths:
    yield int(n), pos + 12
    pos += 12 + int(n) + 4


def _record_sizes(reader, fi) -> list[tuple[int, int]]:
  """(length, data offset) of each record of file `fi`, read from the record headers."""
  path, size, out, pos = reader.paths[fi], reader.size(fi), [], 0
  with reader.open(fi) as f:
    while pos < size:
      head = f.read(12)
      if len(head) < 12:
        raise DataError(f"TFRecord file {path!r} is truncated at byte {pos}; prepare it again")
      (n,) = struct.unpack("<Q", head[:8])
      out.append((n, pos + 12))
      pos += 12 + n + 4
      f.seek(pos)
  return out
