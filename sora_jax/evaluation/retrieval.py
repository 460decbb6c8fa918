"""Video-to-video retrieval: test clips query train clips by cosine similarity.

A query counts as a hit at k when any of its k nearest gallery items has the query's label
(the usual protocol for UCF101/HMDB retrieval). With `mean_center` the gallery mean is
subtracted from both sides before normalising, which removes a common direction that otherwise
dominates cosine similarity for weak features.
"""

from __future__ import annotations

import numpy as np

from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize
from sora_jax.parallel.topk import exact_search


def prepare(query_x, gallery_x, *, mean_center: bool = False):
  """-> (queries, gallery), L2-normalised, optionally centred on the gallery mean."""
  query_x = np.asarray(query_x, np.float32)
  gallery_x = np.asarray(gallery_x, np.float32)
  if mean_center:
    mean = gallery_x.mean(axis=0, keepdims=True)
    query_x, gallery_x = query_x - mean, gallery_x - mean
  return l2_normalize(query_x), l2_normalize(gallery_x)


def nearest(query_x, gallery_x, k: int, *, mean_center: bool = False) -> np.ndarray:
  """Indices `[Q, k]` of the k most similar gallery items per query, best first."""
  q, g = prepare(query_x, gallery_x, mean_center=mean_center)
  return exact_search(q, g, k)[1]


def recall_at_k(query_x, query_y, gallery_x, gallery_y, ks=(1, 5, 10, 20), *,
                mean_center: bool = False) -> dict[str, float]:
  """{"R@k": fraction of (labelled) queries with a same-label item among their top k}."""
  query_y, gallery_y = np.asarray(query_y), np.asarray(gallery_y)
  qk, gk = query_y >= 0, gallery_y >= 0
  if not qk.any() or not gk.any():
    raise DataError("retrieval needs labelled queries and gallery items; this split has none")
  top = nearest(np.asarray(query_x)[qk], np.asarray(gallery_x)[gk], max(ks), mean_center=mean_center)
  hits = gallery_y[gk][top] == query_y[qk][:, None]  # [Q, kmax]
  return {f"R@{k}": float(np.mean(hits[:, :k].any(axis=1))) for k in ks}
