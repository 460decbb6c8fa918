"""Temporal models over the time axis: [B, T, D] frame vectors -> ([B, T, D'] sequence, [B, D'] pooled).

Recurrent layers project all T inputs in one matmul, then `nn.scan` runs only the hidden-state
update, so compile time does not grow with T and the parameter tree does not depend on T.
Pooling ('last' | 'mean' | 'cls' | 'last_step') lives here because 'last' depends on the
direction(s): for a bidirectional net it is the forward direction's last state with the backward
direction's first (each direction's final state); 'last_step' is the output at the last position
(PyTorch's `out[:, -1]`, the reference model's: its backward half has read only the last frame).
A CLS token is a learned input appended after the last frame, so causal models still see every
frame from it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.kernels import attention_fn, attention_implementation


class _LSTMStep(nn.Module):
  """One LSTM step given precomputed input gates gx [B, 4H]; carry (c, h) stays float32."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, gx):
    c, h = carry
    g = gx + nn.Dense(4 * self.hidden, use_bias=False, dtype=self.dtype, name="hidden")(h)
    i, f, u, o = jnp.split(g.astype(jnp.float32), 4, axis=-1)
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(u)
    h = nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class _GRUStep(nn.Module):
  """One GRU step (PyTorch/cuDNN form: reset gate applied after the hidden matmul). gx [B, 3H]."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, gx):
    gh = nn.Dense(3 * self.hidden, dtype=self.dtype, name="hidden")(h).astype(jnp.float32)
    xr, xz, xn = jnp.split(gx.astype(jnp.float32), 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = nn.sigmoid(xr + hr)
    z = nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h
    return h, h


class RecurrentLayer(nn.Module):
  """One direction of an LSTM/GRU layer: [B, T, F] -> [B, T, H]. reverse=True runs from T-1 to 0."""
  kind: str = "lstm"
  hidden: int = 128
  reverse: bool = False
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b = x.shape[0]
    gates = 4 if self.kind == "lstm" else 3
    gx = nn.Dense(gates * self.hidden, dtype=self.dtype, name="input")(x)  # [B, T, G*H]
    step = _LSTMStep if self.kind == "lstm" else _GRUStep
    scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1, reverse=self.reverse, unroll=self.unroll)
    zeros = jnp.zeros((b, self.hidden), jnp.float32)
    carry = (zeros, zeros) if self.kind == "lstm" else zeros
    _, hs = scan(self.hidden, self.dtype, name="cell")(carry, gx)
    return hs


class Recurrent(nn.Module):
  """Multi-layer, optionally bidirectional LSTM/GRU. [B, T, F] -> [B, T, H * (2 if bidirectional)]."""
  kind: str = "lstm"
  hidden: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  unroll: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_layers):
      fwd = RecurrentLayer(self.kind, self.hidden, False, self.unroll, self.dtype, name=f"layer{i}_fwd")(x)
      if self.bidirectional:
        bwd = RecurrentLayer(self.kind, self.hidden, True, self.unroll, self.dtype, name=f"layer{i}_bwd")(x)
        x = jnp.concatenate([fwd, bwd], axis=-1)
      else:
        x = fwd
    return x


def sinusoidal(length: int, dim: int) -> np.ndarray:
  """Fixed time position embedding [length, dim]: works for any T without new parameters."""
  half = max(dim // 2, 1)
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
  angles = np.arange(length)[:, None] * freqs[None, :]
  pe = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)[:, :dim]
  if pe.shape[1] < dim:
    pe = np.pad(pe, ((0, 0), (0, dim - pe.shape[1])))
  return pe.astype(np.float32)


class TransformerBlock(nn.Module):
  """Pre-LN block: x + MHA(LN(x)), then x + MLP(LN(x)). [B, S, H] -> [B, S, H]; returns (x, None) for scan.
  Attention is `kernels.attention_fn` (causal: position t attends to <= t) with `attention` as its
  implementation ('xla' | 'cudnn')."""
  hidden: int
  num_heads: int
  causal: bool = False
  attention: str = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, _=None):
    y = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype, deterministic=True,
                                        attention_fn=attention_fn(self.causal, self.attention),
                                        name="attn")(y, y)
    x = x + y
    y = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
    y = nn.Dense(4 * self.hidden, dtype=self.dtype, name="mlp_in")(y)
    y = nn.Dense(self.hidden, dtype=self.dtype, name="mlp_out")(nn.gelu(y))
    return x + y, None


# What a rematerialised block keeps for the backward pass (config.model.remat_policy): nothing but its
# input, or also the outputs of its dense layers (matmuls without batch dimensions: q/k/v, the attention's
# output projection, the MLP's two layers), so that only LayerNorm, attention and GELU are recomputed.
REMAT_POLICIES = {"nothing": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Transformer(nn.Module):
  """Transformer over time: [B, S, H] (already projected, positions added) -> [B, S, H].
  attention 'auto' = `kernels.attention_implementation` for these shapes and dtype on this backend;
  remat recomputes each block in the backward pass, keeping what `remat_policy` names (REMAT_POLICIES)."""
  hidden: int
  num_layers: int
  num_heads: int
  causal: bool = False
  remat: bool = False
  scan_layers: bool = False
  attention: str = "auto"
  dtype: Any = jnp.float32
  remat_policy: str = "nothing"

  @nn.compact
  def __call__(self, x):
    attention = self.attention
    if attention == "auto":
      attention = attention_implementation(self.dtype, self.hidden // self.num_heads, x.shape[1])
    block = TransformerBlock
    if self.remat:
      # Under scan the forward and backward passes are two loops, so XLA has nothing to merge between
      # them: the optimisation barrier that stops it merging the recomputation into the forward pass
      # only costs (jax.checkpoint's prevent_cse: "high overheads on some backends, especially GPU";
      # MaxText's choice too). Unrolled, the barrier is what keeps the recomputation a recomputation.
      block = nn.remat(TransformerBlock, policy=REMAT_POLICIES[self.remat_policy],
                       prevent_cse=not self.scan_layers)
    args = (self.hidden, self.num_heads, self.causal, attention, self.dtype)
    if self.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=nn.broadcast, length=self.num_layers)
      x, _ = stack(*args, name="layers")(x, None)
    else:
      for i in range(self.num_layers):
        x, _ = block(*args, name=f"layer{i}")(x)
    return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)


class TemporalModel(nn.Module):
  """config.model.temporal + pooling. frames [B, T, D] -> (sequence [B, T, D'], pooled [B, D'])."""
  kind: str = "lstm"
  hidden: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  num_heads: int = 4
  causal: bool = False
  remat: bool = False
  scan_layers: bool = False
  pooling: str = "last"
  attention: str = "auto"
  unroll: int = 1
  dtype: Any = jnp.float32
  remat_policy: str = "nothing"

  @nn.compact
  def __call__(self, frames):
    b, t, d = frames.shape
    x = frames
    if self.kind == "transformer":
      x = nn.Dense(self.hidden, dtype=self.dtype, name="input_proj")(x)
      x = x + jnp.asarray(sinusoidal(t, self.hidden), x.dtype)
    cls = self.pooling == "cls"
    if cls:  # one learned token after the last frame
      token = self.param("cls_token", nn.initializers.normal(0.02), (x.shape[-1],), jnp.float32)
      x = jnp.concatenate([x, jnp.broadcast_to(token.astype(x.dtype), (b, 1, x.shape[-1]))], axis=1)
    if self.kind in ("lstm", "gru"):
      y = Recurrent(self.kind, self.hidden, self.num_layers, self.bidirectional, self.unroll, self.dtype,
                    name="rnn")(x)
    elif self.kind == "transformer":
      y = Transformer(self.hidden, self.num_layers, self.num_heads, self.causal, self.remat,
                      self.scan_layers, self.attention, self.dtype, self.remat_policy, name="transformer")(x)
    else:
      y = x
    sequence = y[:, :t]
    if cls:
      pooled = y[:, t]
    elif self.pooling == "mean":
      pooled = jnp.mean(sequence, axis=1)
    elif self.kind in ("lstm", "gru") and self.bidirectional and self.pooling == "last":
      h = self.hidden  # forward's last state, backward's first position (its final state)
      pooled = jnp.concatenate([sequence[:, -1, :h], sequence[:, 0, h:]], axis=-1)
    else:
      pooled = sequence[:, -1]
    return sequence, pooled


def make_temporal(m, dtype, unroll: int = 1, name: str = "temporal") -> TemporalModel:
  return TemporalModel(kind=m.temporal, hidden=m.hidden_size, num_layers=m.num_layers,
                       bidirectional=m.bidirectional, num_heads=m.num_heads, causal=m.causal,
                       remat=m.remat, scan_layers=m.scan_layers, pooling=m.pooling, attention=m.attention,
                       unroll=unroll, dtype=dtype, remat_policy=m.remat_policy, name=name)
