"""GroupNorm (+ residual, + ReLU) in two passes over the activations forward and two backward.

`relu(group_norm(x) + residual)`, [N, ..., C] -> [N, ..., C], computes flax's `nn.GroupNorm`
(statistics in float32 from E[x] and E[x^2], epsilon 1e-6, per-channel scale and bias) followed by
the optional residual add and ReLU, with a gradient written out instead of differentiated:

- forward: one reduction (per-group sum and sum of squares) and one elementwise pass;
- backward: one reduction (per sample and channel: sum of g and of g * (x - mean), where g is the
  output gradient masked by the ReLU, recomputed from x) and one elementwise pass
  (dx = a * g + (x - mean) * p + q with per-sample, per-channel a, p, q).

Only the input, the residual (with ReLU) and per-group statistics are kept for the backward pass.
In bfloat16 the output is rounded once, after the residual add (flax rounds GroupNorm's output,
then the sum). `kernels.group_norm` picks this or flax's module per platform.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

EPSILON = 1e-6  # flax.linen.GroupNorm's default


def _per_channel(v, x, groups):
  """[N, G] -> broadcastable against x [N, ..., C] (each group's value on its C/G channels)."""
  v = jnp.repeat(v, x.shape[-1] // groups, axis=1)
  return v.reshape(v.shape[0], *([1] * (x.ndim - 2)), v.shape[1])


def statistics(x, groups: int):
  """Per-sample, per-group mean and variance [N, G] in float32 (flax's fast variance, clipped at 0)."""
  xg = x.reshape(*x.shape[:-1], groups, x.shape[-1] // groups).astype(jnp.float32)  # as flax: [N, ..., G, C/G]
  axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
  mean = xg.mean(axes)
  var = jnp.maximum(0.0, (xg * xg).mean(axes) - mean * mean)
  return mean, var


def _output(x, scale, bias, mean, rstd, groups, residual, relu):
  """flax's `(x - mean) * (rstd * scale) + bias`, then `+ residual` and ReLU, in float32."""
  y = (x.astype(jnp.float32) - _per_channel(mean, x, groups)) * (_per_channel(rstd, x, groups) * scale) + bias
  if residual is not None:
    y = y + residual.astype(jnp.float32)
  return jnp.maximum(y, 0.0) if relu else y


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def fused(x, scale, bias, residual, groups: int, relu: bool):
  """relu?(group_norm(x; scale, bias) + residual?) in x's dtype; `residual` may be None."""
  return _forward(x, scale, bias, residual, groups, relu)[0]


def _forward(x, scale, bias, residual, groups, relu):
  mean, var = statistics(x, groups)
  rstd = lax.rsqrt(var + EPSILON)
  y = _output(x, scale, bias, mean, rstd, groups, residual, relu).astype(x.dtype)
  if residual is not None and not relu:  # its gradient is dy: keep only its dtype
    residual = jnp.zeros((0,), residual.dtype)
  return y, (x, scale, bias, mean, rstd, residual)


def _backward(groups, relu, saved, dy):
  x, scale, bias, mean, rstd, residual = saved
  had_residual = residual is not None
  residual = residual if relu else None
  g = dy.astype(jnp.float32)
  if relu:  # the ReLU's mask from the recomputed pre-activation: its output was not kept
    g = jnp.where(_output(x, scale, bias, mean, rstd, groups, residual, False) > 0, g, 0.0)
  centred = x.astype(jnp.float32) - _per_channel(mean, x, groups)
  axes = tuple(range(1, x.ndim - 1))
  s_g = g.sum(axes)  # [N, C]
  s_gx = (g * centred).sum(axes)  # [N, C]
  n, c = s_g.shape
  rstd_c = jnp.repeat(rstd, c // groups, axis=1)
  d_scale = (s_gx * rstd_c).sum(0)
  d_bias = s_g.sum(0)
  count = x.size // (n * groups)  # elements per group
  # mean over the group of dL/dx_hat and of dL/dx_hat * x_hat, [N, G]
  mean_dxhat = (scale * s_g).reshape(n, groups, -1).sum(-1) / count
  mean_dxhat_xhat = (scale * s_gx * rstd_c).reshape(n, groups, -1).sum(-1) / count
  # dx = rstd * (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat))
  dx = (g * (_per_channel(rstd, x, groups) * scale)
        - centred * _per_channel(rstd * rstd * mean_dxhat_xhat, x, groups)
        - _per_channel(rstd * mean_dxhat, x, groups))
  d_residual = (g if relu else dy).astype(saved[-1].dtype) if had_residual else None
  return dx.astype(x.dtype), d_scale, d_bias, d_residual


fused.defvjp(_forward, _backward)


def reference(x, scale, bias, residual, groups: int, relu: bool):
  """flax's `nn.GroupNorm` (applied to these parameters, autodiff gives its gradient), then the
  residual add and ReLU in x's dtype."""
  y = nn.GroupNorm(num_groups=groups, epsilon=EPSILON, dtype=x.dtype).apply(
      {"params": {"scale": scale, "bias": bias}}, x)
  if residual is not None:
    y = y + residual
  return nn.relu(y) if relu else y  # its gradient at 0 is 0, as the fused mask's
