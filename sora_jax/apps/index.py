"""The embedding index: an append-only directory (local or in a bucket) that search streams from.

Layout of an index directory:
  index.json        metadata: dim, dtype, count, shards, checkpoint step, config hash, workdir
  emb-00000.npy     embeddings float32|float16 [n_shard, E], L2-normalised rows (one per append)
  txt-00000.npy     with `text_dim` (a run with a text head): the same rows in the space shared with
                    text, [n_shard, E_text], searched by sentences (`search --text`)
  items.jsonl       one JSON object per row, in row order: id, path, label, label_name, caption

Appends write a new shard, then the item lines, then `index.json` (atomically, last), so a crash
mid-append leaves the previous index intact: rows past `count` in items.jsonl are ignored. Each
append holds an exclusive lock on `index.lock` and re-reads the metadata first, so concurrent
writers (two `embed` runs into one index) both land, one append after the other. Rows that are
not finite are refused.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from sora_jax import storage
from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize

INDEX_VERSION = 1
_META = "index.json"
_ITEMS = "items.jsonl"
_DTYPES = ("float32", "float16")


def _locked(directory):
  """An exclusive lock on the index for one append (other writers wait)."""
  return storage.exclusive(directory / "index.lock")


def _rows(x, dim: int, what: str) -> np.ndarray:
  """float32 [n, dim] with finite rows, else DataError."""
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or x.shape[1] != dim:
    raise DataError(f"{what} of shape {x.shape} do not fit index dim {dim}")
  bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
  if bad.size:
    raise DataError(f"{what} of rows {bad[:10].tolist()} are not finite (NaN or Inf); drop those rows")
  return x


def _write_json_atomic(path, obj: Any) -> None:
  storage.write_text(path, json.dumps(obj, indent=2, sort_keys=True))


class Index:
  """Embeddings plus per-row records, stored and read; `sora_jax.apps.search` searches them.

  Rows are L2-normalised, so inner product = cosine similarity.
  """

  def __init__(self, directory, meta: dict, items: list[dict]):
    self.directory = storage.path(directory)
    self.meta = meta
    self.items = items
    self._shards: list[np.ndarray] | None = None
    self._lookup: dict | None = None

  # ---- creation and loading -------------------------------------------------------------------

  @classmethod
  def create(cls, directory, *, dim: int, dtype: str = "float32", step: int | None = None,
             config_hash: str | None = None, workdir: str | None = None,
             label_names: Sequence[str] | None = None, extra: dict | None = None,
             text_dim: int | None = None) -> "Index":
    """Makes an empty index directory (fails if one already exists there)."""
    directory = storage.path(directory)
    if dtype not in _DTYPES:
      raise DataError(f"index dtype {dtype!r} is not supported; choose one of {', '.join(_DTYPES)}")
    if (directory / _META).exists():
      raise DataError(f"an index already exists at {str(directory)!r}; use Index.load or another --out")
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"version": INDEX_VERSION, "dim": int(dim), "dtype": dtype, "count": 0, "shards": [],
            "step": step, "config_hash": config_hash, "workdir": workdir,
            "label_names": list(label_names) if label_names else None, "extra": extra or {},
            "text_dim": int(text_dim) if text_dim else None}
    (directory / _ITEMS).write_text("")
    _write_json_atomic(directory / _META, meta)
    return cls(directory, meta, [])

  @classmethod
  def load(cls, directory) -> "Index":
    """Opens an index directory written by `create`/`append` (embeddings are memory-mapped)."""
    directory = storage.path(directory)
    meta_path = directory / _META
    if not meta_path.is_file():
      raise DataError(f"no index at {str(directory)!r} (missing {_META}); build one with `sora-jax embed --out`")
    try:
      meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
      raise DataError(f"index metadata {str(meta_path)!r} is corrupt ({e}); rebuild the index") from e
    if meta.get("version") != INDEX_VERSION:
      raise DataError(f"index {str(directory)!r} has version {meta.get('version')!r}; this code reads {INDEX_VERSION}")
    items = []
    with (directory / _ITEMS).open() as f:
      for line in f:
        if len(items) == meta["count"]:
          break  # lines of an append that did not finish
        items.append(json.loads(line))
    if len(items) != meta["count"]:
      raise DataError(f"index {str(directory)!r} lists {meta['count']} rows but {_ITEMS} has {len(items)}; rebuild it")
    return cls(directory, meta, items)

  @classmethod
  def open_or_create(cls, directory, **kwargs) -> "Index":
    directory = storage.path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):  # two writers starting together: one creates, the other opens
      if (directory / _META).exists():
        return cls.load(directory)
      return cls.create(directory, **kwargs)

  # ---- writing ----------------------------------------------------------------------------------

  def append(self, embeddings: np.ndarray, records: Sequence[dict], *, label_names: Sequence[str] | None = None,
             aligned: np.ndarray | None = None) -> None:
    """Adds rows: embeddings [n, E] (normalised here) and one record dict per row; `aligned`
    [n, text_dim] (normalised here) exactly when the index has a `text_dim`.

    A record has `path` (str or None) and optionally `id` (int; default: the row number),
    `label` (int, -1 unknown), `label_name`, `caption`. Named labels are numbered by the index,
    under its lock: a name it knows keeps its number, a new one (from `label_names` first, in
    order, then from the records, sorted) is numbered after the others, so writers adding
    different new names at once all land with consistent numbers.
    """
    embeddings = _rows(embeddings, self.dim, "embeddings")
    if len(records) != len(embeddings):
      raise DataError(f"{len(embeddings)} embeddings but {len(records)} records")
    if (aligned is None) != (self.text_dim is None):
      raise DataError(f"index {str(self.directory)!r} " + ("stores text-aligned rows: pass `aligned`" if aligned is None
                      else "has no text_dim: it was built by a run without a text head"))
    if aligned is not None:
      aligned = l2_normalize(_rows(aligned, self.text_dim, "aligned rows"))
      if len(aligned) != len(embeddings):
        raise DataError(f"{len(embeddings)} embeddings but {len(aligned)} aligned rows")
    if not len(embeddings):
      return
    with _locked(self.directory):
      self._append_locked(l2_normalize(embeddings), records, label_names, aligned)

  def _append_locked(self, embeddings: np.ndarray, records, label_names, aligned=None) -> None:
    latest = Index.load(self.directory)  # another writer may have appended since we read it
    self.meta, self.items, self._lookup = latest.meta, latest.items, None
    start = self.count
    known = list(self.meta.get("label_names") or [])
    names = known + [n for n in dict.fromkeys(label_names or ()) if n not in known]
    names += sorted({str(r["label_name"]) for r in records if r.get("label_name")} - set(names))
    number = {n: i for i, n in enumerate(names)}
    items = []
    for i, r in enumerate(records):
      label = number[str(r["label_name"])] if r.get("label_name") else int(r.get("label", -1))
      item = {"id": int(r.get("id", start + i)), "path": r.get("path"), "label": label}
      for key in ("label_name", "caption"):
        if r.get(key) is not None:
          item[key] = r[key]
      items.append(item)
    name = f"emb-{len(self.meta['shards']):05d}.npy"
    shard = {"file": name, "count": len(items)}
    for file, rows in ((name, embeddings), (f"txt-{len(self.meta['shards']):05d}.npy", aligned)):
      if rows is not None:
        with (self.directory / file).open("wb") as f:
          np.save(f, rows.astype(self.meta["dtype"]))
    if aligned is not None:
      shard["text_file"] = f"txt-{len(self.meta['shards']):05d}.npy"
    lines = "".join(json.dumps(item) + "\n" for item in items)
    if storage.is_local(self.directory):
      with open(self.directory / _ITEMS, "rb+") as f:
        # Drop lines of an earlier unfinished append before adding ours.
        for _ in range(start):
          f.readline()
        f.truncate(f.tell())
        f.seek(0, os.SEEK_END)
        f.write(lines.encode("utf-8"))
    else:  # an object has no append: rewritten whole
      kept = (self.directory / _ITEMS).read_text().splitlines(keepends=True)[:start]
      (self.directory / _ITEMS).write_text("".join(kept) + lines)
    meta = dict(self.meta, count=start + len(items), shards=self.meta["shards"] + [shard])
    if names != known:
      meta["label_names"] = names
    _write_json_atomic(self.directory / _META, meta)
    self.meta = meta
    self.items.extend(items)
    self._shards = None

  # ---- reading ----------------------------------------------------------------------------------

  @property
  def dim(self) -> int:
    return int(self.meta["dim"])

  @property
  def text_dim(self) -> int | None:
    """Width of the text-aligned rows; None: the index has none (its run had no text head)."""
    return self.meta.get("text_dim")

  @property
  def count(self) -> int:
    return int(self.meta["count"])

  def __len__(self) -> int:
    return self.count

  @property
  def step(self):
    return self.meta.get("step")

  @property
  def config_hash(self):
    return self.meta.get("config_hash")

  @property
  def paths(self) -> list:
    return [it.get("path") for it in self.items]

  @property
  def ids(self) -> np.ndarray:
    return np.asarray([it["id"] for it in self.items], np.int64)

  @property
  def labels(self) -> np.ndarray:
    return np.asarray([it.get("label", -1) for it in self.items], np.int64)

  def shards(self, space: str = "video") -> list[np.ndarray]:
    """The embedding shards (`space='text'`: the text-aligned ones), memory-mapped (read lazily from
    disk when a block is used); an index in a bucket is read into memory."""
    if space == "text":
      if self.text_dim is None:
        raise DataError(f"index {str(self.directory)!r} has no text-aligned embeddings; embed with a run trained "
                        "with a text head (sora-jax train --config text), then search it with --text")
      return [self._load_shard(self.directory / s["text_file"], (s["count"], self.text_dim))
              for s in self.meta["shards"]]
    if self._shards is None:
      self._shards = [self._load_shard(self.directory / s["file"], (s["count"], self.dim)) for s in self.meta["shards"]]
    return self._shards

  @staticmethod
  def _load_shard(p, shape) -> np.ndarray:
    try:
      if storage.is_local(p):
        rows = np.load(p, mmap_mode="r")  # never pickles (allow_pickle=False)
      else:
        with p.open("rb") as f:
          rows = np.load(f)
    except (OSError, ValueError) as e:
      raise DataError(f"index shard {str(p)!r} cannot be read ({e}); rebuild the index") from None
    if rows.shape != tuple(shape):
      raise DataError(f"index shard {str(p)!r} holds an array of shape {rows.shape} where {_META} says "
                      f"{tuple(shape)}; the index is damaged: rebuild it")
    return rows

  def embeddings(self) -> np.ndarray:
    """All embeddings in memory, float32 [N, E] (small indexes; search streams instead)."""
    if not self.count:
      return np.zeros((0, self.dim), np.float32)
    return np.concatenate([np.asarray(s, np.float32) for s in self.shards()])

  def embeddings_of(self, rows) -> np.ndarray:
    """The embeddings of some rows, float32 [len(rows), E], read from the shards without loading all."""
    rows = np.asarray(rows, np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= self.count):
      raise DataError(f"rows {rows.tolist()} out of range for an index of {self.count}")
    starts = np.cumsum([0] + [s["count"] for s in self.meta["shards"]])
    shard_of = np.searchsorted(starts, rows, side="right") - 1
    shards = self.shards()
    out = np.empty((len(rows), self.dim), np.float32)
    for i, (r, s) in enumerate(zip(rows, shard_of)):
      out[i] = shards[s][r - starts[s]]
    return out

  def _add_lookup(self, row: int, item: dict) -> None:
    self._lookup.setdefault(("id", item["id"]), row)
    if item.get("path"):
      self._lookup.setdefault(("path", item["path"]), row)
      self._lookup.setdefault(("path", os.path.abspath(item["path"])), row)

  def row_of(self, key) -> int | None:
    """Row number of an item given its id (int or digit string) or its path; None if absent."""
    if self._lookup is None:
      self._lookup = {}
      for row, it in enumerate(self.items):
        self._add_lookup(row, it)
    if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.lstrip("-").isdigit()):
      row = self._lookup.get(("id", int(key)))
      if row is not None:
        return row
    if isinstance(key, (str, os.PathLike)):
      key = str(key)
      return self._lookup.get(("path", key), self._lookup.get(("path", os.path.abspath(key))))
    return None

  def has_path(self, path) -> bool:
    return self.row_of(os.path.abspath(str(path))) is not None if path is not None else False
