"""Collapse, visible while training: how spread out a batch of embeddings is, computed in the step.

  embedding_std:  the per-dimension standard deviation over the batch of the unit embeddings,
                  averaged over dimensions. Spread evenly over the sphere it is about 1/sqrt(E);
                  0 when every clip maps to one point (complete collapse).
  embedding_rank: the effective rank (RankMe, Garrido et al. 2023) of the mean-centred [N, E] batch:
                  exp of the entropy of its normalised singular values, between 1 and min(N, E);
                  it falls when the embeddings keep to a few directions (dimensional collapse).

No gradient flows through them; they travel with the step's other metrics (no extra host sync).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def collapse_metrics(embeddings: jax.Array) -> dict:
  """embeddings: [N, E] (the online embeddings of every view) -> {'embedding_std', 'embedding_rank'}."""
  x = jax.lax.stop_gradient(embeddings.astype(jnp.float32))
  centred = x - x.mean(0, keepdims=True)
  s = jnp.linalg.svd(centred, compute_uv=False)
  p = s / jnp.maximum(s.sum(), 1e-12)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-30)), 0.0))
  return {"embedding_std": jnp.mean(jnp.std(x, axis=0)), "embedding_rank": jnp.exp(entropy)}
