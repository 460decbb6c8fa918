"""ViT frame encoder: frames [N, H, W, C] -> p x p patches -> one Dense (the patch embedding) ->
learned positions (+ a CLS token) -> pre-LN Transformer blocks -> [N, D], or the patch grid.

The blocks are the temporal model's (`temporal.Transformer`): `jax.nn.dot_product_attention` through
`kernels.attention_fn` (cuDNN's fused kernel on NVIDIA GPUs where it takes the shapes, so a pod config
pools by `mean` over an even number of patches rather than a CLS token), `scan` over layers and one
`remat` per block, and the parameter names FSDP's rules already shard (parallel/mesh.py). Dense layers
and attention are nearly all of a ViT's work, which is what lets it run near an accelerator's peak
where a ResNet with GroupNorm cannot (bench/roofline.py).
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax.numpy as jnp

from sora_jax.models.layers import spatial_pool
from sora_jax.models.temporal import Transformer

# (width, depth, heads) of the standard sizes (Dosovitskiy et al. 2021; Ti from DeiT); MLP 4 x width.
VIT_SIZES = {"Ti": (192, 12, 3), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16)}


class ViT(nn.Module):
  """[N, H, W, C] -> [N, width] (pool 'mean' over patches | 'cls' | 'flatten') or [N, H/p, W/p, width]
  (pool 'none'). H and W must be multiples of `patch`."""
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  patch: int = 16
  pool: str = "mean"
  remat: bool = False
  scan_layers: bool = False
  attention: str = "auto"
  dtype: Any = jnp.float32
  remat_policy: str = "nothing"

  @nn.compact
  def __call__(self, x, train: bool = False):
    n, h, w, _ = x.shape
    if h % self.patch or w % self.patch:
      raise ValueError(f"frames of {h}x{w} px do not split into {self.patch}x{self.patch} patches")
    gh, gw = h // self.patch, w // self.patch
    x = einops.rearrange(x, "n (gh p) (gw q) c -> n (gh gw) (p q c)", p=self.patch, q=self.patch)
    x = nn.Dense(self.width, dtype=self.dtype, name="patch_embed")(x)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (gh * gw, self.width), jnp.float32)
    x = x + pos.astype(x.dtype)
    cls = self.pool == "cls"
    if cls:
      token = self.param("cls_token", nn.initializers.normal(0.02), (self.width,), jnp.float32)
      x = jnp.concatenate([jnp.broadcast_to(token.astype(x.dtype), (n, 1, self.width)), x], axis=1)
    x = self.blocks(x)
    if cls:
      return x[:, 0]
    return spatial_pool(x.reshape(n, gh, gw, self.width), self.pool)

  def blocks(self, tokens):
    """[N, S, width] -> [N, S, width]: the pre-LN blocks and the final LayerNorm (called from `__call__`)."""
    return Transformer(self.width, self.depth, self.num_heads, causal=False, remat=self.remat,
                       scan_layers=self.scan_layers, attention=self.attention, dtype=self.dtype,
                       remat_policy=self.remat_policy, name="transformer")(tokens)


def make_vit(m, dtype, pool: str, name: str = "frame_encoder", cls: type = ViT, **fields) -> ViT:
  """The ViT `config.model` names (vit_size, vit_depth, vit_patch; remat_frames='block' recomputes
  each block in the backward pass, keeping what remat_policy names); `cls` a subclass with its `fields`."""
  width, depth, heads = VIT_SIZES[m.vit_size]
  return cls(width=width, depth=m.vit_depth or depth, num_heads=heads, patch=m.vit_patch, pool=pool,
             remat=m.remat_frames == "block", scan_layers=m.scan_layers, attention=m.attention, dtype=dtype,
             remat_policy=m.remat_policy, name=name, **fields)
