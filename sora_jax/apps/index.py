"""The embedding index: an append-only directory (local or in a bucket) that search streams from.

Layout of an index directory:
  index.json               metadata: dim, dtype, count, the shards in row order, checkpoint step,
                           config hash, workdir; the one file every append rewrites
  emb-00000-<token>.npy    embeddings float32|float16 [n_shard, E], L2-normalised rows (one per append)
  txt-00000-<token>.npy    with `text_dim` (a run with a text head): the same rows in the space shared
                           with text, [n_shard, E_text], searched by sentences (`search --text`)
  items-00000-<token>.jsonl  one JSON object per row of the shard, in row order: id, path, label,
                           label_name, caption
  items.jsonl              (version 1 indexes) the items of the shards listed before version 2

An append writes its own files under names no other writer uses (the token is drawn per append),
then commits `index.json` last, and only if it is still the version the append read (on gs://, an
upload conditional on the object's generation): a crash mid-append leaves the previous index
intact, and two writers whose lock failed them (a lock deleted by hand while its holder ran) cannot
commit an index whose rows and paths disagree; the later one reads the new index and appends again.
Appends also hold an exclusive lock on `index.lock`, so concurrent writers (two `embed` runs into one
index) normally queue. Rows that are not finite are refused; a row whose path the index already
holds (another writer added it first) is dropped under the lock.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Sequence

import numpy as np

from sora_jax import atomic, storage
from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize

INDEX_VERSION = 2
_READS = (1, 2)  # versions this code reads: 1 kept every item in one items.jsonl
_META = "index.json"
_ITEMS = "items.jsonl"
COMMIT_ATTEMPTS = 5  # an append whose index.json another writer replaced reads it again and retries
_DTYPES = ("float32", "float16")


def _locked(directory):
  """An exclusive lock on the index for one append (other writers wait)."""
  return atomic.exclusive(directory / "index.lock")


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


def _read_items(directory, meta: dict) -> list[dict]:
  """The items of every shard `meta` lists, in row order: those of version 1 shards from the first
  lines of items.jsonl (lines past them are an append that never committed), then each later shard's
  own items file (read together: one round trip on an object store)."""
  items: list[dict] = []
  legacy = sum(s["count"] for s in meta["shards"] if "items" not in s)
  if legacy:
    with (directory / _ITEMS).open() as f:
      for line in f:
        if len(items) == legacy:
          break
        items.append(json.loads(line))
    if len(items) != legacy:
      raise DataError(f"index {str(directory)!r} lists {legacy} rows but {_ITEMS} has {len(items)}; rebuild it")
  own = [s for s in meta["shards"] if "items" in s]
  for s, raw in zip(own, storage.read_bytes_many([directory / s["items"] for s in own])):
    lines = raw.decode("utf-8").splitlines()
    if len(lines) != s["count"]:
      raise DataError(f"index file {str(directory / s['items'])!r} holds {len(lines)} rows where {_META} says "
                      f"{s['count']}; the index is damaged: rebuild it")
    items.extend(json.loads(line) for line in lines)
  return items


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
    _write_json_atomic(directory / _META, meta)
    return cls(directory, meta, [])

  @classmethod
  def load(cls, directory) -> "Index":
    """Opens an index directory written by `create`/`append` (embeddings are memory-mapped)."""
    directory = storage.path(directory)
    return cls._parse(directory, storage.read_text_or_none(directory / _META))

  @classmethod
  def _parse(cls, directory, text: str | None) -> "Index":
    meta_path = directory / _META
    if text is None:
      raise DataError(f"no index at {str(directory)!r} (missing {_META}); build one with `sora-jax embed --out`")
    try:
      meta = json.loads(text)
    except json.JSONDecodeError as e:
      raise DataError(f"index metadata {str(meta_path)!r} is corrupt ({e}); rebuild the index") from e
    if meta.get("version") not in _READS:
      raise DataError(f"index {str(directory)!r} has version {meta.get('version')!r}; this code reads "
                      f"{', '.join(map(str, _READS))}")
    return cls(directory, meta, _read_items(directory, meta))

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
             aligned: np.ndarray | None = None) -> int:
    """Adds rows: embeddings [n, E] (normalised here) and one record dict per row; `aligned`
    [n, text_dim] (normalised here) exactly when the index has a `text_dim`. -> the number of rows
    added: a record whose path the index holds by then (another writer's) is dropped.

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
      return 0
    with _locked(self.directory):
      return self._append_locked(l2_normalize(embeddings), records, label_names, aligned)

  def _append_locked(self, embeddings: np.ndarray, records, label_names, aligned=None) -> int:
    for _ in range(COMMIT_ATTEMPTS):
      text, version = atomic.read_versioned(self.directory / _META)
      latest = Index._parse(self.directory, text)  # another writer may have appended since we read it
      self.meta, self.items, self._lookup, self._shards = latest.meta, latest.items, None, None
      new = [i for i, r in enumerate(records) if not self.has_path(r.get("path"))]  # theirs first: dropped
      if not new:
        return 0
      meta, items, files = self._stage([records[i] for i in new], label_names, embeddings[new],
                                       None if aligned is None else aligned[new])
      if atomic.replace_if_version(self.directory / _META, json.dumps(meta, indent=2, sort_keys=True), version):
        self.meta = meta
        self.items.extend(items)
        return len(items)
      for f in files:  # another writer committed first: ours were never listed
        storage.remove(self.directory / f)
    raise DataError(f"index {str(self.directory)!r} changed under each of {COMMIT_ATTEMPTS} appends; another "
                    "writer is appending without holding index.lock: stop it and retry")

  def _stage(self, records, label_names, embeddings, aligned) -> tuple[dict, list[dict], list[str]]:
    """Writes the files of one append under names of its own; -> (the metadata that lists them, the
    items, the file names). Named labels are numbered against the list in the metadata read."""
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
    stem = f"{len(self.meta['shards']):05d}-{uuid.uuid4().hex[:12]}"
    shard = {"file": f"emb-{stem}.npy", "count": len(items), "items": f"items-{stem}.jsonl"}
    if aligned is not None:
      shard["text_file"] = f"txt-{stem}.npy"
    for key, rows in (("file", embeddings), ("text_file", aligned)):
      if rows is not None:
        with (self.directory / shard[key]).open("wb") as f:
          np.save(f, rows.astype(self.meta["dtype"]))
    storage.write_text(self.directory / shard["items"], "".join(json.dumps(item) + "\n" for item in items))
    meta = dict(self.meta, version=INDEX_VERSION, count=start + len(items), shards=self.meta["shards"] + [shard],
                commit=stem)
    if names != known:
      meta["label_names"] = names
    return meta, items, [shard[k] for k in ("file", "text_file", "items") if k in shard]

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
