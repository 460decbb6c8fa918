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
- `group_norm`: GroupNorm (+ residual + ReLU) with a written-out gradient on CPU, two passes over
  the activations each way (`group_norm.fused`): forward + gradient 1.2-1.3x faster there than
  autodiff of flax's module on the large layers (`bench/accelerator.py --layers`), the default
  config's train step 446 -> 414 ms (`bench/accelerator.py --configs default --ab`). Flax's module
  elsewhere until an accelerator measures the fused one faster (`MODE=mfu bench/on_accelerator.sh`).
  A third form, Pallas (Triton) kernels that read the activations once each way
  (`group_norm_pallas`), only where forced (`forced(group_norm="pallas")`, one group a program, or
  "pallas_wide", 32-byte rows; on NVIDIA GPUs; Pallas's interpreter on CPU, for tests; the fused
  form elsewhere) until `--layers` measures it on a GPU.
- `max_pool3x3s2`: the ImageNet stem's 3x3 stride-2 SAME max-pool; on CPU its gradient is computed
  from the input and output (each window's first maximum takes its gradient, as XLA's
  select-and-scatter does), 3.2x (float32) and 1.6x (bfloat16) faster there than XLA's
  select-and-scatter (`--layers`); XLA's elsewhere, until measured.
- `depthwise_conv`: a kxk depthwise convolution (EfficientNet's), SAME padding: XLA's grouped
  convolution everywhere but on CPU, where it is k*k shifted multiply-adds (fused elementwise work in
  both directions): forward + gradients 7-47x faster there than XLA:CPU's grouped convolution on
  EfficientNet-Lite0's layers at 1024 frames of 32 px, e.g. 16x16x96 k3 s2 2334 -> 231 ms
  (`bench/accelerator.py --layers --layer-frames 1024 --layer-size 32 --layer-dtype float32`); the
  `imagenet` config's train step 3.8 -> 16.7 clips/s.
- `dot_product_attention`: `jax.nn.dot_product_attention`, XLA's fused softmax(QK^T)V everywhere and
  cuDNN's fused (flash) kernel on NVIDIA GPUs where its dtype and head size allow. cuDNN cannot be
  traced on a machine without it, so this choice is made when the model is built
  (`attention_implementation`).
"""

from __future__ import annotations

import contextlib
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sora_jax.models import group_norm as _gn, group_norm_pallas as _gn_pallas

_NHWC = ("NHWC", "HWIO", "NHWC")

# Implementations forced by `forced(...)` (benchmarks and tests); empty = chosen per platform.
_FORCED: dict = {}
_CHOICES = {"group_norm": ("fused", "flax", "pallas", "pallas_wide"), "stem_pool": ("masked", "xla"),
            "depthwise": ("taps", "xla")}


@contextlib.contextmanager
def forced(**choices: str):
  """Within this block, models traced use the named implementations on every platform:
  `forced(group_norm="fused" | "flax" | "pallas" | "pallas_wide", stem_pool="masked" | "xla",
  depthwise="taps" | "xla")`. For side-by-side benchmarks (`bench/accelerator.py --ab`) and tests;
  without it each platform gets its measured best. JAX's trace caches are cleared on entry and exit:
  a function traced outside is traced again inside."""
  unknown = set(choices) - set(_CHOICES)
  if unknown:
    raise ValueError(f"forced(): unknown kernel(s) {sorted(unknown)}; known: group_norm, stem_pool, depthwise")
  for kernel, choice in choices.items():
    if choice not in _CHOICES[kernel]:
      raise ValueError(f"forced({kernel}={choice!r}): choose one of {', '.join(_CHOICES[kernel])}")
  before = dict(_FORCED)
  _FORCED.update(choices)
  jax.clear_caches()
  try:
    yield
  finally:
    _FORCED.clear()
    _FORCED.update(before)
    jax.clear_caches()


def _by_platform(name: str, args, cpu, default, choices: dict):
  """cpu(*args) on CPU and default(*args) elsewhere, at lowering time, unless `forced`."""
  if name in _FORCED:
    return choices[_FORCED[name]](*args)
  return lax.platform_dependent(*args, cpu=cpu, default=default)

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


def _with_gradient(pool, gradient):
  """`pool` whose gradient is `gradient(x, y, dy)`, from the pool's input x and output y."""
  f = jax.custom_vjp(pool)

  def forward(x):
    y = pool(x)
    return y, (x, y)

  f.defvjp(forward, lambda saved, dy: (gradient(*saved, dy),))
  return f


def _pool2x2_gradient(x, y, dy):
  n, h, w, c = x.shape
  hh, ww = h // 2, w // 2
  windows = x[:, : hh * 2, : ww * 2].reshape(n, hh, 2, ww, 2, c)
  mask = windows == y[:, :, None, :, None, :]
  share = dy / mask.sum(axis=(2, 4)).astype(dy.dtype)  # ties split the gradient, as jnp.max's does
  dx = jnp.where(mask, share[:, :, None, :, None, :], jnp.zeros((), dy.dtype)).reshape(n, hh * 2, ww * 2, c)
  return jnp.pad(dx, ((0, 0), (0, h - hh * 2), (0, w - ww * 2), (0, 0)))


_max_pool_masked = _with_gradient(_max_pool_plain, _pool2x2_gradient)


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


def group_norm(x, scale, bias, groups: int, *, residual=None, relu: bool = False):
  """`relu?(GroupNorm(x) + residual?)` for x [N, ..., C] (flax's GroupNorm: float32 statistics,
  epsilon 1e-6), output in x's dtype. The fused form (own gradient) on CPU, flax's elsewhere."""
  def fused(x, scale, bias, residual):
    return _gn.fused(x, scale, bias, residual, groups, relu)

  def flax(x, scale, bias, residual):
    return _gn.reference(x, scale, bias, residual, groups, relu)

  def pallas(per_program):
    return lambda *args: lax.platform_dependent(
        *args, cpu=lambda *a: _gn_pallas.pallas(*a, groups, relu, True, per_program),
        cuda=lambda *a: _gn_pallas.pallas(*a, groups, relu, False, per_program), default=fused)

  return _by_platform("group_norm", (x, scale, bias, residual), fused, flax,
                      {"fused": fused, "flax": flax, "pallas": pallas(1), "pallas_wide": pallas("wide")})


def _pool3x3_padding(size: int) -> tuple[int, int]:
  total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)  # SAME for a 3-wide window, stride 2
  return total // 2, total - total // 2


def _pool3x3_xla(x):
  pads = ((0, 0), _pool3x3_padding(x.shape[1]), _pool3x3_padding(x.shape[2]), (0, 0))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pads)


def _pool3x3_gradient(x, y, dy):
  (top, bottom), (left, right) = _pool3x3_padding(x.shape[1]), _pool3x3_padding(x.shape[2])
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-jnp.inf)
  n, ho, wo, c = y.shape
  hp, wp = xp.shape[1], xp.shape[2]  # 2 * ho + 1, 2 * wo + 1
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, jnp.float32)  # up to 4 windows add into a position: once rounded
  g, zero = dy.astype(jnp.float32), jnp.zeros((), jnp.float32)
  for i in range(3):
    for j in range(3):  # row-major: the first maximum of a window takes its gradient
      tap = lax.slice(xp, (0, i, j, 0), (n, i + 2 * ho - 1, j + 2 * wo - 1, c), (1, 2, 2, 1))
      hit = (tap == y) & ~taken
      taken = taken | hit
      dxp = dxp + lax.pad(jnp.where(hit, g, zero), zero,
                          ((0, 0, 0), (i, hp - i - 2 * ho + 1, 1), (j, wp - j - 2 * wo + 1, 1), (0, 0, 0)))
  return dxp[:, top: top + x.shape[1], left: left + x.shape[2]].astype(dy.dtype)


_pool3x3_masked = _with_gradient(_pool3x3_xla, _pool3x3_gradient)


def max_pool3x3s2(x):
  """The ImageNet stem's max-pool: 3x3 window, stride 2, SAME padding, [N, H, W, C] ->
  [N, ceil(H/2), ceil(W/2), C] (= nn.max_pool(x, (3, 3), (2, 2), "SAME")). On CPU the gradient is
  computed from x and the output instead of XLA's select-and-scatter; the same values."""
  return _by_platform("stem_pool", (x,), _pool3x3_masked, _pool3x3_xla,
                      {"masked": _pool3x3_masked, "xla": _pool3x3_xla})


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow's (and XLA's) SAME padding of one side: the odd row or column goes after."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _depthwise_xla(x, k, stride: int):
  return lax.conv_general_dilated(x, k, (stride, stride), "SAME", dimension_numbers=_NHWC,
                                  feature_group_count=x.shape[-1])


def _depthwise_taps(x, k, stride: int):
  n, h, w, c = x.shape
  size = k.shape[0]
  (top, bottom), (left, right) = same_padding(h, size, stride), same_padding(w, size, stride)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  ho, wo = -(-h // stride), -(-w // stride)
  out = jnp.zeros((n, ho, wo, c), jnp.promote_types(x.dtype, jnp.float32))
  for i in range(size):
    for j in range(size):
      tap = lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                      (1, stride, stride, 1))
      out = out + tap * k[i, j, 0].astype(out.dtype)
  return out.astype(x.dtype)


def depthwise_conv(x, k, stride: int = 1):
  """kxk depthwise convolution, SAME padding: x [N, H, W, C], k [k, k, 1, C] -> [N, ceil(H/s), ceil(W/s), C]
  (= lax.conv_general_dilated with feature_group_count=C). Shifted multiply-adds on CPU, XLA's
  grouped convolution elsewhere."""
  taps = functools.partial(_depthwise_taps, stride=stride)
  xla = functools.partial(_depthwise_xla, stride=stride)
  return _by_platform("depthwise", (x, k), taps, xla, {"taps": taps, "xla": xla})
