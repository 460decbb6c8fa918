"""Kernels chosen per platform: the 3x3 convolution and attention over time.

Each function computes the same thing on every platform (equal up to float summation order); the
implementation is the one measured fastest there:
- `conv3x3`: on CPU the filter gradient is 9 plain matmuls, one per tap (XLA:CPU's backprop-filter
  convolution is about 2x slower, `../shared/notes/cpu_conv_breakdown.py`); on GPU and TPU the native
  convolution gradient (cuDNN, the TPU's convolution units). Picked when the step is lowered
  (`jax.lax.platform_dependent`), so a step exported for CUDA on a CPU machine holds the native one.
- `max_pool2x2`: a reshape + max everywhere; on CPU its gradient is a custom mask (each window's
  maxima share the output gradient, as jnp.max's gradient splits it), 3x faster there than XLA's
  gradient of the reduction (180 -> 56 ms for 128 frames of 64x64x64).
- `dot_product_attention`: `jax.nn.dot_product_attention`, XLA's fused softmax(QK^T)V everywhere and
  cuDNN's fused (flash) kernel on NVIDIA GPUs where its dtype and head size allow. cuDNN cannot be
  traced on a machine without it, so this choice is made when the model is built
  (`attention_implementation`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv3x3_native(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_NHWC)


@jax.custom_vjp
def _conv3x3_tap_matmuls(x, k):
  return _conv3x3_native(x, k)


def _taps_fwd(x, k):
  return _conv3x3_native(x, k), (x, k)


def _taps_bwd(res, dy):
  x, k = res
  dx = jax.vjp(lambda x: _conv3x3_native(x, k), x)[1](dy)[0]
  n, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  d = dy.reshape(-1, dy.shape[-1])
  taps = [lax.dot_general(xp[:, i:i + h, j:j + w].reshape(-1, c), d, (((0,), (0,)), ((), ())),
                          preferred_element_type=jnp.float32)
          for i in range(3) for j in range(3)]
  dk = jnp.stack(taps).reshape(3, 3, c, dy.shape[-1]).astype(k.dtype)
  return dx, dk


_conv3x3_tap_matmuls.defvjp(_taps_fwd, _taps_bwd)


def conv3x3(x, k, *, platform: str | None = None):
  """3x3 stride-1 SAME conv, [N, H, W, Ci] x [3, 3, Ci, Co] -> [N, H, W, Co]. `platform` forces one
  implementation ('cpu': per-tap filter gradient; anything else: native), for tests and benchmarks;
  None picks by the platform the step is lowered for."""
  if platform is not None:
    return (_conv3x3_tap_matmuls if platform == "cpu" else _conv3x3_native)(x, k)
  return lax.platform_dependent(x, k, cpu=_conv3x3_tap_matmuls, default=_conv3x3_native)


def _max_pool_plain(x):
  n, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


@jax.custom_vjp
def _max_pool_masked(x):
  return _max_pool_plain(x)


def _pool_fwd(x):
  y = _max_pool_plain(x)
  return y, (x, y)


def _pool_bwd(res, dy):
  x, y = res
  n, h, w, c = x.shape
  hh, ww = h // 2, w // 2
  windows = x[:, : hh * 2, : ww * 2].reshape(n, hh, 2, ww, 2, c)
  mask = windows == y[:, :, None, :, None, :]
  share = dy / mask.sum(axis=(2, 4)).astype(dy.dtype)  # ties split the gradient, as jnp.max's does
  dx = jnp.where(mask, share[:, :, None, :, None, :], jnp.zeros((), dy.dtype)).reshape(n, hh * 2, ww * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h - hh * 2), (0, w - ww * 2), (0, 0))),)


_max_pool_masked.defvjp(_pool_fwd, _pool_bwd)


def max_pool2x2(x, *, platform: str | None = None):
  """2x2 stride-2 max-pool, [N, H, W, C] -> [N, H//2, W//2, C]; odd sizes are cropped (PyTorch's
  MaxPool2d(2) floor mode), sides < 2 pass through. `platform` as in `conv3x3`."""
  if x.shape[1] < 2 or x.shape[2] < 2:
    return x
  if platform is not None:
    return (_max_pool_masked if platform == "cpu" else _max_pool_plain)(x)
  return lax.platform_dependent(x, cpu=_max_pool_masked, default=_max_pool_plain)


def attention_implementation(dtype, head_dim: int, length: int, backend: str | None = None) -> str:
  """'cudnn' on an NVIDIA GPU where cuDNN's flash kernel takes the shapes (half-precision activations,
  a head size that is a multiple of 8 up to 128, an even sequence length: JAX 0.11 refuses odd ones
  when training); 'xla' otherwise. `backend` defaults to JAX's default backend."""
  backend = backend or jax.default_backend()
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  fits = half and head_dim % 8 == 0 and head_dim <= 128 and length % 2 == 0
  return "cudnn" if backend == "gpu" and fits else "xla"


def attention_fn(causal: bool, implementation: str):
  """An `attention_fn` for `nn.MultiHeadDotProductAttention`: q, k, v [B, S, heads, head_dim] ->
  [B, S, heads, head_dim] through `jax.nn.dot_product_attention`; causal = position t sees <= t."""

  def attend(query, key, value, mask=None, dtype=None):
    if mask is not None:
      raise ValueError("pass causal=True instead of a mask: the fused kernels build it themselves")
    dtype = dtype or query.dtype
    return jax.nn.dot_product_attention(query.astype(dtype), key.astype(dtype), value.astype(dtype),
                                        is_causal=causal, implementation=implementation)

  return attend
