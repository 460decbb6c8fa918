"""GroupNorm (+ residual, + ReLU) as Pallas kernels: one read of the activations forward and backward.

The same function and gradient as `group_norm.fused` (flax's statistics: float32 E[x] and E[x^2],
epsilon 1e-6), written as two Triton kernels, one program per sample and `per_program` groups:

- forward: load the groups' [H*W, k*C/G] block once, reduce it to each group's mean and variance,
  write `relu?((x - mean) * rstd * scale + bias + residual?)`; XLA needs a reduction pass and then
  an elementwise pass (two reads of x), since nothing can be written before the statistics exist.
- backward: load x, dy (and the residual, for the ReLU's mask) once, reduce them to the
  per-channel sums the gradient needs, write dx (and the residual's gradient); XLA reads them twice.

A block larger than `MAX_BLOCK` elements (the 112x112 stem of a 224 px ResNet) does not fit in one
program's registers: it is read in row blocks, twice (sums, then output), as XLA does, but within one
program, so the second read usually hits L2. Triton wants power-of-two tiles: rows and channels are
padded up and masked. One group a program (`per_program=1`) reads rows of C/G channels, 4 bytes at
2 bfloat16 channels, strided by C: one read from HBM, but a 32-byte sector shared by neighbouring
programs through L2; `per_program="wide"` takes enough groups for 32-byte rows and so reads large
groups in row blocks. Which wins is for a GPU to say (`bench/accelerator.py --layers --pallas` times
both). On CPU the kernels run in Pallas's interpreter (tests only, slow); no platform picks them by
default (`kernels.forced(group_norm="pallas" | "pallas_wide")`).
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
ROW_BYTES = 32  # one memory sector: the row width "wide" programs read at least


def groups_per_program(groups: int, channels: int, itemsize: int, per_program) -> int:
  """1, or ("wide") the fewest groups that divide `groups` and span >= ROW_BYTES of a row."""
  if per_program != "wide":
    if groups % int(per_program):
      raise ValueError(f"per_program={per_program} does not divide the {groups} groups: use a divisor or 'wide'")
    return int(per_program)
  width = channels // groups
  return next(k for k in range(1, groups + 1) if groups % k == 0 and (k * width * itemsize >= ROW_BYTES
                                                                      or k == groups))


def _tiling(rows: int, width: int) -> tuple[int, int, int]:
  """(row block, padded width, row blocks) for a program's [rows, width] block."""
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


class _Program:
  """One program's block: `rows` x `width` channels in groups of `group` channels."""

  def __init__(self, rows, width, group):
    self.rows, self.width, self.group = rows, width, group
    self.block, self.width_pad, self.count = _tiling(rows, width)
    c = jnp.arange(self.width_pad)
    self.c, self.valid = c, c < width
    self.same = ((c[:, None] // group == c[None, :] // group) & self.valid[:, None]).astype(jnp.float32)

  def channels(self, ref):
    """A per-channel ref [width] as a [1, width_pad] row."""
    return plt.load(ref.at[self.c], mask=self.valid, other=0.0).astype(jnp.float32)[None, :]

  def store_channels(self, ref, value):
    plt.store(ref.at[self.c], value[0], mask=self.valid)

  def group_mean(self, per_channel):
    """[1, width_pad] per-channel sums -> each channel's group mean over rows x group elements."""
    return jnp.sum(per_channel[0][:, None] * self.same, axis=0)[None, :] / (self.rows * self.group)

  def tile(self, i):
    return _Tile(self.rows, self.width, self.block, self.width_pad, i)

  def blocks(self, body, init):
    """body(tile, carry) over the row blocks (for blocks read twice: a single one is read once instead)."""
    return lax.fori_loop(0, self.count, lambda i, carry: body(self.tile(i), carry), init)

  def column_sums(self, fn):
    """Per-channel sums [1, width_pad] of each of fn(tile)'s tiles over all rows."""
    zero = tuple(jnp.zeros((1, self.width_pad), jnp.float32) for _ in range(2))
    return self.blocks(lambda tile, acc: tuple(a + jnp.sum(v, 0, keepdims=True) for a, v in zip(acc, fn(tile))), zero)


def _forward_kernel(*refs, rows, width, group, relu, residual):
  x_ref, scale_ref, bias_ref, *rest = refs
  res_ref = rest.pop(0) if residual else None
  y_ref, mean_ref, rstd_ref = rest
  p = _Program(rows, width, group)
  scale, bias = p.channels(scale_ref), p.channels(bias_ref)

  def output(tile, x, mean, rstd):
    y = (x - mean) * (rstd * scale) + bias
    if residual:
      y = y + tile.load(res_ref)
    tile.store(y_ref, jnp.maximum(y, 0.0) if relu else y)

  def statistics(s1, s2):
    mean = p.group_mean(s1)
    return mean, lax.rsqrt(jnp.maximum(p.group_mean(s2) - mean * mean, 0.0) + EPSILON)

  if p.count == 1:  # the whole block in registers: one read
    tile = p.tile(0)
    x = tile.load(x_ref)
    mean, rstd = statistics(jnp.sum(x, 0, keepdims=True), jnp.sum(x * x, 0, keepdims=True))
    output(tile, x, mean, rstd)
  else:
    mean, rstd = statistics(*p.column_sums(lambda tile: (lambda x: (x, x * x))(tile.load(x_ref))))
    p.blocks(lambda tile, c: (output(tile, tile.load(x_ref), mean, rstd), c)[1], 0)
  p.store_channels(mean_ref, mean)
  p.store_channels(rstd_ref, rstd)


def _backward_kernel(*refs, rows, width, group, relu, residual):
  x_ref, dy_ref, scale_ref, bias_ref, mean_ref, rstd_ref, *rest = refs
  res_ref = rest.pop(0) if residual and relu else None
  dx_ref, dres_ref, sg_ref, sgx_ref = rest if residual and relu else (rest[0], None, *rest[1:])
  p = _Program(rows, width, group)
  scale, bias = p.channels(scale_ref), p.channels(bias_ref)
  mean, rstd = p.channels(mean_ref), p.channels(rstd_ref)

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
    mean_dxhat = p.group_mean(scale * s_g)
    mean_dxhat_xhat = p.group_mean(scale * s_gx) * rstd
    tile.store(dx_ref, g * (rstd * scale) - centred * (rstd * rstd * mean_dxhat_xhat) - rstd * mean_dxhat)
    if dres_ref is not None:
      tile.store(dres_ref, g)

  if p.count == 1:  # one read of x, dy (and the residual)
    tile = p.tile(0)
    g, centred = grads(tile)
    s_g, s_gx = jnp.sum(g, 0, keepdims=True), jnp.sum(g * centred, 0, keepdims=True)
    write(tile, g, centred, s_g, s_gx)
  else:
    s_g, s_gx = p.column_sums(lambda tile: (lambda g, c: (g, g * c))(*grads(tile)))
    p.blocks(lambda tile, c: (write(tile, *grads(tile), s_g, s_gx), c)[1], 0)
  p.store_channels(sg_ref, s_g)
  p.store_channels(sgx_ref, s_gx * rstd)  # d_scale's share of this sample


def _call(kernel, inputs, outputs, programs, interpret, **static):
  """pallas_call of kernel over a (sample, group block) grid; inputs/outputs as (array or shape, kind),
  kind 'act' [N, S, P, W] or 'chan' [P, W] (per channel) or 'nchan' [N, P, W] (per sample and channel)."""
  rows, width = static["rows"], static["width"]
  specs = {"act": pl.BlockSpec((None, rows, None, width), lambda n, j: (n, 0, j, 0)),
           "chan": pl.BlockSpec((None, width), lambda n, j: (j, 0)),
           "nchan": pl.BlockSpec((None, None, width), lambda n, j: (n, j, 0))}
  block, width_pad, _ = _tiling(rows, width)
  warps = min(8, max(1, block * width_pad // 1024))
  return pl.pallas_call(
      functools.partial(kernel, **static), grid=(inputs[0][0].shape[0], programs),
      in_specs=[specs[k] for _, k in inputs], out_specs=[specs[k] for _, k in outputs],
      out_shape=[s for s, _ in outputs], interpret=interpret, name=kernel.__name__.strip("_"),
      compiler_params=None if interpret else plt.CompilerParams(num_warps=warps, num_stages=1),
  )(*(a for a, _ in inputs))


def _layout(x, groups, per_program):
  """(programs, act, chan, static, out) for x [N, ..., C] cut into per-sample blocks of groups: the
  program count per sample, the arrays' block layouts, the kernels' static arguments, output shapes."""
  n, c = x.shape[0], x.shape[-1]
  k = groups_per_program(groups, c, jnp.dtype(x.dtype).itemsize, per_program)
  rows, programs, width = math.prod(x.shape[1:-1]), groups // k, k * (c // groups)
  act = lambda a: (a.reshape(n, rows, programs, width), "act")  # noqa: E731
  chan = lambda a: (a.astype(jnp.float32).reshape(programs, width), "chan")  # noqa: E731
  static = dict(rows=rows, width=width, group=c // groups)
  return programs, act, chan, static, (lambda dtype, kind: (jax.ShapeDtypeStruct(
      (n, rows, programs, width) if kind == "act" else (n, programs, width), dtype), kind))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def pallas(x, scale, bias, residual, groups: int, relu: bool, interpret: bool = False, per_program=1):
  """relu?(group_norm(x; scale, bias) + residual?) in x's dtype (x [N, ..., C]; residual may be None);
  `per_program`: groups a program (1 or "wide")."""
  return _forward(x, scale, bias, residual, groups, relu, interpret, per_program)[0]


def _forward(x, scale, bias, residual, groups, relu, interpret, per_program):
  programs, act, chan, static, out = _layout(x, groups, per_program)
  inputs = [act(x), chan(scale), chan(bias)] + ([act(residual)] if residual is not None else [])
  y, mean, rstd = _call(_forward_kernel, inputs, [out(x.dtype, "act"), out(jnp.float32, "nchan"),
                                                  out(jnp.float32, "nchan")],
                        programs, interpret, relu=relu, residual=residual is not None, **static)
  kept = residual if relu else (None if residual is None else jnp.zeros((0,), residual.dtype))
  return y.reshape(x.shape), (x, scale, bias, mean, rstd, kept)


def _backward(groups, relu, interpret, per_program, saved, dy):
  x, scale, bias, mean, rstd, residual = saved
  programs, act, chan, static, out = _layout(x, groups, per_program)
  relu_residual = residual is not None and relu
  inputs = [act(x), act(dy), chan(scale), chan(bias), (mean, "nchan"), (rstd, "nchan")]
  inputs += [act(residual)] if relu_residual else []
  outputs = [out(x.dtype, "act")] + ([out(residual.dtype, "act")] if relu_residual else [])
  dx, *rest = _call(_backward_kernel, inputs, outputs + [out(jnp.float32, "nchan")] * 2, programs, interpret,
                    relu=relu, residual=relu_residual, **static)
  d_residual = rest.pop(0).reshape(x.shape) if relu_residual else (
      None if residual is None else dy.astype(residual.dtype))
  s_g, s_gx_rstd = rest
  return (dx.reshape(x.shape), s_gx_rstd.sum(0).reshape(-1).astype(scale.dtype),
          s_g.sum(0).reshape(-1).astype(bias.dtype), d_residual)


pallas.defvjp(_forward, _backward)
