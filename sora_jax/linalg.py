"""L2 normalisation: the one implementation, for numpy arrays on the host and jax arrays in jit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

EPS = 1e-6


def l2_normalize(x, axis: int = -1, eps: float = EPS):
  """x / ||x|| along `axis`, in float32: x * rsqrt(sum(x^2) + eps^2), so the gradient stays finite
  at 0 and a zero row stays zero. numpy in -> numpy out (on the host); a jax array or tracer ->
  jax.numpy (on the device)."""
  if isinstance(x, (np.ndarray, list, tuple)):
    x = np.asarray(x, np.float32)
    return x * np.reciprocal(np.sqrt(np.sum(x * x, axis=axis, keepdims=True) + np.float32(eps * eps)))
  x = x.astype(jnp.float32)
  return x * jnp.reciprocal(jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps * eps))


def half_means(x, axis: int):
  """x's mean over the first and over the second half of `axis` (the second holds the odd one out),
  stacked where `axis` was: [..., T, ...] -> [..., 2, ...]."""
  t = x.shape[axis]
  first, second = jnp.split(x, [t // 2], axis=axis)
  return jnp.stack([jnp.mean(first, axis), jnp.mean(second, axis)], axis)
