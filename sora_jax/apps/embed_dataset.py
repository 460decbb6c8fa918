"""`--videos dataset:NAME`: embed a split of a dataset the data stage knows (built-in, tfrecord:, tfds:).

Clips come from `data.pipeline.eval_batches` (as evaluation sees them); each row is keyed by
`dataset:NAME:SPLIT/<video_id>` so a second run skips what is already in the index.
"""

from __future__ import annotations

import sys

import numpy as np


def embed_dataset(embedder, name: str, out, *, split: str | None = None, batch_size: int = 16,
                  dtype: str = "float32", progress: bool = True):
  """Embeds every example of `split` (default data.eval_split) of dataset `name` into the index at `out`."""
  from tqdm import tqdm

  from sora_jax.apps.embed import EmbedReport, _check_same_model
  from sora_jax.apps.index import Index
  from sora_jax.data import pipeline

  config = embedder.config.copy_and_resolve_references()
  if name:
    config.data.name = name
  split = split or config.data.eval_split
  info = pipeline.dataset_info(config)
  names = list(info.get("class_names") or [])
  index = Index.open_or_create(out, dim=int(config.model.embed_dim), dtype=dtype, step=embedder.step,
                               config_hash=embedder.config_hash, workdir=embedder.workdir, label_names=names or None,
                               extra={"num_clips": embedder.num_clips})
  _check_same_model(index, embedder, out)
  prefix = f"dataset:{config.data.name}:{split}/"
  total = (info.get("splits") or {}).get(split)
  added = skipped = 0
  bar = tqdm(total=total, unit="video", desc=f"embed {config.data.name}:{split}", disable=not progress, file=sys.stderr)
  for batch in pipeline.eval_batches(config, split, batch_size=batch_size, num_clips=embedder.num_clips):
    mask = np.asarray(batch["mask"], bool)
    ids = np.asarray(batch["video_id"], np.int64)
    new = np.array([m and not index.has_path(f"{prefix}{i}") for m, i in zip(mask, ids)], bool)
    skipped += int(mask.sum() - new.sum())
    bar.update(int(mask.sum()))
    if not new.any():
      continue
    outs = embedder.embed_clips(np.asarray(batch["video"])[new])
    labels = np.asarray(batch["label"])[new]
    records = []
    for vid, label in zip(ids[new], labels):
      rec = {"id": int(vid), "path": f"{prefix}{vid}", "label": int(label)}
      if 0 <= label < len(names):
        rec["label_name"] = str(names[label])
      records.append(rec)
    index.append(outs["embedding"], records)
    added += len(records)
  bar.close()
  return EmbedReport(index=index, added=added, skipped=skipped, failed=[])
