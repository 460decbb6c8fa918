"""Supervised cross-entropy (the supervised reference run and fine-tuning)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def supervised(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, dict]:
  """logits `[B, C]`, labels int `[B]` with -1 = unknown (ignored). Returns (loss, {'accuracy'})."""
  logits = logits.astype(jnp.float32)
  known = labels >= 0
  safe = jnp.where(known, labels, 0)
  ce = optax.losses.softmax_cross_entropy_with_integer_labels(logits, safe)
  n = jnp.maximum(known.sum(), 1)
  loss = jnp.where(known, ce, 0.0).sum() / n
  acc = jnp.where(known, jnp.argmax(logits, -1) == safe, False).sum() / n
  return loss, {"supervised_accuracy": acc}
