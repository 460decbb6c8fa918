"""Exact top-k by inner product in JAX, streamed in blocks and sharded over devices.

The one nearest-neighbour search of the project: evaluation's kNN and retrieval, `sora-jax search`
and `predict` all use it.

Exact search walks the index in blocks of `block_size` rows read from host memory or disk
(memory-mapped shards), so only a few blocks live on the devices at once, whatever the index
size. Each block's rows are sharded over every device of a mesh; each device scores its rows
against all queries, keeps its local top-k, the per-device top-k are all-gathered (k rows each,
not the scores) and merged into a running top-k. One compiled step serves every block.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sora_jax.errors import DataError
from sora_jax.parallel import inflight
from sora_jax.parallel.mesh import AXES
from sora_jax.parallel.prefetch import prefetch


def default_mesh():
  """The training mesh's axes over all local devices (the rows of each block are split over them)."""
  return jax.sharding.Mesh(np.asarray(jax.local_devices()).reshape(-1, 1), AXES)


def blocks(shards: Sequence[np.ndarray], block_size: int) -> Iterator[tuple[int, np.ndarray]]:
  """Yields (first row, rows [<=block_size, E]) over the concatenation of shards, in order."""
  pieces, have, offset = [], 0, 0
  for shard in shards:
    start = 0
    while start < len(shard):
      take = min(block_size - have, len(shard) - start)
      pieces.append(shard[start:start + take])
      have += take
      start += take
      if have == block_size:
        yield offset, np.concatenate(pieces) if len(pieces) > 1 else np.ascontiguousarray(pieces[0])
        offset += have
        pieces, have = [], 0
  if have:
    yield offset, np.concatenate(pieces) if len(pieces) > 1 else np.ascontiguousarray(pieces[0])


@functools.lru_cache(maxsize=16)
def _make_step(mesh, k: int, block_rows: int):
  """jit step (best_s [Q,k], best_r [Q,k], q [Q,E], block [B,E], iota [B], offset, n_valid) -> best."""
  axes = tuple(mesh.axis_names)
  local_k = min(k, block_rows // mesh.size)

  def local_topk(q, block, iota, offset, n_valid):
    # q [Q, E] replicated; block [B/ndev, E] and iota [B/ndev] are this device's rows.
    s = jnp.matmul(q, block.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)
    s = jnp.where((iota < n_valid)[None, :] & jnp.isfinite(s), s, -jnp.inf)  # a NaN/Inf row ranks last
    ts, ti = jax.lax.top_k(s, local_k)
    tr = iota[ti] + offset
    ts = jax.lax.all_gather(ts, axes, axis=1, tiled=True)  # [Q, ndev * local_k]
    tr = jax.lax.all_gather(tr, axes, axis=1, tiled=True)
    return ts, tr

  sharded = jax.shard_map(local_topk, mesh=mesh, in_specs=(P(), P(axes, None), P(axes), P(), P()),
                          out_specs=(P(), P()), check_vma=False)

  def step(best_s, best_r, q, block, iota, offset, n_valid):
    ts, tr = sharded(q, block, iota, offset, n_valid)
    s = jnp.concatenate([best_s, ts], axis=1)
    r = jnp.concatenate([best_r, tr], axis=1)
    best_s, i = jax.lax.top_k(s, k)
    return best_s, jnp.take_along_axis(r, i, axis=1)

  return jax.jit(step, donate_argnums=(0, 1))


class ExactSearch:
  """Exact top-k over an index, for repeated queries.

  index: array [N, E] or a list of shards (float32/float16; memory-mapped is fine). When the index
  fits in `device_budget` bytes its blocks are put on the devices once (`resident`); otherwise each
  search streams the blocks from host memory/disk, reading the next blocks in a thread while the
  devices score the current one. Device memory when streaming:
  O(block_size * E + query_batch * block_size / ndev) per device.
  """

  def __init__(self, index, *, block_size: int = 65536, mesh=None, device_budget: int = 2 << 30):
    self.shards = [index] if isinstance(index, np.ndarray) else list(index)
    if not self.shards:
      raise DataError("cannot search an index with no shards")
    self.dim = self.shards[0].shape[1] if self.shards[0].ndim == 2 else None
    for s in self.shards:
      if s.ndim != 2 or s.shape[1] != self.dim:
        raise DataError(f"index shard of shape {s.shape} does not match the others' dim {self.dim}")
    self.total = sum(len(s) for s in self.shards)
    self.mesh = mesh or default_mesh()
    ndev = self.mesh.size
    axes = tuple(self.mesh.axis_names)
    # One block shape for the whole index (one compile): a multiple of the device count.
    rows = max(1, min(block_size, self.total))
    self.block_rows = -(-rows // ndev) * ndev
    self.row_sharding = NamedSharding(self.mesh, P(axes, None))
    self.replicated = NamedSharding(self.mesh, P())
    self.iota = jax.device_put(np.arange(self.block_rows, dtype=np.int32), NamedSharding(self.mesh, P(axes)))
    nbytes = sum(s.nbytes for s in self.shards)
    self.resident = None
    if self.total and nbytes <= device_budget:
      self.resident = list(self._device_blocks(self._host_blocks()))

  def _host_blocks(self):
    for offset, block in blocks(self.shards, self.block_rows):
      n = len(block)
      if n < self.block_rows:
        block = np.concatenate([block, np.zeros((self.block_rows - n, block.shape[1]), block.dtype)])
      yield offset, n, block

  def _device_blocks(self, host_blocks):
    # Transfers stay on the calling thread (JAX dispatch); only disk reads run ahead in a thread.
    for offset, n, block in host_blocks:
      yield offset, n, jax.device_put(block, self.row_sharding)

  def search(self, queries: np.ndarray, k: int, *, query_batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """queries float [Q, E] -> scores float32 [Q, k'] (descending), rows int64 [Q, k'], k' = min(k, N)."""
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2:
      raise DataError(f"queries must be [Q, E], got shape {queries.shape}")
    if k < 1:
      raise DataError(f"k={k} must be >= 1")
    if queries.shape[1] != self.dim:
      raise DataError(f"index of dim {self.dim} does not match query dim {queries.shape[1]}")
    k = min(k, self.total)
    nq = len(queries)
    if k == 0 or nq == 0:
      return np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
    step = _make_step(self.mesh, k, self.block_rows)
    chunks = [(i, min(i + query_batch, nq)) for i in range(0, nq, query_batch)]
    q_dev = [jax.device_put(queries[a:b], self.replicated) for a, b in chunks]
    best = [(jax.device_put(np.full((b - a, k), -np.inf, np.float32), self.replicated),
             jax.device_put(np.full((b - a, k), -1, np.int32), self.replicated)) for a, b in chunks]
    blocks = self.resident if self.resident is not None else self._device_blocks(prefetch(self._host_blocks()))
    wait = inflight.wait_each_launch(self.mesh)
    for offset, n, block_dev in blocks:
      for c, qd in enumerate(q_dev):
        best[c] = step(best[c][0], best[c][1], qd, block_dev, self.iota, np.int32(offset), np.int32(n))
        if wait:
          jax.block_until_ready(best[c])
    scores = np.concatenate([np.asarray(s) for s, _ in best])
    rows = np.concatenate([np.asarray(r) for _, r in best]).astype(np.int64)
    return scores, rows


def exact_search(queries: np.ndarray, index, k: int, *, block_size: int = 65536, query_batch: int = 1024,
                 mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """Top-k rows of `index` by inner product with each query, streaming the index once.

  queries: float [Q, E]; index: array [N, E] or a list of such shards (float32/float16, memory-mapped
  is fine: a few blocks at a time are read). Returns scores float32 [Q, k'] (descending) and rows
  int64 [Q, k'] with k' = min(k, N). For repeated searches use `ExactSearch` (resident blocks).
  """
  queries = np.asarray(queries, np.float32)
  if queries.ndim != 2:
    raise DataError(f"queries must be [Q, E], got shape {queries.shape}")
  if k < 1:
    raise DataError(f"k={k} must be >= 1")
  shards = [index] if isinstance(index, np.ndarray) else list(index)
  if sum(len(s) for s in shards) == 0:
    return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
  searcher = ExactSearch(shards, block_size=block_size, mesh=mesh, device_budget=0)
  return searcher.search(queries, k, query_batch=query_batch)


def brute_force(queries: np.ndarray, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The numpy reference: full score matrix, argsort. scores [Q, k], rows [Q, k]."""
  s = np.asarray(queries, np.float64) @ np.asarray(embeddings, np.float64).T
  s = np.where(np.isfinite(s), s, -np.inf)
  k = min(k, s.shape[1])
  rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(s, rows, axis=1).astype(np.float32), rows.astype(np.int64)
