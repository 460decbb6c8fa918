"""Layers the frame encoders share: a 3x3 conv through the per-platform kernel, the norms (none | group |
batch, with a fused residual and ReLU) and the spatial pools."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.models import kernels
from sora_jax.models.kernels import conv3x3


class Conv3x3(nn.Module):
  """Drop-in for nn.Conv(features, (3, 3), padding='SAME') (same parameter names and shapes)
  through `kernels.conv3x3`, the one place its kernel is chosen per platform."""
  features: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features), jnp.float32)
    y = conv3x3(x.astype(self.dtype), k.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
    return y


def scaled(channels: int, width: float) -> int:
  """Channel count after the width multiplier, at least 1."""
  return max(1, int(round(channels * width)))


def _groups(channels: int) -> int:
  """Largest group count <= 32 that divides `channels` (GroupNorm needs an exact split)."""
  for g in range(min(32, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1


class GroupNorm(nn.Module):
  """nn.GroupNorm's parameters (scale, bias) through `kernels.group_norm`, which also adds a residual
  and applies a ReLU in the same passes over the activations."""
  groups: int

  @nn.compact
  def __call__(self, x, residual=None, relu: bool = False):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return kernels.group_norm(x, scale, bias, self.groups, residual=residual, relu=relu)


class Norm(nn.Module):
  """'none' | 'group' | 'batch', then `+ residual` and ReLU if asked: `relu(norm(x) + residual)`.
  Batch statistics live in the mutable 'batch_stats' collection. Parameters keep nn.GroupNorm's and
  nn.BatchNorm's names. x is in `dtype` (the convolution's output)."""
  kind: str = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, *, residual=None, relu: bool = False):
    if self.kind == "group":
      return GroupNorm(_groups(x.shape[-1]), name="GroupNorm_0")(x.astype(self.dtype), residual, relu)
    if self.kind == "batch":
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
    elif self.kind != "none":
      raise ValueError(f"unknown norm {self.kind!r}")
    if residual is not None:
      x = residual + x
    return nn.relu(x) if relu else x


def spatial_pool(x, kind: str):
  """[N, h, w, C] -> [N, D]. 'mean' (global average, the reference design) keeps what is in the frame
  but not where; 'flatten' keeps the final grid (D = h*w*C), so the temporal model can see an object
  move, at the price of parameters tied to the frame size."""
  if kind == "mean":
    return jnp.mean(x, axis=(1, 2))
  if kind == "flatten":
    return x.reshape(x.shape[0], -1)
  if kind == "none":  # the map itself (per-actor features pool it at the actors' boxes)
    return x
  raise ValueError(f"unknown frame pool {kind!r}")
