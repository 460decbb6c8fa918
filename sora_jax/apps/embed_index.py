"""Embedding video files (or a dataset split) with a trained run into an `Index`.

Files are decoded with PyAV and cut into clips exactly as evaluation does
(`data.video_io.clips_from_frames`); each video's clips are embedded and averaged
(`evaluation.features.make_embed_fn`: the batch is sharded over every device, parameters placed by the
training's sharding rules: replicated, or FSDP-sharded when the run's config.mesh.fsdp > 1).
Decoding runs in threads ahead of the devices. A second run into the same index skips the files it
already holds and adds the new ones; files that fail to decode are skipped and reported.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from sora_jax import storage
from sora_jax.apps.index import Index
from sora_jax.config import to_dict
from sora_jax.data import pipeline
from sora_jax.data.prepare import class_order
from sora_jax.data.video_io import VIDEO_EXTENSIONS, clips_from_frames, decode_video
from sora_jax.errors import CheckpointError, DataError
from sora_jax.evaluation import features
from sora_jax.parallel import distributed
from sora_jax.training.checkpoint import checkpoint_dir, load_run

DATASET_PREFIX = "dataset:"


def config_hash(config, num_clips: int) -> str:
  """Identifies the embedding function: the run's resolved config plus the clip sampling."""
  blob = json.dumps({"config": to_dict(config), "num_clips": num_clips}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Embedder:
  """A trained encoder ready to embed files: `Embedder(workdir).embed_files(paths)`.

  num_clips: clips per video averaged into one embedding (default: the run's eval.num_clips).
  """

  def __init__(self, workdir, *, step: int | None = None, num_clips: int | None = None, mesh=None,
               decode_threads: int = 2):
    self.workdir = os.fspath(storage.path(workdir))
    self.config, variables, self.objective_params, self.step = load_run(workdir, step)
    self.num_clips = int(num_clips or self.config.eval.num_clips)
    if self.num_clips < 1:
      raise DataError(f"num_clips={num_clips} must be >= 1")
    self.embed_fn = features.make_embed_fn(self.config, mesh)  # default: the run's mesh axes on these devices
    self.mesh = self.embed_fn.mesh
    self.variables = features.place_variables(self.config, variables, self.mesh)
    self.config_hash = config_hash(self.config, self.num_clips)
    self.decode_threads = decode_threads

  @property
  def text_dim(self) -> int | None:
    """Width of the video-text space (the run's text head), None without one."""
    return int(self.config.model.text_embed_dim) or None

  @property
  def has_classifier(self) -> bool:
    return self.config.model.num_classes > 0

  def clips(self, path) -> np.ndarray:
    """One file -> uint8 [C, T, S, S, 3]; raises DataError when it cannot be decoded."""
    d = self.config.data
    frames = decode_video(path, short_side=d.frame_size)
    return clips_from_frames(frames, num_frames=d.num_frames, stride=d.stride, frame_size=d.frame_size,
                             num_clips=self.num_clips)

  def embed_clips(self, video: np.ndarray, boxes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """uint8 [B, C, T, S, S, 3] -> {'embedding': [B, E], 'logits' (log-probs): [B, K] if any,
    'aligned': [B, E_text] if the run has a text head}; with boxes [B, C, A, T, 4] (a run with
    model.actors) also 'actor_pooled' [B, A, D'] and 'actor_embedding' [B, A, E]."""
    b = len(video)
    n = -(-b // self.mesh.size) * self.mesh.size
    pad = lambda x: x if n == b else np.concatenate([x, np.zeros((n - b,) + x.shape[1:], x.dtype)])
    tracks = {} if boxes is None else {"boxes": pad(np.asarray(boxes, np.float32))}
    out = jax.device_get(self.embed_fn(self.variables, pad(video), **tracks))
    keep = ("embedding", "logits", "aligned") + (("actor_pooled", "actor_embedding") if tracks else ())
    return {k: np.asarray(v)[:b] for k, v in out.items() if k in keep}

  def embed_files(self, paths: Sequence, *, batch_size: int = 16, progress: bool = False, on_error=None):
    """Yields (list of indices into `paths`, outputs dict) per batch of files that decoded.

    on_error(index, path, DataError) is called for each file that could not be decoded (default: raise).
    """

    def load(i):
      try:
        return i, self.clips(paths[i]), None
      except DataError as e:
        return i, None, e

    bar = tqdm(total=len(paths), unit="video", desc="embed", disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(self.decode_threads) as pool:
      # Decoding stays one batch ahead of the devices.
      pending = [pool.submit(load, i) for i in range(min(batch_size, len(paths)))]
      nxt = len(pending)
      while pending:
        group, pending = pending[:batch_size], pending[batch_size:]
        pending += [pool.submit(load, i) for i in range(nxt, min(nxt + batch_size, len(paths)))]
        nxt = min(nxt + batch_size, len(paths))
        ok, clips = [], []
        for fut in group:
          i, c, err = fut.result()
          if err is not None:
            if on_error is None:
              raise err
            on_error(i, paths[i], err)
          else:
            ok.append(i)
            clips.append(c)
        if ok:
          yield ok, self.embed_clips(np.stack(clips))
        bar.update(len(group))
    bar.close()

  def embed_file(self, path) -> dict[str, np.ndarray]:
    """One file -> {'embedding': [E], 'logits': [K] if any}."""
    for _, out in self.embed_files([path], batch_size=1):
      return {k: v[0] for k, v in out.items()}
    raise DataError(f"could not embed {str(path)!r}")


_CACHE: list = []


def get_embedder(workdir, *, step: int | None = None, num_clips: int | None = None) -> Embedder:
  """An Embedder, reused within the process for the same run, checkpoint step and clip count
  (loading and compiling once: the CLI's search/predict and the Python API call this)."""
  ckdir = checkpoint_dir(workdir)
  steps = [int(p.name) for p in ckdir.iterdir() if p.name.isdigit()] if ckdir.is_dir() else []
  want_step = step if step is not None else (max(steps) if steps else None)
  for ckd, e in _CACHE:
    default_clips = e.config.eval.num_clips
    if ckd == ckdir and e.step == want_step and e.num_clips == (num_clips or default_clips):
      return e
  e = Embedder(workdir, step=step, num_clips=num_clips)
  _CACHE[:] = _CACHE[-1:] + [(ckdir, e)]  # keep two
  return e


# ---- sources: folder, manifest, dataset --------------------------------------------------------

def list_videos(source) -> list[dict]:
  """Records {path, label, label_name, caption, tracks} of a folder (recursive) or a manifest file.

  Folder: every video file under it; a file in a sub-folder gets the sub-folder's name as its
  label (`DIR/<class>/<file>`; classes numbered in `class_order`, as `prepare` numbers them).
  Manifest: `.jsonl` with keys path[, label][, caption][, tracks]; `.csv`/`.tsv` with a header naming a `path` column
  (label, caption, tracks optional); `.txt`: one path per line (optionally followed by whitespace and an integer label).
  Relative paths are relative to the manifest's folder.
  """
  source = pathlib.Path(source)
  if source.is_dir():
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not files:
      raise DataError(f"no video files ({', '.join(VIDEO_EXTENSIONS[:5])}, ...) under {str(source)!r}")
    classes = class_order(p.parent.relative_to(source).parts[0] for p in files if p.parent != source)
    recs = []
    for p in files:
      rel = p.relative_to(source).parts
      name = rel[0] if len(rel) > 1 else None
      recs.append({"path": str(p.absolute()), "label": classes.index(name) if name else -1, "label_name": name})
    return recs
  if not source.is_file():
    raise DataError(f"--videos {str(source)!r} is neither a folder nor a manifest file nor {DATASET_PREFIX}NAME")
  base = source.parent
  suffix = source.suffix.lower()
  rows: list[dict] = []
  try:
    if suffix == ".jsonl":
      rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    elif suffix in (".csv", ".tsv"):
      with open(source, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    else:
      for line in source.read_text().splitlines():
        parts = line.strip().rsplit(None, 1)
        if not parts or parts[0].startswith("#"):
          continue
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
          rows.append({"path": parts[0], "label": int(parts[1])})
        else:
          rows.append({"path": line.strip()})
  except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
    raise DataError(f"cannot read manifest {str(source)!r}: {e}") from e
  recs = []
  for n, r in enumerate(rows, 1):
    if not r.get("path"):
      raise DataError(f"manifest {str(source)!r} row {n} has no 'path'")
    p = pathlib.Path(r["path"])
    label = r.get("label", -1)
    label = int(label) if str(label).lstrip("-").isdigit() else -1
    tracks = r.get("tracks") or None  # a per-video tracks file (per-actor rows; `prepare` reads them alike)
    if tracks and not pathlib.Path(tracks).is_absolute() and "://" not in tracks:
      tracks = str((base / tracks).absolute())
    recs.append({"path": str(p if p.is_absolute() else (base / p).absolute()), "label": label,
                 "label_name": r.get("label_name") or None, "caption": r.get("caption") or None, "tracks": tracks})
  return recs


@dataclasses.dataclass
class EmbedReport:
  """What one `embed_videos` call did."""
  index: "object"
  added: int
  skipped: int  # already in the index
  failed: list  # [(path, message)] files that could not be decoded


def check_same_model(index, embedder, out) -> None:
  if index.count and (index.config_hash != embedder.config_hash or index.step != embedder.step):
    raise CheckpointError(
        f"index {str(out)!r} was built with step {index.step} (config {index.config_hash}); this run gives step "
        f"{embedder.step} (config {embedder.config_hash}) and its embeddings would not be comparable; use a new --out")


def embed_videos(workdir, videos, out, *, batch_size: int = 16, num_clips: int | None = None,
                 step: int | None = None, dtype: str = "float32", progress: bool = True, mesh=None,
                 chunk: int = 256, flush_seconds: float = 60.0, split: str | None = None) -> EmbedReport:
  """Embeds a folder / manifest / `dataset:NAME` into the index at `out` (created or extended).

  Returns an EmbedReport. Rows are appended every `chunk` videos or `flush_seconds`, whichever
  comes first, and on Ctrl-C before it stops, so an interrupted run keeps what it had embedded
  and the next run resumes from there. A video whose embedding is not finite is listed as failed.
  """
  embedder = Embedder(workdir, step=step, num_clips=num_clips, mesh=mesh) if mesh else \
      get_embedder(workdir, step=step, num_clips=num_clips)
  if isinstance(videos, str) and videos.startswith(DATASET_PREFIX):
    return embed_dataset(embedder, videos[len(DATASET_PREFIX):], out, split=split, batch_size=batch_size,
                         dtype=dtype, progress=progress)
  if jax.process_count() > 1:
    raise DataError(f"embedding files ({videos!r}) runs in one process; with {jax.process_count()} processes "
                    "embed a prepared dataset: --videos dataset:tfrecord:PATH")
  records = list_videos(videos)
  index = Index.open_or_create(out, dim=int(embedder.config.model.embed_dim), dtype=dtype, step=embedder.step,
                               config_hash=embedder.config_hash, workdir=embedder.workdir,
                               extra={"num_clips": embedder.num_clips}, text_dim=embedder.text_dim)
  check_same_model(index, embedder, out)
  # Named labels are numbered by Index.append, under the index's lock (old names keep theirs).
  todo = [r for r in records if not index.has_path(r["path"])]
  skipped = len(records) - len(todo)
  failed: list = []

  def on_error(i, path, err):
    failed.append((path, str(err)))
    if progress:
      print(f"sora-jax embed: skipped {path}: {err}", file=sys.stderr)

  added, buf_e, buf_a, buf_r, flushed_at = 0, [], [], [], time.monotonic()

  def flush():
    nonlocal added, skipped, buf_e, buf_a, buf_r, flushed_at
    if buf_r:
      n = index.append(np.concatenate(buf_e), buf_r, aligned=np.concatenate(buf_a) if buf_a else None)
      added, skipped = added + n, skipped + len(buf_r) - n  # another writer's by the time we append
      buf_e, buf_a, buf_r = [], [], []
    flushed_at = time.monotonic()

  paths = [r["path"] for r in todo]
  try:
    for rows, outs in embedder.embed_files(paths, batch_size=batch_size, progress=progress, on_error=on_error):
      finite = np.isfinite(outs["embedding"]).all(axis=1)
      if "aligned" in outs:
        finite &= np.isfinite(outs["aligned"]).all(axis=1)
      for i in np.asarray(rows)[~finite]:
        on_error(i, todo[i]["path"], "its embedding is not finite (NaN or Inf); not added")
      buf_e.append(outs["embedding"][finite])
      if "aligned" in outs:
        buf_a.append(outs["aligned"][finite])
      buf_r.extend({k: v for k, v in todo[i].items() if v is not None} for i in np.asarray(rows)[finite])
      if len(buf_r) >= chunk or time.monotonic() - flushed_at >= flush_seconds:
        flush()
  except KeyboardInterrupt:
    flush()  # keep what was embedded; rerunning the command continues from there
    raise
  flush()
  return EmbedReport(index=index, added=added, skipped=skipped, failed=failed)


def embed_dataset(embedder, name: str, out, *, split: str | None = None, batch_size: int = 16,
                  dtype: str = "float32", progress: bool = True):
  """`--videos dataset:NAME`: embeds every example of `split` (default data.eval_split) of a dataset the
  data stage knows (built-in, tfrecord:, tfds:) into the index at `out`.

  Clips come from `data.pipeline.eval_batches` (as evaluation sees them); each row is keyed by
  `dataset:NAME:SPLIT/<video_id>` so a second run skips what is already in the index. With several
  processes, each embeds its share of every batch on its own devices, the rows are gathered in the
  split's order and process 0 appends them.
  """
  config = embedder.config.copy_and_resolve_references()
  if name:
    config.data.name = name
  split = split or config.data.eval_split
  info = pipeline.dataset_info(config)
  names = list(info.get("class_names") or [])
  lead, gather = jax.process_index() == 0, jax.process_count() > 1
  if lead:
    index = Index.open_or_create(out, dim=int(config.model.embed_dim), dtype=dtype, step=embedder.step,
                                 config_hash=embedder.config_hash, workdir=embedder.workdir,
                                 label_names=names or None, extra={"num_clips": embedder.num_clips},
                                 text_dim=embedder.text_dim)
  if gather:
    distributed.barrier("sora_jax_embed_index_open")
  index = index if lead else Index.load(out)
  check_same_model(index, embedder, out)
  prefix = f"dataset:{config.data.name}:{split}/"
  total = (info.get("splits") or {}).get(split)
  added = skipped = 0
  bar = tqdm(total=total, unit="video", desc=f"embed {config.data.name}:{split}", disable=not (progress and lead),
             file=sys.stderr)
  dim, text_dim = int(config.model.embed_dim), embedder.text_dim or 0
  for batch in pipeline.eval_batches(config, split, batch_size=batch_size, num_clips=embedder.num_clips,
                                     process_index=jax.process_index(), process_count=jax.process_count()):
    mask = np.asarray(batch["mask"], bool)
    ids = np.asarray(batch["video_id"], np.int64)
    new = np.array([m and not index.has_path(f"{prefix}{i}") for m, i in zip(mask, ids)], bool)
    emb, aligned = np.zeros((len(ids), dim), np.float32), np.zeros((len(ids), text_dim), np.float32)
    if new.any():
      outs = embedder.embed_clips(np.asarray(batch["video"])[new])
      emb[new] = outs["embedding"]
      if text_dim:
        aligned[new] = outs["aligned"]
    labels = np.asarray(batch["label"], np.int64)
    if gather:  # every process takes part in every gather, with or without new rows
      mask, ids, new, emb, aligned, labels = multihost_utils.process_allgather(
          (mask, ids, new, emb, aligned, labels), tiled=True)
    skipped += int(mask.sum() - new.sum())
    bar.update(int(mask.sum()))
    if not new.any():
      continue
    records = []
    for vid, label in zip(ids[new], labels[new]):
      rec = {"id": int(vid), "path": f"{prefix}{vid}", "label": int(label)}
      if 0 <= label < len(names):
        rec["label_name"] = str(names[label])
      records.append(rec)
    n = index.append(emb[new], records, aligned=aligned[new] if text_dim else None) if lead else len(records)
    added, skipped = added + n, skipped + len(records) - n
  bar.close()
  if gather:
    distributed.barrier("sora_jax_embed_index_done")
    index = index if lead else Index.load(out)
  return EmbedReport(index=index, added=added, skipped=skipped, failed=[])


def summary(report: EmbedReport) -> str:
  """One paragraph for the CLI: counts, failures, where the index is."""
  ix = report.index
  lines = [f"index {ix.directory}: {ix.count} videos (added {report.added}, already there {report.skipped}, "
           f"failed {len(report.failed)}); checkpoint step {ix.step}, config {ix.config_hash}"]
  for path, msg in report.failed:
    lines.append(f"  failed: {path}: {msg}")
  return "\n".join(lines)

