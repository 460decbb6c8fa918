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


def predictive(predictions: jax.Array, targets: jax.Array, temperature: jax.Array | float,
               mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Args: predictions `[B, T, K, E]` (from sequence[:, t], for t+k), targets `[B, T, E]`; mask bool
  `[B]` or None (all present): the sequences that count (per-actor DPC: absent actor slots).

  Returns (loss, metrics): loss is the mean over k of the cross-entropy of each valid
  (b, t, k) query of a present sequence against the candidate futures `targets[:, k:]` of the
  present sequences; `predictive_accuracy` is the fraction of those queries whose true future ranks
  first. Not `optax.losses.ntxent`: queries (predictions) and keys (targets) are different sets and
  the positive is a single key, so it is a plain softmax cross-entropy over a query×key similarity
  matrix.
  """
  b, t, k_max, e = predictions.shape
  present_seq = jnp.ones((b,), bool) if mask is None else mask.reshape(b)
  losses, accs = [], []
  for k in range(1, min(k_max, t - 1) + 1):
    q = predictions[:, : t - k, k - 1].astype(jnp.float32).reshape(b * (t - k), e)  # query at t predicts t+k
    keys = targets[:, k:].astype(jnp.float32).reshape(b * (t - k), e)  # row i of keys is the true future of query i
    present = jnp.repeat(present_seq, t - k)
    logits = jnp.where(present[None, :], (q @ keys.T) / temperature, -jnp.inf)
    labels = jnp.arange(q.shape[0])
    per_query = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    count = jnp.maximum(jnp.sum(present), 1)
    losses.append(jnp.sum(jnp.where(present, per_query, 0.0)) / count)
    accs.append(jnp.sum(present & (jnp.argmax(logits, axis=-1) == labels)) / count)
  return jnp.mean(jnp.stack(losses)), {"predictive_accuracy": jnp.mean(jnp.stack(accs))}
