"""Per-frame 2D encoders: images [N, H, W, C] -> vectors [N, D] (the seed CNN, ResNet-18/34; EfficientNet-Lite0
in efficientnet.py, the ViT in vit.py, the shared layers in layers.py).

The video encoder folds time into the batch axis, so these never see T. NHWC is XLA's native
layout on CPU and GPU; no transposes are needed.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.models import kernels, nf_resnet
from sora_jax.models.efficientnet import EfficientNetLite0
from sora_jax.models.kernels import max_pool2x2
from sora_jax.models.layers import Conv3x3, Norm, scaled, spatial_pool
from sora_jax.models.nf_resnet import NFBlock, WSConv
from sora_jax.models.tubelet import make_tubelet
from sora_jax.models.vit import make_vit


class SeedCNN(nn.Module):
  """The reference design's frame net: 3x [3x3 conv -> ReLU -> 2x2 max-pool], global average pool.

  [N, H, W, C] -> [N, 256 * width]. Channels 64/128/256 at width 1.0.
  """
  width: float = 1.0
  channels: Sequence[int] = (64, 128, 256)
  norm: str = "none"
  pool: str = "mean"
  last_pool: bool = True  # False: the last stage's map before its max-pool (2x finer; per-actor features)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, c in enumerate(self.channels):
      x = Conv3x3(scaled(c, self.width), use_bias=self.norm == "none", dtype=self.dtype, name=f"conv{i}")(x)
      pool = max_pool2x2 if self.last_pool or i < len(self.channels) - 1 else (lambda y: y)
      if self.norm == "group":  # the ReLU in GroupNorm's passes over x: no pass of its own
        x = pool(Norm(self.norm, self.dtype, name=f"norm{i}")(x, train, relu=True))
      else:  # = max_pool(relu(x)), with a quarter of the ReLU's work
        x = nn.relu(pool(Norm(self.norm, self.dtype, name=f"norm{i}")(x, train)))
    return spatial_pool(x, self.pool)


class BasicBlock(nn.Module):
  """ResNet basic block: two 3x3 convs with a (projected) shortcut. [N, H, W, Cin] -> [N, H/s, W/s, C]."""
  channels: int
  strides: int = 1
  norm: str = "none"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    bias = self.norm == "none"
    if self.strides == 1:
      y = Conv3x3(self.channels, use_bias=bias, dtype=self.dtype, name="Conv_0")(x)
    else:
      y = nn.Conv(self.channels, (3, 3), (self.strides, self.strides), padding="SAME", use_bias=bias,
                  dtype=self.dtype, name="Conv_0")(x)
    y = Norm(self.norm, self.dtype)(y, train, relu=True)
    y = Conv3x3(self.channels, use_bias=bias, dtype=self.dtype, name="Conv_1")(y)
    if x.shape[-1] != self.channels or self.strides != 1:
      x = nn.Conv(self.channels, (1, 1), (self.strides, self.strides), use_bias=bias, dtype=self.dtype,
                  name="shortcut")(x)
      x = Norm(self.norm, self.dtype, name="shortcut_norm")(x, train)
    return Norm(self.norm, self.dtype, name="Norm_1")(y, train, residual=x.astype(self.dtype), relu=True)


class ResNet2D(nn.Module):
  """ResNet-18/34 layout with a width multiplier. [N, H, W, C] -> [N, 512 * width].

  stem 'small' (3x3 stride 1, for 32-64 px frames) or 'imagenet' (7x7 stride 2 + 3x3 max-pool).
  """
  depth: int = 18
  width: float = 1.0
  norm: str = "none"
  stem: str = "small"
  pool: str = "mean"
  remat: str = "none"  # "block": each basic block recomputed in the backward pass (same parameters)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}[self.depth]
    # A block's activations are recomputed from its input during the backward pass: only the block
    # inputs of every frame stay alive (argument 2, `train`, is a Python bool).
    if self.norm == "ws":
      return self._normalisation_free(x, blocks)
    block = nn.remat(BasicBlock, static_argnums=(2,)) if self.remat == "block" else BasicBlock
    bias = self.norm == "none"
    c0 = scaled(64, self.width)
    if self.stem == "imagenet":
      x = nn.Conv(c0, (7, 7), (2, 2), padding="SAME", use_bias=bias, dtype=self.dtype, name="stem")(x)
      x = kernels.max_pool3x3s2(Norm(self.norm, self.dtype, name="stem_norm")(x, train, relu=True))
    else:
      x = Conv3x3(c0, use_bias=bias, dtype=self.dtype, name="stem")(x)
      x = Norm(self.norm, self.dtype, name="stem_norm")(x, train, relu=True)
    for stage, n in enumerate(blocks):
      c = scaled(64 * 2 ** stage, self.width)
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        x = block(c, strides, self.norm, self.dtype, name=f"stage{stage}_block{b}")(x, train)
    return spatial_pool(x, self.pool)

  def _normalisation_free(self, x, blocks):
    """norm='ws': the same layout with NF-ResNet blocks (models/nf_resnet.py), no normalisation layer."""
    block = nn.remat(NFBlock, static_argnums=(2,)) if self.remat == "block" else NFBlock
    imagenet = self.stem == "imagenet"
    x = WSConv(scaled(64, self.width), (7, 7) if imagenet else (3, 3), 2 if imagenet else 1, self.dtype,
               name="stem")(x)
    x = Norm("none", self.dtype, name="stem_norm")(x, relu=True) * nf_resnet.GAMMA
    x = kernels.max_pool3x3s2(x) if imagenet else x
    beta = 1.0
    for stage, n in enumerate(blocks):
      c = scaled(64 * 2 ** stage, self.width)
      for b in range(n):
        strides = 2 if stage > 0 and b == 0 else 1
        projected = x.shape[-1] != c or strides != 1
        x = block(c, strides, beta, self.dtype, name=f"stage{stage}_block{b}")(x, False)
        beta = nf_resnet.next_beta(beta, projected)
    x = Norm("none", self.dtype, name="final_act")(x, relu=True) * nf_resnet.GAMMA
    return spatial_pool(x, self.pool)


def map_frame_encoder(m, dtype):
  """(the frame encoder returning its finest map of the last stage [N, h, w, C], map -> the frame
  features `make_frame_encoder` gives: the same numbers, the same parameters). The seed CNN's map is
  taken before its last max-pool (relu and max-pool commute exactly), the others' as they end."""
  if m.frame_encoder == "seed_cnn":
    net = SeedCNN(width=m.width, norm=m.norm, pool="none", last_pool=False, dtype=dtype, name="frame_encoder")
    return net, lambda x: spatial_pool(max_pool2x2(x), m.frame_pool)
  return make_frame_encoder(m, dtype, "none"), lambda x: spatial_pool(x, m.frame_pool)


def make_frame_encoder(m, dtype, pool: str | None = None, name: str = "frame_encoder") -> nn.Module:
  """Frame encoder named by `config.model.frame_encoder`; pool (default model.frame_pool) 'none'
  returns its last feature map [N, h, w, C]; `name`: its parameters' scope."""
  pool = pool or m.frame_pool
  if m.frame_encoder == "seed_cnn":
    return SeedCNN(width=m.width, norm=m.norm, pool=pool, dtype=dtype, name=name)
  if m.frame_encoder == "resnet":
    return ResNet2D(depth=m.resnet_depth, width=m.width, norm=m.norm, stem=m.resnet_stem,
                    pool=pool, remat=m.remat_frames, dtype=dtype, name=name)
  if m.frame_encoder == "efficientnet_lite0":
    return EfficientNetLite0(width=m.width, norm=m.norm, pool=pool, dtype=dtype, name=name)
  if m.frame_encoder == "vit":
    return make_vit(m, dtype, pool, name)
  if m.frame_encoder == "tubelet":  # whole clips [B, T, H, W, C] -> [B, T, D] (models/tubelet.py)
    return make_tubelet(m, dtype, name)
  raise ValueError(f"unknown frame encoder {m.frame_encoder!r}")
