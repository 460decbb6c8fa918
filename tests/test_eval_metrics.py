"""Hand-computed cases for the evaluation protocols (kNN, linear probe, retrieval R@k)."""

import numpy as np
import pytest

from sora_jax.errors import DataError
from sora_jax.evaluation import probes, retrieval


def test_recall_at_k_five_items():
  # 2-D unit vectors at angles; gallery of five, two queries.
  angle = lambda a: [np.cos(np.radians(a)), np.sin(np.radians(a))]
  gallery = np.array([angle(a) for a in (0, 30, 60, 90, 180)])
  gallery_y = np.array([0, 1, 1, 0, 2])
  queries = np.array([angle(10), angle(170)])  # nearest: 0,30,60,90,180  and  180,90,60,30,0
  query_y = np.array([1, 0])
  r = retrieval.recall_at_k(queries, query_y, gallery, gallery_y, ks=(1, 2, 3, 5))
  # query 0 (label 1): ranks labels 0,1,1,0,2 -> miss@1, hit@2.  query 1 (label 0): 2,0,1,1,0 -> hit@2.
  assert r == {"R@1": 0.0, "R@2": 1.0, "R@3": 1.0, "R@5": 1.0}
  np.testing.assert_array_equal(retrieval.nearest(queries, gallery, 5), [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
  # Unknown query labels are ignored, not counted as misses.
  r = retrieval.recall_at_k(queries, np.array([1, -1]), gallery, gallery_y, ks=(1, 2))
  assert r == {"R@1": 0.0, "R@2": 1.0}


def test_mean_centering_changes_neighbours():
  # The gallery shares a large common offset along +x: raw cosine is dominated by it and picks
  # item 0 for a query near the origin; centring on the gallery mean (6.67, 0.17) picks item 2.
  gallery = np.array([[10.0, 1.0], [10.0, -1.0], [0.0, 0.5]])
  query = np.array([[1.0, 0.5]])
  assert retrieval.nearest(query, gallery, 1).tolist() == [[0]]
  assert retrieval.nearest(query, gallery, 1, mean_center=True).tolist() == [[2]]
  r = retrieval.recall_at_k(query, [2], gallery, [0, 1, 2], ks=(1,), mean_center=True)
  assert r == {"R@1": 1.0}
  with pytest.raises(DataError):
    retrieval.recall_at_k(query, np.array([-1]), gallery, np.array([0, 1, 2]))


def _clusters(rng, n_per, centers, noise=0.05):
  x = np.concatenate([c + noise * rng.normal(size=(n_per, len(c))) for c in centers])
  y = np.repeat(np.arange(len(centers)), n_per)
  return x.astype(np.float32), y


def test_knn_separable_clusters_and_weights():
  rng = np.random.default_rng(0)
  centers = np.eye(4, 8) * 3
  tx, ty = _clusters(rng, 10, centers)
  qx, qy = _clusters(rng, 5, centers)
  assert probes.knn_accuracy(tx, ty, qx, qy, k=5, temperature=0.07) == 1.0
  # Weighted votes: one very close item of class 1 beats two far items of class 0 at low T.
  train = np.array([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
  labels = np.array([1, 0, 0])
  q = np.array([[1.0, 0.1]])
  assert probes.knn_predict(train, labels, q, k=3, temperature=0.07).tolist() == [1]
  # ...while at a very high temperature the votes are nearly equal and the majority wins.
  assert probes.knn_predict(train, labels, q, k=3, temperature=100.0).tolist() == [0]
  # Unknown labels (-1) are dropped rather than voting.
  assert probes.knn_accuracy(np.concatenate([tx, qx]), np.concatenate([ty, -np.ones_like(qy)]),
                             qx, qy, k=1) == 1.0


def test_linear_probe_separable_and_random_labels():
  rng = np.random.default_rng(1)
  # Linearly separable (not by nearest neighbour alone: classes are half-spaces on a sphere).
  d, c = 16, 4
  w_true = rng.normal(size=(d, c))
  def split(n):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (probes.l2_normalize(x) @ w_true).argmax(1)
  (trx, tr_y), (vx, vy), (tex, tey) = split(400), split(100), split(200)
  # A clean margin: keep only the points whose best class wins by a gap.
  def margin(x, y):
    s = np.sort(probes.l2_normalize(x) @ w_true, axis=1)
    keep = s[:, -1] - s[:, -2] > 0.3
    return x[keep], y[keep]
  trx, tr_y = margin(trx, tr_y)
  tex, tey = margin(tex, tey)
  r = probes.linear_probe(trx, tr_y, vx, vy, tex, tey, num_classes=c,
                          learning_rates=(0.1, 0.01), weight_decays=(0.0, 1e-3), steps=400)
  assert r["accuracy"] == 1.0
  assert len(r["sweep"]) == 4 and r["learning_rate"] in (0.1, 0.01)
  # Random labels: a probe cannot beat chance on held-out data.
  ry = rng.integers(0, c, size=len(tr_y))
  rv = rng.integers(0, c, size=len(vy))
  rt = rng.integers(0, c, size=2000)
  tx = rng.normal(size=(2000, d)).astype(np.float32)
  r = probes.linear_probe(trx, ry, vx, rv, tx, rt, num_classes=c,
                          learning_rates=(0.1,), weight_decays=(0.0,), steps=200)
  assert abs(r["accuracy"] - 1 / c) < 0.05
  with pytest.raises(DataError):
    probes.linear_probe(trx, -np.ones(len(trx), int), vx, vy, tex, tey, num_classes=c)
