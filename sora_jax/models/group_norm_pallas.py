"""GroupNorm (+ residual, + ReLU) as Pallas kernels: one read of the activations forward and backward.

The same function and gradient as `group_norm.fused` (flax's statistics: float32 E[x] and E[x^2],
epsilon 1e-6), written as two Triton kernels, one program per (sample, group):

- forward: load the group's [H*W, C/G] block once, reduce it to its mean and variance, write
  `relu?((x - mean) * rstd * scale + bias + residual?)`; XLA needs a reduction pass and then an
  elementwise pass (two reads of x), since nothing can be written before the statistics exist.
- backward: load x, dy (and the residual, for the ReLU's mask) once, reduce them to the
  per-channel sums the gradient needs, write dx (and the residual's gradient); XLA reads them twice.

A group larger than `MAX_BLOCK` elements (the 112x112 stem of a 224 px ResNet) does not fit in one
program's registers: it is read in row blocks, twice (sums, then output), as XLA does, but within one
program, so the second read usually hits L2. Triton wants power-of-two tiles: rows and channels are
padded up and masked. On CPU the kernels run in Pallas's interpreter (tests only, slow); whether they
beat XLA's fusions on a GPU is what `bench/accelerator.py --layers` measures
(`kernels.forced(group_norm="pallas")`); no platform picks them by default.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from sora_jax.models.group_norm import EPSILON

MAX_BLOCK = 8192  # elements of one tile (rows x channels, padded): 32 float32 registers a thread at 8 warps


def _tiling(rows: int, width: int) -> tuple[int, int, int]:
  """(row block, padded width, row blocks) for a [rows, width] group."""
  width_pad = pl.next_power_of_2(width)
  block = min(pl.next_power_of_2(rows), max(MAX_BLOCK // width_pad, 1))
  return block, width_pad, pl.cdiv(rows, block)


class _Tile:
  """Loads and stores of row block i of a program's [rows, width] refs, padded and masked."""

  def __init__(self, rows, width, block, width_pad, i):
    r = i * block + jnp.arange(block)
    c = jnp.arange(width_pad)
    self.index = (r[:, None], c[None, :])
    self.mask = (r[:, None] < rows) & (c[None, :] < width)

  def load(self, ref):
    return plt.load(ref.at[self.index], mask=self.mask, other=0.0).astype(jnp.float32)

  def store(self, ref, value):
    plt.store(ref.at[self.index], value.astype(ref.dtype), mask=self.mask)


def _channels(ref, width, width_pad):
  c = jnp.arange(width_pad)
  return plt.load(ref.at[c], mask=c < width, other=0.0).astype(jnp.float32)[None, :]


def _blocks(rows, width, body, init):
  """body(tile, carry) over the group's row blocks; the tile of the last block is returned too."""
  block, width_pad, count = _tiling(rows, width)
  tile = functools.partial(_Tile, rows, width, block, width_pad)
  if count == 1:
    return body(tile(0), init)
  return lax.fori_loop(0, count, lambda i, carry: body(tile(i), carry), init)


def _forward_kernel(*refs, rows, width, relu, residual):
  x_ref, scale_ref, bias_ref, *rest = refs
  res_ref = rest.pop(0) if residual else None
  y_ref, mean_ref, rstd_ref = rest
  _, width_pad, count = _tiling(rows, width)
  scale, bias = _channels(scale_ref, width, width_pad), _channels(bias_ref, width, width_pad)

  def output(tile, x, mean, rstd):
    y = (x - mean) * (rstd * scale) + bias
    if residual:
      y = y + tile.load(res_ref)
    tile.store(y_ref, jnp.maximum(y, 0.0) if relu else y)

  n = rows * width
  if count == 1:  # the whole group in registers: one read
    tile = _Tile(rows, width, *_tiling(rows, width)[:2], 0)
    x = tile.load(x_ref)
    mean = jnp.sum(x) / n
    rstd = lax.rsqrt(jnp.maximum(jnp.sum(x * x) / n - mean * mean, 0.0) + EPSILON)
    output(tile, x, mean, rstd)
  else:
    def sums(tile, carry):
      x = tile.load(x_ref)
      return carry[0] + jnp.sum(x), carry[1] + jnp.sum(x * x)

    s1, s2 = _blocks(rows, width, sums, (jnp.float32(0), jnp.float32(0)))
    mean = s1 / n
    rstd = lax.rsqrt(jnp.maximum(s2 / n - mean * mean, 0.0) + EPSILON)
    _blocks(rows, width, lambda tile, c: (output(tile, tile.load(x_ref), mean, rstd), c)[1], 0)
  mean_ref[...] = mean
  rstd_ref[...] = rstd


def _backward_kernel(*refs, rows, width, relu, residual):
  x_ref, dy_ref, scale_ref, bias_ref, mean_ref, rstd_ref, *rest = refs
  res_ref = rest.pop(0) if residual and relu else None
  dx_ref, dres_ref, sg_ref, sgx_ref = rest if residual and relu else (rest[0], None, *rest[1:])
  _, width_pad, count = _tiling(rows, width)
  scale, bias = _channels(scale_ref, width, width_pad), _channels(bias_ref, width, width_pad)
  mean, rstd = mean_ref[...], rstd_ref[...]

  def grads(tile):
    """(g, x - mean): the output gradient masked by the ReLU (recomputed from x), the centred x."""
    centred = tile.load(x_ref) - mean
    g = tile.load(dy_ref)
    if relu:
      pre = centred * (rstd * scale) + bias
      if res_ref is not None:
        pre = pre + tile.load(res_ref)
      g = jnp.where(pre > 0, g, 0.0)
    return g, centred

  def write(tile, g, centred, s_g, s_gx):
    n = rows * width
    mean_dxhat = jnp.sum(scale * s_g) / n
    mean_dxhat_xhat = jnp.sum(scale * s_gx) * rstd / n
    tile.store(dx_ref, g * (rstd * scale) - centred * (rstd * rstd * mean_dxhat_xhat) - rstd * mean_dxhat)
    if dres_ref is not None:
      tile.store(dres_ref, g)

  if count == 1:  # one read of x, dy (and the residual)
    tile = _Tile(rows, width, *_tiling(rows, width)[:2], 0)
    g, centred = grads(tile)
    s_g, s_gx = jnp.sum(g, 0, keepdims=True), jnp.sum(g * centred, 0, keepdims=True)
    write(tile, g, centred, s_g, s_gx)
  else:
    def sums(tile, carry):
      g, centred = grads(tile)
      return carry[0] + jnp.sum(g, 0, keepdims=True), carry[1] + jnp.sum(g * centred, 0, keepdims=True)

    zero = jnp.zeros((1, width_pad), jnp.float32)
    s_g, s_gx = _blocks(rows, width, sums, (zero, zero))
    _blocks(rows, width, lambda tile, c: (write(tile, *grads(tile), s_g, s_gx), c)[1], 0)
  c = jnp.arange(width_pad)
  plt.store(sg_ref.at[c], s_g[0], mask=c < width)
  plt.store(sgx_ref.at[c], s_gx[0] * rstd, mask=c < width)  # d_scale's share of this sample


def _call(kernel, inputs, outputs, groups, interpret, **static):
  """pallas_call of kernel over a (sample, group) grid: inputs/outputs given as (array or shape, kind),
  kind 'act' [N, S, G, C/G], 'chan' [G, C/G], 'stat' [N, G], 'nchan' [N, G, C/G]."""
  width = static["width"]
  specs = {"act": pl.BlockSpec((None, static["rows"], None, width), lambda n, g: (n, 0, g, 0)),
           "chan": pl.BlockSpec((None, width), lambda n, g: (g, 0)),
           "stat": pl.BlockSpec((None, None), lambda n, g: (n, g)),
           "nchan": pl.BlockSpec((None, None, width), lambda n, g: (n, g, 0))}
  block, width_pad, _ = _tiling(static["rows"], width)
  warps = min(8, max(1, block * width_pad // 1024))
  n = inputs[0][0].shape[0]
  return pl.pallas_call(
      functools.partial(kernel, **static), grid=(n, groups),
      in_specs=[specs[k] for _, k in inputs], out_specs=[specs[k] for _, k in outputs],
      out_shape=[s for s, _ in outputs], interpret=interpret, name=kernel.__name__.strip("_"),
      compiler_params=None if interpret else plt.CompilerParams(num_warps=warps, num_stages=1),
  )(*(a for a, _ in inputs))


def _shapes(x, groups):
  n, c = x.shape[0], x.shape[-1]
  return n, math.prod(x.shape[1:-1]), c // groups


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def pallas(x, scale, bias, residual, groups: int, relu: bool, interpret: bool = False):
  """relu?(group_norm(x; scale, bias) + residual?) in x's dtype (x [N, ..., C]; residual may be None)."""
  return _forward(x, scale, bias, residual, groups, relu, interpret)[0]


def _forward(x, scale, bias, residual, groups, relu, interpret):
  n, rows, width = _shapes(x, groups)
  act = lambda a: (a.reshape(n, rows, groups, width), "act")  # noqa: E731
  chan = lambda a: (a.astype(jnp.float32).reshape(groups, width), "chan")  # noqa: E731
  stat = (jax.ShapeDtypeStruct((n, groups), jnp.float32), "stat")
  inputs = [act(x), chan(scale), chan(bias)] + ([act(residual)] if residual is not None else [])
  y, mean, rstd = _call(_forward_kernel, inputs, [(jax.ShapeDtypeStruct((n, rows, groups, width), x.dtype), "act"),
                                                  stat, stat],
                        groups, interpret, rows=rows, width=width, relu=relu, residual=residual is not None)
  kept = residual if relu else (None if residual is None else jnp.zeros((0,), residual.dtype))
  return y.reshape(x.shape), (x, scale, bias, mean, rstd, kept)


def _backward(groups, relu, interpret, saved, dy):
  x, scale, bias, mean, rstd, residual = saved
  n, rows, width = _shapes(x, groups)
  act = lambda a: (a.reshape(n, rows, groups, width), "act")  # noqa: E731
  chan = lambda a: (a.astype(jnp.float32).reshape(groups, width), "chan")  # noqa: E731
  has_residual, relu_residual = residual is not None, residual is not None and relu
  inputs = [act(x), act(dy), chan(scale), chan(bias), (mean, "stat"), (rstd, "stat")]
  inputs += [act(residual)] if relu_residual else []
  activation = (jax.ShapeDtypeStruct((n, rows, groups, width), x.dtype), "act")
  per_channel = (jax.ShapeDtypeStruct((n, groups, width), jnp.float32), "nchan")
  outputs = [activation] + ([(jax.ShapeDtypeStruct(activation[0].shape, residual.dtype), "act")] if relu_residual
                            else []) + [per_channel, per_channel]
  dx, *rest = _call(_backward_kernel, inputs, outputs, groups, interpret, rows=rows, width=width, relu=relu,
                    residual=relu_residual)
  d_residual = rest.pop(0).reshape(x.shape) if relu_residual else (dy.astype(residual.dtype) if has_residual
                                                                   else None)
  s_g, s_gx_rstd = rest
  return (dx.reshape(x.shape), s_gx_rstd.sum(0).reshape(-1).astype(scale.dtype),
          s_g.sum(0).reshape(-1).astype(bias.dtype), d_residual)


pallas.defvjp(_forward, _backward)
