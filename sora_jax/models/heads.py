"""Heads on top of the temporal model: projection (-> L2-normalised embedding), classifier, predictor."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.linalg import l2_normalize


class ProjectionHead(nn.Module):
  """MLP of `layers` Dense layers (ReLU between; 1 = a single linear layer) -> [..., embed_dim].

  Returns the un-normalised projection; the caller normalises.
  """
  hidden: int
  layers: int
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.layers - 1):
      x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f"dense{i}")(x))
    return nn.Dense(self.embed_dim, dtype=self.dtype, name=f"dense{self.layers - 1}")(x)


class Classifier(nn.Module):
  """Linear classifier on the pooled vector: [B, D'] -> logits [B, C] (float32)."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes, dtype=self.dtype, name="dense")(x).astype(jnp.float32)


class Predictor(nn.Module):
  """DPC-style future predictor.

  frames [B, T, D] -> targets [B, T, E] (normalised per-step projections: what is predicted);
  sequence [B, T, D'] -> predictions [B, T, K, E] where predictions[:, t, k-1] predicts targets[:, t+k].
  """
  steps: int
  hidden: int
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, frames, sequence):
    b, t, _ = sequence.shape
    targets = nn.Dense(self.embed_dim, dtype=self.dtype, name="target_proj")(frames)
    y = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="pred_hidden")(sequence))
    y = nn.Dense(self.steps * self.embed_dim, dtype=self.dtype, name="pred_out")(y)
    predictions = y.reshape(b, t, self.steps, self.embed_dim)
    return l2_normalize(targets), l2_normalize(predictions)
