"""actor_infonce: InfoNCE between views of the same actor, over every actor of the global batch.

The same actor (its track) in two views of a video is a positive; every other actor of the global
batch is a negative, the other actors of the same clip included (they share the background, the
moment and the clip's augmentation: only the actor's own appearance and motion tell them apart).
Absent actors (padding up to A slots) are neither anchors nor negatives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sora_jax.linalg import l2_normalize
from sora_jax.objectives.predictive import predictive


def actor_infonce(embeddings: jax.Array, mask: jax.Array, temperature: jax.Array | float) -> tuple[jax.Array, dict]:
  """embeddings [B, V, A, E] (V >= 2 views of A actor slots of B videos), mask bool [B, A] (True = an
  actor) -> (loss, {'actor_contrastive_accuracy'}).

  Multi-view NT-Xent over the N = B * A actor slots as `objectives.infonce` computes it over videos
  (`optax.losses.ntxent`: for each ordered pair of views of an actor, the positive against the
  negatives, the other positives left out), with the absent slots left out of every row and
  column; the mean over the pairs of present actors. Accuracy: share of present (actor, view)
  anchors whose nearest other present slot is a view of the same actor.
  """
  b, v, a, e = embeddings.shape
  z = l2_normalize(jnp.swapaxes(embeddings, 1, 2).astype(jnp.float32)).reshape(b * a * v, e)  # actor-major
  instance = jnp.repeat(jnp.arange(b * a), v)
  present = jnp.repeat(mask.reshape(b * a), v)
  logits = (z @ z.T) / temperature
  same = instance[:, None] == instance[None, :]
  other = ~jnp.eye(b * a * v, dtype=bool)
  negative = ~same & present[None, :]
  # log of the sum over the negatives, then each positive pair's log(e^p / (e^p + sum e^n))
  neg_lse = jax.nn.logsumexp(jnp.where(negative, logits, -jnp.inf), axis=1)  # -inf: no negative
  per_pair = jnp.logaddexp(logits, neg_lse[:, None]) - logits
  pairs = same & other & present[:, None] & present[None, :]
  loss = jnp.sum(jnp.where(pairs, per_pair, 0.0)) / jnp.maximum(jnp.sum(pairs), 1)
  nearest = jnp.argmax(jnp.where(other & present[None, :], logits, -jnp.inf), axis=1)
  hit = (instance[nearest] == instance) & present
  accuracy = jnp.sum(hit) / jnp.maximum(jnp.sum(present), 1)
  return loss, {"actor_contrastive_accuracy": accuracy}


def actor_predictive(predictions: jax.Array, targets: jax.Array, mask: jax.Array, temperature: jax.Array | float
                     ) -> tuple[jax.Array, dict]:
  """Per-actor DPC for one view: predictions [B, A, T, K, E] (from track (b, a)'s state at t, for t+k),
  targets [B, A, T, E], mask bool [B, A] -> (loss, {'actor_predictive_accuracy'}).

  `objectives.predictive` over the N = B * A tracks with the absent ones left out: for each k, each
  present track's prediction at t scores its own step t+k against the steps t'+k of every present
  track of the batch (the same track at other times included, so a prediction that ignores how the
  track moves cannot tell its future from its past).
  """
  b, a, t, k_max, e = predictions.shape
  loss, metrics = predictive(predictions.reshape(b * a, t, k_max, e), targets.reshape(b * a, t, e), temperature,
                             mask.reshape(b * a))
  return loss, {"actor_predictive_accuracy": metrics["predictive_accuracy"]}
