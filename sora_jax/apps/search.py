"""Search an `Index`: exact (sora_jax.parallel.topk, sharded over the devices) or approximate (faiss IVF).

A query is embeddings [Q, E], or one video file / indexed id / indexed path: an indexed item's
stored embedding, or a file embedded afresh by the run that built the index; or a sentence
(`text=`), which the frozen text tower and the run's text projection put in the space the
index's text-aligned rows live in.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from typing import Sequence

import numpy as np

from sora_jax import storage
from sora_jax.apps.embed_index import get_embedder
from sora_jax.errors import CheckpointError, DataError
from sora_jax.linalg import l2_normalize
from sora_jax.parallel.topk import ExactSearch, blocks
from sora_jax.training.captions import text_vectors

# Index -> {space: ((count, block_size, mesh), ExactSearch)}: blocks stay on the devices between searches.
_SEARCHERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def query_vector(index, query, *, workdir=None) -> tuple[np.ndarray, dict]:
  """-> (embedding [E], item dict) of an indexed id or path, or of a video file embedded afresh by
  the run that built the index (or `workdir`, which must be that same model). DataError when the
  file cannot be decoded, CheckpointError when the run does not match."""
  row = index.row_of(query)
  if row is not None:
    return index.embeddings_of([row])[0], dict(index.items[row], row=row)
  if not os.path.exists(str(query)):
    raise DataError(f"query {str(query)!r} is neither an id or path in index {str(index.directory)!r} "
                    "nor an existing file")
  return _index_run(index, workdir, str(query)).embed_file(query)["embedding"], {"path": os.path.abspath(str(query))}


def text_vector(index, text: str, *, workdir=None) -> np.ndarray:
  """A sentence -> [E_text] in the space of the index's text-aligned rows (the run that built it)."""
  if not str(text).strip():
    raise DataError("empty --text query: describe the video, e.g. 'a red square moves left'")
  index.shards("text")  # DataError saying how to build one when the index has no text-aligned rows
  embedder = _index_run(index, workdir, f"the text {text!r}")
  return text_vectors(embedder.config, embedder.objective_params, [text], cache=False)[0]


def _index_run(index, workdir, what: str):
  """The Embedder of the run that built `index` (or `workdir`, which must be that same model)."""
  workdir = workdir or index.meta.get("workdir")
  if not workdir:
    raise CheckpointError(f"index {str(index.directory)!r} records no run; pass --workdir RUN to embed {what}")
  embedder = get_embedder(workdir, step=index.step, num_clips=(index.meta.get("extra") or {}).get("num_clips"))
  if index.config_hash and embedder.config_hash != index.config_hash:
    raise CheckpointError(f"run {str(workdir)!r} (config {embedder.config_hash}) is not the one that built index "
                          f"{str(index.directory)!r} (config {index.config_hash}); pass the index's --workdir")
  return embedder


def search_index(index, queries=None, k: int = 10, *, approximate: bool = False, block_size: int = 65536,
           mesh=None, nprobe: int = 8, workdir=None, text: str | None = None) -> list[list[dict]]:
  """Nearest rows of `index` by cosine similarity, per query a list of k dicts (rank, score, row + the item).

  queries: embeddings [Q, E] or [E], or one video file / indexed id / indexed path (then the
  result is a one-element list, like `search_index(index, query_vector(index, q)[0])`).
  text: a sentence instead of `queries`, searched against the index's text-aligned rows (exact).
  """
  space = "text" if text is not None else "video"
  if text is not None:
    if approximate:
      raise DataError("--approx searches the video embeddings; a --text query is searched exactly")
    queries = text_vector(index, text, workdir=workdir)
  elif isinstance(queries, (str, os.PathLike, int)):
    queries = query_vector(index, queries, workdir=workdir)[0]
  dim = index.text_dim if text is not None else index.dim
  q = np.asarray(queries, np.float32)
  if q.ndim == 1:
    q = q[None]
  if q.ndim != 2 or q.shape[1] != dim:
    raise DataError(f"queries of shape {q.shape} do not fit index dim {dim}")
  q = l2_normalize(q)
  if approximate:
    scores, rows = IVFIndex.load_or_build(index, nprobe=nprobe).search(q, k)
  else:
    key = (index.count, block_size, mesh)
    searchers = _SEARCHERS.setdefault(index, {})
    if space not in searchers or searchers[space][0] != key:
      searchers[space] = (key, ExactSearch(index.shards(space), block_size=block_size, mesh=mesh))
    scores, rows = searchers[space][1].search(q, k)
  results = []
  for qs, qr in zip(scores, rows):
    results.append([dict(index.items[int(r)], rank=rank, score=float(s), row=int(r))
                    for rank, (s, r) in enumerate(zip(qs, qr), 1) if r >= 0])
  return results


def overlap_with_exact(approx_rows: np.ndarray, exact_rows: np.ndarray) -> float:
  """Fraction of the exact top-k rows that the approximate top-k also returns (mean over queries):
  how much an approximate search loses, not a retrieval figure (that is evaluation.retrieval.recall_at_k)."""
  hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx_rows, exact_rows)]
  return float(np.mean(hits)) if hits else 0.0


recall_at_k = overlap_with_exact  # the name before 2026-12-03, kept for one release


def _faiss():
  try:
    import faiss
  except ImportError as e:
    raise DataError("approximate search needs faiss-cpu; install it with `pip install 'sora-jax[faiss]'`") from e
  return faiss


class IVFIndex:
  """Approximate inner-product search: faiss IndexIVFFlat (k-means cells, `nprobe` cells probed)."""

  FILE = "ivf.faiss"

  def __init__(self, index, nprobe: int = 8):
    self.index = index
    self.nprobe = nprobe
    self.index.nprobe = nprobe

  @classmethod
  def build(cls, index, *, nlist: int | None = None, nprobe: int = 8, train_size: int = 100_000,
            seed: int = 0) -> "IVFIndex":
    """Trains the cells on a sample and adds every row. index: [N, E] or a list of shards."""
    faiss = _faiss()
    shards = [index] if isinstance(index, np.ndarray) else list(index)
    total = sum(len(s) for s in shards)
    if total == 0:
      raise DataError("cannot build an IVF index over an empty index")
    dim = shards[0].shape[1]
    nlist = nlist or int(max(1, min(4 * np.sqrt(total), total // 39)))
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(total, size=min(train_size, total), replace=False))
    sample = _gather_rows(shards, sample_rows)
    sample = np.ascontiguousarray(sample[np.isfinite(sample).all(axis=1)])  # rows that are not finite: left out
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(sample)
    for offset, block in blocks(shards, 65536):
      block = np.asarray(block, np.float32)
      keep = np.isfinite(block).all(axis=1)
      ivf.add_with_ids(np.ascontiguousarray(block[keep]), (offset + np.flatnonzero(keep)).astype(np.int64))
    return cls(ivf, nprobe)

  def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = self.index.search(np.ascontiguousarray(queries, np.float32), k)
    return scores, rows.astype(np.int64)

  def save(self, path) -> None:
    staged = storage.Staged(path, suffix=".faiss")  # faiss writes local files only
    _faiss().write_index(self.index, staged.name)
    staged.commit()

  @classmethod
  def load(cls, path, nprobe: int = 8) -> "IVFIndex":
    path = storage.path(path)
    if storage.is_local(path):
      return cls(_faiss().read_index(os.fspath(path)), nprobe)
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
      f.write(path.read_bytes())
      f.flush()
      return cls(_faiss().read_index(f.name), nprobe)

  @classmethod
  def load_or_build(cls, index, *, nprobe: int = 8, **build_kwargs) -> "IVFIndex":
    """The IVF index cached in an `Index` directory, rebuilt when rows were appended since."""
    path = storage.path(index.directory) / cls.FILE
    if path.is_file():
      ivf = cls.load(path, nprobe)
      if ivf.index.ntotal == index.count:
        return ivf
    ivf = cls.build(index.shards(), nprobe=nprobe, **build_kwargs)
    ivf.save(path)
    return ivf


def _gather_rows(shards: Sequence[np.ndarray], rows: np.ndarray) -> np.ndarray:
  """Rows (sorted global row numbers) from a list of shards, as float32 [len(rows), E]."""
  out, start = [], 0
  for shard in shards:
    sel = rows[(rows >= start) & (rows < start + len(shard))] - start
    if len(sel):
      out.append(np.asarray(shard[sel], np.float32))
    start += len(shard)
  return np.ascontiguousarray(np.concatenate(out))
