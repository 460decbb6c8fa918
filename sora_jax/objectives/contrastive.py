"""InfoNCE / NT-Xent between views of the same video, over the GLOBAL batch.

Called inside jit on global (sharded) arrays, so every other clip of the global batch is a negative
whatever the number of devices: XLA inserts the all-gathers, the maths does not change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sora_jax.linalg import l2_normalize


def infonce(embeddings: jax.Array, temperature: jax.Array | float) -> tuple[jax.Array, dict]:
  """Symmetric multi-view NT-Xent.

  Args:
    embeddings: `[B, V, E]` (V >= 2 views of each of B videos); normalised here again (cosine).
    temperature: scalar (fixed or learned, > 0).
  Returns:
    (loss, metrics) with metrics `contrastive_accuracy`: fraction of (anchor, view) pairs whose
    positive scores above every negative and every other positive of the anchor's row.

  This is `optax.losses.ntxent` with labels = video index: for V = 2 it is exactly SimCLR's loss
  (each of the 2B anchors against its positive and 2B-2 negatives, averaged, hence symmetric); for
  V > 2 each positive pair is scored against the negatives only (other positives are excluded from
  the denominator), averaged over all ordered pairs. It is computed in float32 (bf16 logits/T
  saturate).
  """
  b, v, e = embeddings.shape
  flat = embeddings.astype(jnp.float32).reshape(b * v, e)
  labels = jnp.repeat(jnp.arange(b), v)
  loss = optax.losses.ntxent(flat, labels, temperature)
  return loss, {"contrastive_accuracy": _accuracy(flat, labels)}


def _accuracy(flat: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of anchors whose nearest other clip (cosine) is a view of the same video."""
  flat = l2_normalize(flat)
  sim = flat @ flat.T
  sim = jnp.where(jnp.eye(sim.shape[0], dtype=bool), -jnp.inf, sim)
  nearest = jnp.argmax(sim, axis=-1)
  return jnp.mean((labels[nearest] == labels).astype(jnp.float32))
