"""RoIAlign (He et al. 2017; Detectron2's `aligned=True`) as two small matrix products per box.

Each output bin averages `samples` x `samples` bilinear samples of the feature map. Bilinear
interpolation is separable and the samples of a bin form a grid, so the bin's average is
A_y[i] . F . A_x[j]^T, where A_y[i] (a row over the map's rows) is the mean over the bin's sample
rows of their interpolation weights (the hat max(0, 1 - |y - r|) at the clamped sample position;
samples beyond half a cell outside the map weigh 0, as in Detectron2). One einsum per batch of
boxes: matrix units do the work on an accelerator, no gather, and the gradient with respect to the
features is the transposed products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _axis_weights(lo, hi, n: int, size: int, samples: int):
  """lo, hi [...] normalised box sides -> [..., size, n]: each output bin's mean interpolation weight
  over the map's n cells along one axis."""
  start, length = lo * n - 0.5, (hi - lo) * n  # continuous cell coordinates (cell centres at integers)
  offsets = (jnp.arange(size)[:, None] + (jnp.arange(samples)[None, :] + 0.5) / samples) / size  # [size, s]
  pos = start[..., None, None] + offsets * length[..., None, None]  # [..., size, s]
  inside = (pos >= -1.0) & (pos <= n)
  pos = jnp.clip(pos, 0.0, n - 1.0)
  hat = jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - jnp.arange(n)))  # [..., size, s, n]
  return jnp.mean(hat * inside[..., None], axis=-2)


def roi_align(features: jax.Array, boxes: jax.Array, size: int = 2, samples: int = 2) -> jax.Array:
  """features [N, H, W, C], boxes [N, K, 4] (x0, y0, x1, y1) normalised to the frame -> [N, K, size,
  size, C] (float32 weights, the features' dtype out)."""
  _, h, w, _ = features.shape
  boxes = boxes.astype(jnp.float32)
  wy = _axis_weights(boxes[..., 1], boxes[..., 3], h, size, samples)  # [N, K, size, H]
  wx = _axis_weights(boxes[..., 0], boxes[..., 2], w, size, samples)  # [N, K, size, W]
  dtype = features.dtype
  return jnp.einsum("nkiy,nkjx,nyxc->nkijc", wy.astype(dtype), wx.astype(dtype), features,
                    preferred_element_type=jnp.float32).astype(dtype)
