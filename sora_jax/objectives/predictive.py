"""Dense predictive coding (DPC/CPC): predict future step embeddings, scored contrastively.

The model's temporal state at step t predicts the embedding of step t+k (k = 1..K). Each prediction
is scored against the true future of EVERY clip in the global batch at every step that is a valid
target for this k (same clip at other times = temporal negatives, other clips = instance negatives),
so a model that ignores motion cannot tell "what comes next" from "what came before".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def predictive(predictions: jax.Array, targets: jax.Array, temperature: jax.Array | float
               ) -> tuple[jax.Array, dict]:
  """Args: predictions `[B, T, K, E]` (from sequence[:, t], for t+k), targets `[B, T, E]`.

  Returns (loss, metrics): loss is the mean over k of the cross-entropy of each valid
  (b, t, k) query against the B*(T-k) candidate futures `targets[:, k:]`; `predictive_accuracy`
  is the fraction of queries whose true future ranks first. Not `optax.losses.ntxent`: queries
  (predictions) and keys (targets) are different sets and the positive is a single key, so it is
  a plain softmax cross-entropy over a query×key similarity matrix.
  """
  b, t, k_max, e = predictions.shape
  predictions = predictions.astype(jnp.float32)
  targets = targets.astype(jnp.float32)
  losses, accs = [], []
  for k in range(1, k_max + 1):
    if k >= t:
      break
    q = predictions[:, : t - k, k - 1].reshape(b * (t - k), e)  # query at t predicts t+k
    keys = targets[:, k:].reshape(b * (t - k), e)  # row i of keys is the true future of query i
    logits = (q @ keys.T) / temperature
    labels = jnp.arange(q.shape[0])
    losses.append(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
    accs.append(jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)))
  loss = jnp.mean(jnp.stack(losses))
  return loss, {"predictive_accuracy": jnp.mean(jnp.stack(accs))}
