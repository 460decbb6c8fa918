"""Classification protocols on frozen features: weighted kNN (as in DINO) and a linear probe.

Features are `[N, D]` float arrays, labels int `[N]` with -1 for unknown (dropped). Both
protocols L2-normalise the features first, so only directions matter, like cosine retrieval.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax.errors import DataError
from sora_jax.linalg import l2_normalize
from sora_jax.parallel.topk import exact_search


def known(features: np.ndarray, labels: np.ndarray):
  """Keeps the rows whose label is known (>= 0)."""
  labels = np.asarray(labels)
  keep = labels >= 0
  return np.asarray(features)[keep], labels[keep]


def _check(features, labels, what):
  if len(features) == 0:
    raise DataError(f"{what}: no labelled examples; check the split and that its labels are known")
  if len(features) != len(labels):
    raise DataError(f"{what}: {len(features)} features but {len(labels)} labels")


def knn_votes(sims: np.ndarray, labels: np.ndarray, num_classes: int, temperature: float) -> np.ndarray:
  """The weighted kNN vote (as in DINO), shared by the kNN probe, the quick eval and `predict`.

  sims `[Q, k]` cosine similarities of each query's neighbours, labels int `[Q, k]` their classes
  -> votes float64 `[Q, num_classes]`, each neighbour adding exp((sim - 1) / T) (shifted by the
  largest possible similarity, so nothing overflows).
  """
  sims = np.asarray(sims)
  votes = np.zeros((len(sims), num_classes), np.float64)
  np.add.at(votes, (np.arange(len(sims))[:, None], np.asarray(labels, np.int64)), np.exp((sims - 1.0) / temperature))
  return votes


def knn_predict(train_x, train_y, test_x, *, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None) -> np.ndarray:
  """Weighted kNN: the k most cosine-similar train items vote (`knn_votes`).

  train_x `[N, D]`, train_y int `[N]` (all known), test_x `[Q, D]` -> predictions int `[Q]`.
  """
  _check(train_x, train_y, "kNN train set")
  train_y = np.asarray(train_y, np.int64)
  num_classes = int(num_classes or train_y.max() + 1)
  sims, rows = exact_search(l2_normalize(test_x), l2_normalize(train_x), k)
  return knn_votes(sims, train_y[rows], num_classes, temperature).argmax(axis=1)


def knn_accuracy(train_x, train_y, test_x, test_y, **kwargs) -> float:
  """Top-1 accuracy of `knn_predict` on the test items with known labels."""
  train_x, train_y = known(train_x, train_y)
  test_x, test_y = known(test_x, test_y)
  _check(test_x, test_y, "kNN test set")
  return float(np.mean(knn_predict(train_x, train_y, test_x, **kwargs) == test_y))


@functools.lru_cache(maxsize=None)
def _fit_fn(steps: int):
  """A jitted full-batch Adam fit of a softmax classifier, vmapped over (lr, wd) pairs."""

  def fit_one(x, y, num_classes_one_hot, lr, wd):
    d, c = x.shape[1], num_classes_one_hot.shape[0]
    params = {"w": jnp.zeros((d, c)), "b": jnp.zeros((c,))}
    opt = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    onehot = num_classes_one_hot[y]

    def loss_fn(p):
      logits = x @ p["w"] + p["b"]
      ce = optax.softmax_cross_entropy(logits, onehot).mean()
      return ce + wd * jnp.sum(p["w"] ** 2)

    def step(carry, _):
      p, s = carry
      g = jax.grad(loss_fn)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params

  return jax.jit(jax.vmap(fit_one, in_axes=(None, None, None, 0, 0)))


def fit_linear(x, y, num_classes: int, learning_rates, weight_decays, *, steps: int = 300):
  """Fits one classifier per (lr, wd) pair on L2-normalised x `[N, D]` -> w `[H, D, C]`, b `[H, C]`."""
  lrs = jnp.asarray(learning_rates, jnp.float32)
  wds = jnp.asarray(weight_decays, jnp.float32)
  params = _fit_fn(int(steps))(jnp.asarray(l2_normalize(x)), jnp.asarray(y, jnp.int32),
                              jnp.eye(num_classes, dtype=jnp.float32), lrs, wds)
  return np.asarray(params["w"]), np.asarray(params["b"])


def linear_predict(w, b, x) -> np.ndarray:
  """w `[D, C]`, b `[C]`, x `[N, D]` -> predicted classes `[N]` (x is L2-normalised here)."""
  return (l2_normalize(x) @ w + b).argmax(axis=-1)


def fit_best_linear(train_x, train_y, val_x, val_y, *, num_classes: int, learning_rates=(0.01, 0.1),
                    weight_decays=(0.0, 1e-4, 1e-3), steps: int = 300):
  """Sweeps (lr, wd) on the validation split and refits the best on train+val (rows with a label
  only). -> (w [D, C], b [C], {"learning_rate", "weight_decay", "val_accuracy", "sweep"})."""
  train_x, train_y = known(train_x, train_y)
  val_x, val_y = known(val_x, val_y)
  _check(train_x, train_y, "linear probe train set")
  grid = list(itertools.product(learning_rates, weight_decays))
  sweep = []
  if len(val_x) and len(grid) > 1:
    w, b = fit_linear(train_x, train_y, num_classes, [g[0] for g in grid], [g[1] for g in grid], steps=steps)
    for i, (lr, wd) in enumerate(grid):
      acc = float(np.mean(linear_predict(w[i], b[i], val_x) == val_y))
      sweep.append({"learning_rate": float(lr), "weight_decay": float(wd), "val_accuracy": acc})
    best = max(range(len(grid)), key=lambda i: (sweep[i]["val_accuracy"], -grid[i][1], -i))
  else:
    best = 0
  lr, wd = grid[best]
  full_x = np.concatenate([train_x, val_x]) if len(val_x) else train_x
  full_y = np.concatenate([train_y, val_y]) if len(val_y) else train_y
  w, b = fit_linear(full_x, full_y, num_classes, [lr], [wd], steps=steps)
  return w[0], b[0], {"learning_rate": float(lr), "weight_decay": float(wd),
                      "val_accuracy": sweep[best]["val_accuracy"] if sweep else None, "sweep": sweep}


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, *, num_classes: int,
                 learning_rates=(0.01, 0.1), weight_decays=(0.0, 1e-4, 1e-3), steps: int = 300) -> dict:
  """Sweeps (lr, wd) on the validation split, refits the best on train+val, reports test accuracy.

  Returns {"accuracy", "val_accuracy", "learning_rate", "weight_decay", "sweep": [...]}.
  """
  test_x, test_y = known(test_x, test_y)
  _check(test_x, test_y, "linear probe test set")
  w, b, protocol = fit_best_linear(train_x, train_y, val_x, val_y, num_classes=num_classes,
                                   learning_rates=learning_rates, weight_decays=weight_decays, steps=steps)
  return {"accuracy": float(np.mean(linear_predict(w, b, test_x) == test_y)), **protocol}
