"""The conditional video generator: a factorised space-time Transformer over patches (DiT-style).

`VideoGenerator()(x, t, cond, drop)`: a noisy clip x [B, T, H, W, 3] (float, data in [-1, 1]), its
flow time t [B] in [0, 1] and a condition vector cond [B, E] (the frozen encoder's embedding of a
video) -> the predicted clean clip [B, T, H, W, 3] (objectives/generate.py defines the flow, its
velocity from this prediction, and the sampler).

Each frame is cut into p x p patches (tokens [B, T, N, D], N = (H/p)(W/p)) with learned spatial and
temporal position embeddings; every block attends within each frame (over N), then across frames at
each patch position (over T), then applies an MLP, each modulated by the condition (adaLN-zero:
shift, scale and a gate per sub-layer from time + condition, the gates zero at init so each block
starts as the identity). Classifier-free guidance: `drop` [B] bool replaces those rows' condition by
a learned null vector (training drops at random; sampling runs both and mixes them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.kernels import attention_fn, attention_implementation
from sora_jax.models.video_encoder import build_encoder_unchecked, default_batch_shape


def time_features(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal features of the flow time t [B] in [0, 1] -> [B, dim]."""
  half = dim // 2
  freqs = np.exp(-np.log(10000.0) * np.arange(half) / half).astype(np.float32)
  angles = (1000.0 * t)[:, None] * freqs[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B, T, H, W, C] -> [B, T, (H/p)(W/p), p*p*C]."""
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, h: int, w: int) -> jax.Array:
  """The inverse of `patchify`: [B, T, N, p*p*C] -> [B, T, H, W, C]."""
  b, t, _, d = x.shape
  c = d // (p * p)
  x = x.reshape(b, t, h // p, w // p, p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, h, w, c)


def _modulate(x, shift, scale):
  """x [B, S, N, D]; shift, scale [B, D] (broadcast over S, N)."""
  return x * (1.0 + scale[:, None, None]) + shift[:, None, None]


class _Block(nn.Module):
  """Spatial attention, temporal attention, MLP; each pre-LN, modulated and gated by c [B, D]."""
  width: int
  num_heads: int
  attention: str
  dtype: Any = jnp.float32

  def _attend(self, x, name):  # x [G, L, D]: attention over L in each of G groups
    impl = self.attention
    if impl == "auto":
      impl = attention_implementation(self.dtype, self.width // self.num_heads, x.shape[1])
    return nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype, deterministic=True,
                                           attention_fn=attention_fn(False, impl), name=name)(x, x)

  @nn.compact
  def __call__(self, x, c):
    b, t, n, d = x.shape
    mod = nn.Dense(9 * d, kernel_init=nn.initializers.zeros, name="modulation")(nn.silu(c))
    (s1, k1, g1, s2, k2, g2, s3, k3, g3) = jnp.split(mod, 9, axis=-1)
    norm = lambda name: nn.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype, name=name)
    y = _modulate(norm("ln_space")(x), s1, k1)
    y = self._attend(y.reshape(b * t, n, d), "space").reshape(b, t, n, d)
    x = x + g1[:, None, None] * y
    y = _modulate(norm("ln_time")(x), s2, k2)
    y = y.transpose(0, 2, 1, 3).reshape(b * n, t, d)
    y = self._attend(y, "time").reshape(b, n, t, d).transpose(0, 2, 1, 3)
    x = x + g2[:, None, None] * y
    y = _modulate(norm("ln_mlp")(x), s3, k3)
    y = nn.Dense(4 * d, dtype=self.dtype, name="mlp_in")(y)
    y = nn.Dense(d, dtype=self.dtype, name="mlp_out")(nn.gelu(y))
    return x + g3[:, None, None] * y


class VideoGenerator(nn.Module):
  """(x [B, T, H, W, 3], t [B], cond [B, E], drop [B] bool | None) -> clean clip [B, T, H, W, 3] float32.
  H and W must be multiples of `patch`; the position embeddings are made for the clip shape it is
  initialised with (T and H x W: the data's)."""
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  patch: int = 4
  layout_rank: int = 0
  attention: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, t, cond, drop=None):
    b, frames, h, w, ch = x.shape
    p, d = self.patch, self.width
    null = self.param("null_condition", nn.initializers.normal(0.02), (cond.shape[-1],))
    if drop is not None:
      cond = jnp.where(drop[:, None], null[None].astype(cond.dtype), cond)
    # The condition at unit scale (an L2-normalised embedding's entries are ~1/sqrt(E), beside time
    # features of size ~1), through an MLP.
    cond = nn.LayerNorm(use_scale=False, use_bias=False, name="cond_norm")(cond.astype(jnp.float32))
    c = nn.Dense(d, name="cond_out")(nn.silu(nn.Dense(d, name="cond_in")(cond)))
    temb = nn.Dense(d, name="time_in")(time_features(t.astype(jnp.float32), d))
    c = c + nn.Dense(d, name="time_out")(nn.silu(temb))
    tokens = nn.Dense(d, dtype=self.dtype, name="patch_in")(patchify(x.astype(self.dtype), p))
    # ... also added to every token: the condition reaches the tokens from the first step (the adaLN
    # gates start at zero).
    tokens = tokens + nn.Dense(d, dtype=self.dtype, name="cond_tokens")(c)[:, None, None]
    if self.layout_rank:
      # ... and a layout: a vector per token position (frame, patch) from the condition, through a
      # rank-r bottleneck, so where the object is and where it moves is one linear map of the
      # condition away (with the same vector at every position, the network has to build the layout
      # from position embeddings and the condition in its blocks: the MSE decoder's error after
      # 300 steps was 0.0707 that way against 0.0519 with a full-rank layout).
      n, r = tokens.shape[2], self.layout_rank
      lay = nn.Dense(frames * n * r, kernel_init=nn.initializers.normal(0.02), name="layout_in")(c)
      lay = nn.Dense(d, dtype=self.dtype, name="layout_out")(lay.reshape(b, frames, n, r).astype(self.dtype))
      tokens = tokens + lay
    space = self.param("pos_space", nn.initializers.normal(0.02), tokens.shape[2:])
    time = self.param("pos_time", nn.initializers.normal(0.02), (frames, d))
    tokens = tokens + space[None, None] + time[None, :, None]
    for i in range(self.depth):
      tokens = _Block(d, self.num_heads, self.attention, self.dtype, name=f"block{i}")(tokens, c)
    shift, scale = jnp.split(nn.Dense(2 * d, kernel_init=nn.initializers.zeros, name="final_mod")(nn.silu(c)), 2, -1)
    y = _modulate(nn.LayerNorm(use_scale=False, use_bias=False, name="ln_final")(tokens), shift, scale)
    y = nn.Dense(p * p * ch, kernel_init=nn.initializers.zeros, name="patch_out")(y)
    return unpatchify(y.astype(jnp.float32), p, h, w)


def build_generator(config) -> VideoGenerator:
  """The generator of a (validated) generate config: config.generate's sizes, config.model.dtype."""
  g = config.generate
  return VideoGenerator(width=g.width, depth=g.depth, num_heads=g.num_heads, patch=g.patch_size,
                        layout_rank=g.layout_rank, dtype=jnp.dtype(config.model.dtype))


def condition_dim(config) -> int:
  """Width of the encoder output the generator is conditioned on (generate.condition)."""
  from_shape = jax.eval_shape(lambda: build_encoder_unchecked(config).init_with_output(
      jax.random.PRNGKey(0), jnp.zeros(default_batch_shape(config), jnp.uint8), train=False)[0])
  return int(from_shape[config.generate.condition].shape[-1])


def init_generator(config, key: jax.Array) -> dict:
  """The generator's parameters for clips of the config's data shape."""
  clip = jnp.zeros(default_batch_shape(config), jnp.float32)
  cond = jnp.zeros((1, condition_dim(config)), jnp.float32)
  return build_generator(config).init(key, clip, jnp.zeros((1,), jnp.float32), cond)["params"]
