"""Kernels and XLA options chosen per platform: the 3x3 convolution, 2x2 max-pool, attention over time.

Each function computes the same thing on every platform (equal up to float summation order); the
implementation is the one measured fastest there:
- `conv3x3`: XLA's native convolution and its gradients everywhere (cuDNN on GPU, the convolution
  units on TPU, XLA's own Eigen kernels on CPU). On CPU that holds only with `compiler_options`:
  jax 0.10's XLA:CPU hands convolutions to YNNPACK by default, whose forward, input- and
  filter-gradient convolutions are 1.1-4.4x slower than Eigen's on the seed CNN's shapes
  (`bench/model_step.py --kernels`). A 9-matmul filter gradient used to stand in for YNNPACK's
  slowest one; with Eigen's the native one is faster (seed train step 1.45 s -> 0.97 s on 2 cores).
- `max_pool2x2`: a reshape + max everywhere; on CPU its gradient is a custom mask (each window's
  maxima share the output gradient, as jnp.max's gradient splits it), 2x faster there than XLA's
  gradient of the reduction (with ReLU, 216 -> 109 ms for 128 frames of 64x64x64).
- `dot_product_attention`: `jax.nn.dot_product_attention`, XLA's fused softmax(QK^T)V everywhere and
  cuDNN's fused (flash) kernel on NVIDIA GPUs where its dtype and head size allow. cuDNN cannot be
  traced on a machine without it, so this choice is made when the model is built
  (`attention_implementation`).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")

# jax 0.10.2's XLA:CPU default for this option is INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION and REDUCE
# (tests/test_kernels.py checks it): the same list without convolutions.
_YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"


def compiler_options(platform: str) -> dict:
  """XLA options for a jitted step that runs the model on `platform` ('cpu', 'gpu', 'tpu', or a
  mesh's device platform): `jax.jit(fn, compiler_options=compiler_options("cpu"))`. On CPU they keep
  convolutions on XLA's Eigen kernels (see the module doc); elsewhere there are none. The training
  step and the embedding function pass them; a step you jit yourself on CPU runs without them,
  slower (or set XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution)."""
  return dict(_cpu_options()) if platform == "cpu" else {}


@functools.cache
def _cpu_options() -> tuple:
  options = ((_YNN_OPTION, _YNN_WITHOUT_CONVOLUTIONS),)
  try:  # an XLA that no longer knows the option or its values: run with its defaults
    x = jax.device_put(np.zeros(2, np.float32), jax.local_devices(backend="cpu")[0])  # this process's
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(x).compile()
  except Exception as e:  # noqa: BLE001 - any refusal means: leave XLA's defaults alone
    logging.getLogger(__name__).warning("XLA:CPU refused %s (%s): convolutions stay with its default "
                                        "kernels, slower", _YNN_OPTION, str(e).splitlines()[0][:200])
    return ()
  return options


def conv3x3(x, k):
  """3x3 stride-1 SAME conv, [N, H, W, Ci] x [3, 3, Ci, Co] -> [N, H, W, Co]."""
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=_NHWC)


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
  MaxPool2d(2) floor mode), sides < 2 pass through. `platform` forces one implementation ('cpu':
  the masked gradient; anything else: the reduction's), for tests and benchmarks; None picks by the
  platform the step is lowered for (`jax.lax.platform_dependent`)."""
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
