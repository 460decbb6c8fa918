"""Per-actor rows beside an index's clip rows.

`embed` of a run with per-actor features (model.actors) also writes each actor's embedding (the
track's `actor_embedding`) to the sub-index INDEX/actors, one row per (video, actor), so
`search --index INDEX/actors --query ROW` finds the actors, and through them the clips, where some
actor moves like the query's. Sources:
  - a dataset with tracks (`dataset:moving_actors`): rows `dataset:NAME:SPLIT/<video_id>/actor<a>`,
    labelled with the actor's action;
  - a manifest whose rows name a `tracks` file (as `prepare` reads them): rows `<path>#<actor id>`.
    A tracks file that is wrong gets prepare's one-line error and its video no actor rows.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from sora_jax.apps.embed_index import DATASET_PREFIX, EmbedReport, check_same_model, get_embedder, list_videos
from sora_jax.apps.index import Index
from sora_jax.data import clips as clips_lib, pipeline, tracks as tracks_lib
from sora_jax.data.video_io import clips_from_frames, decode_video, video_size
from sora_jax.errors import DataError

ACTORS_DIR = "actors"


def actor_index_dir(out) -> str:
  """Where `embed --out OUT` writes the per-actor rows."""
  return f"{str(out).rstrip('/')}/{ACTORS_DIR}"


def embed_tracks(embedder, video, tracks) -> tuple[list, dict, list[str]]:
  """One video file and its tracks (a JSON path or its content) -> (actor ids, {'actor_pooled' [A, D'],
  'actor_embedding' [A, E]}, notes on what was mended). Each actor's boxes follow the resize and the crop
  (`data.tracks`), so its features are those `eval` computes for a dataset's videos."""
  d = embedder.config.data
  frames = decode_video(video, short_side=d.frame_size)
  width, height = video_size(video)
  raw = tracks_lib.read_json(tracks) if isinstance(tracks, (str, bytes)) or hasattr(tracks, "__fspath__") else tracks
  ids, boxes, notes = tracks_lib.parse_tracks(raw, len(frames), width, height, source=str(tracks)[:200])
  n, h, w = frames.shape[:3]
  boxes = boxes * np.array([w / width, h / height, w / width, h / height], np.float32)  # into the decoded frames
  idx = clips_lib.eval_indices(tf.constant(n, tf.int32), d.num_frames, d.stride, embedder.num_clips)
  clip_boxes = tracks_lib.eval_boxes(tf.constant(boxes), tf.reshape(idx, [-1]), h, w, d.frame_size,
                                     d.num_frames, 1).numpy()  # [C, A, T, 4]
  clips = clips_from_frames(frames, num_frames=d.num_frames, stride=d.stride, frame_size=d.frame_size,
                            num_clips=embedder.num_clips)
  out = embedder.embed_clips(clips[None], boxes=clip_boxes[None])
  return ids, {k: out[k][0] for k in ("actor_pooled", "actor_embedding")}, notes


def embed_actor_rows(workdir, videos, out, *, split: str | None = None, batch_size: int = 16,
                     num_clips: int | None = None, step: int | None = None, dtype: str = "float32",
                     progress: bool = True) -> EmbedReport | None:
  """The per-actor rows of `videos` (as `embed_videos` takes them) into `actor_index_dir(out)`; None when
  the run has no per-actor features or the source has no tracks. Rows already there are skipped."""
  embedder = get_embedder(workdir, step=step, num_clips=num_clips)
  config = embedder.config.copy_and_resolve_references()
  if not config.model.actors:
    return None
  if jax.process_count() > 1:
    raise DataError("per-actor rows are embedded in one process; run `sora-jax embed` for a run with "
                    "model.actors on one host")
  dataset = isinstance(videos, str) and videos.startswith(DATASET_PREFIX)
  names = None
  if dataset:
    if videos[len(DATASET_PREFIX):]:
      config.data.name = videos[len(DATASET_PREFIX):]
    info = pipeline.dataset_info(config)
    if not info.get("max_actors"):
      return None
    names = list(info.get("motion_names") or []) or None  # the actors' actions, where the data labels them
  else:
    records = [r for r in list_videos(videos) if r.get("tracks")]
    if not records:
      return None
  where = actor_index_dir(out)
  index = Index.open_or_create(where, dim=int(config.model.embed_dim), dtype=dtype, step=embedder.step,
                               config_hash=embedder.config_hash, workdir=embedder.workdir,
                               label_names=names,
                               extra={"num_clips": embedder.num_clips, "rows": "actors"})
  check_same_model(index, embedder, where)
  if dataset:
    split = split or config.data.eval_split
    total = (info.get("splits") or {}).get(split)
    return _from_dataset(embedder, config, index, split, batch_size, progress, names or [], total)
  return _from_files(embedder, index, records, progress)


def _from_dataset(embedder, config, index, split, batch_size, progress, names, total) -> EmbedReport:
  prefix = f"dataset:{config.data.name}:{split}/"
  added = skipped = 0
  bar = tqdm(total=total, unit="video", desc=f"embed actors {config.data.name}:{split}", disable=not progress, file=sys.stderr)
  for batch in pipeline.eval_batches(config, split, batch_size=batch_size, num_clips=embedder.num_clips):
    present = np.asarray(batch["mask"], bool)[:, None] & np.asarray(batch["actor_mask"], bool)  # [b, A]
    ids = np.asarray(batch["video_id"], np.int64)
    path = lambda j, a: f"{prefix}{ids[j]}/actor{a}"
    new = present & np.array([[not index.has_path(path(j, a)) for a in range(present.shape[1])]
                              for j in range(len(ids))], bool)
    skipped += int(present.sum() - new.sum())
    bar.update(int(np.asarray(batch["mask"]).sum()))
    rows = np.flatnonzero(new.any(1))
    if not len(rows):
      continue
    emb = embedder.embed_clips(np.asarray(batch["video"])[rows], boxes=np.asarray(batch["boxes"])[rows])
    emb = emb["actor_embedding"]  # [r, A, E]
    motion = np.asarray(batch["actor_motion"])[rows]
    take = [(i, a) for i, j in enumerate(rows) for a in range(new.shape[1]) if new[j, a]]
    records = [{"path": path(rows[i], a), "label": int(motion[i, a])} for i, a in take]
    for rec in records:  # numbered as the index's label names are (the dataset's own order)
      if 0 <= rec["label"] < len(names):
        rec["label_name"] = names[rec["label"]]
    n = index.append(np.stack([emb[i, a] for i, a in take]), records)
    added, skipped = added + n, skipped + len(records) - n
  bar.close()
  return EmbedReport(index=index, added=added, skipped=skipped, failed=[])


def _from_files(embedder, index, records, progress) -> EmbedReport:
  added = skipped = 0
  failed: list = []
  for r in tqdm(records, unit="video", desc="embed actors", disable=not progress, file=sys.stderr):
    try:
      ids, out, _ = embed_tracks(embedder, r["path"], r["tracks"])
    except DataError as e:
      failed.append((r["path"], str(e)))
      if progress:
        print(f"sora-jax embed: no actor rows for {r['path']}: {e}", file=sys.stderr)
      continue
    rows = [(a, actor) for a, actor in enumerate(ids) if not index.has_path(f"{r['path']}#{actor}")]
    skipped += len(ids) - len(rows)
    if rows:
      n = index.append(np.stack([out["actor_embedding"][a] for a, _ in rows]),
                       [{"path": f"{r['path']}#{actor}"} for _, actor in rows])
      added, skipped = added + n, skipped + len(rows) - n
  return EmbedReport(index=index, added=added, skipped=skipped, failed=failed)
