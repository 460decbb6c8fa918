"""The quick kNN eval run during training (`hook(step, variables) -> {"knn_accuracy": float}`).

On first use it reads a small labelled subset (config.eval.quick_examples clips of the train split
as the bank, as many of the eval split as queries) into memory, one clip per example; each call
then embeds them with the current variables and reports weighted-kNN accuracy. It costs one
forward pass over 2 x quick_examples clips.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from sora_jax.data import pipeline
from sora_jax.evaluation import features, probes
from sora_jax.parallel import mesh as mesh_lib

log = logging.getLogger("sora_jax.eval")


def _take(config, split: str, n: int) -> dict:
  parts, have = [], 0
  for batch in pipeline.eval_batches(config, split, batch_size=config.eval.batch_size, num_clips=1, num_crops=1):
    mask = np.asarray(batch["mask"], bool)
    part = {k: np.asarray(batch[k])[mask] for k in ("video", "label")}
    parts.append(part)
    have += int(mask.sum())
    if have >= n:
      break
  if not parts:
    return {"video": np.zeros((0,), np.uint8), "label": np.zeros((0,), np.int64)}
  return {k: np.concatenate([p[k] for p in parts])[:n] for k in parts[0]}


def make_quick_eval(config, num_examples: int | None = None):
  """-> hook(step, variables) -> {"knn_accuracy"} ({} when the data has no labels)."""
  n = int(num_examples or config.eval.quick_examples)
  feature = config.eval.feature
  cache: dict = {}

  def embed_clips(variables, videos):
    batch = config.eval.batch_size
    out = []
    for start in range(0, len(videos), batch):
      rows = {"video": videos[start:start + batch]}
      for r in features.embed_batches(config, variables, [rows], mesh=cache["mesh"], embed_fn=cache["fn"]):
        out.append(r[feature])
    return np.concatenate(out)

  def hook(step: int, variables) -> dict:
    del step
    if not cache:
      cache["bank"] = _take(config, config.data.train_split, n)
      cache["queries"] = _take(config, config.data.eval_split, n)
      cache["mesh"] = mesh_lib.inference_mesh(config, jax.local_devices())
      cache["fn"] = features.make_embed_fn(config, cache["mesh"])
    bank, queries = cache["bank"], cache["queries"]
    if jax.process_count() > 1:  # every process scores the same clips on its own devices
      variables = multihost_utils.process_allgather(variables, tiled=True)
    if not (bank["label"] >= 0).any() or not (queries["label"] >= 0).any():
      if not cache.get("warned"):
        log.warning("quick eval: no labelled clips in %s/%s; kNN accuracy is not computed",
                    config.data.train_split, config.data.eval_split)
        cache["warned"] = True
      return {}
    acc = probes.knn_accuracy(embed_clips(variables, bank["video"]), bank["label"],
                              embed_clips(variables, queries["video"]), queries["label"],
                              k=config.eval.knn_k, temperature=config.eval.knn_temperature)
    return {"knn_accuracy": acc}

  return hook
