"""One set of figures (linear probe, kNN, retrieval) for one labelling of embedded splits.

An embedded split is the dict `features.extract` returns: {feature: [N, D], label, motion_label,
video_id}. Which feature the protocols read (`pooled`, the temporal model's output, or
`embedding`, the projection head's) is config.eval.feature.
"""

from __future__ import annotations

import numpy as np

from sora_jax.evaluation import probes, retrieval


def split_validation(train: dict, fraction: float, seed: int) -> tuple[dict, dict]:
  """Carves a seeded validation subset out of an embedded train split (when the data has none)."""
  n = len(train["video_id"])
  order = np.random.default_rng(seed).permutation(n)
  n_val = int(round(n * fraction)) if n > 4 else 0
  val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
  return ({k: v[train_idx] for k, v in train.items()}, {k: v[val_idx] for k, v in train.items()})


def figures(config, train: dict, val: dict, test: dict, *, label_key: str, num_classes: int,
            with_retrieval: bool = True, feature: str | None = None) -> dict | None:
  """{"linear", "knn", "R@k"..., "linear_protocol"} on `label_key` of `feature` (default
  config.eval.feature); None when the label is unknown everywhere."""
  feature = feature or config.eval.feature
  ty, qy = train[label_key], test[label_key]
  if num_classes < 2 or not (ty >= 0).any() or not (qy >= 0).any():
    return None
  e = config.eval
  out = {}
  lin = probes.linear_probe(train[feature], ty, val[feature], val[label_key], test[feature], qy,
                            num_classes=num_classes,
                            learning_rates=tuple(config.eval.probe_learning_rates),
                            weight_decays=tuple(config.eval.probe_weight_decays),
                            steps=config.eval.probe_steps)
  out["linear"] = lin["accuracy"]
  out["linear_protocol"] = {k: lin[k] for k in ("learning_rate", "weight_decay", "val_accuracy")}
  # kNN and retrieval need no fitting: their bank is the whole train split (train + validation).
  gallery_x = np.concatenate([train[feature], val[feature]])
  gallery_y = np.concatenate([ty, val[label_key]])
  out["knn"] = probes.knn_accuracy(gallery_x, gallery_y, test[feature], qy, k=e.knn_k,
                                   temperature=e.knn_temperature, num_classes=num_classes)
  if with_retrieval:
    out.update(retrieval.recall_at_k(test[feature], qy, gallery_x, gallery_y, tuple(e.retrieval_ks),
                                     mean_center=bool(e.mean_center)))
  return out


def chance(test: dict, label_key: str) -> float | None:
  """Accuracy of always answering the test split's most frequent class."""
  y = test[label_key][test[label_key] >= 0]
  return float(np.bincount(y).max() / len(y)) if len(y) else None
