"""Normalisation-free ResNet blocks (`model.norm=ws`; Brock et al. 2021, NF-ResNets): weight-standardised
convolutions and residual branches scaled so the activations keep unit variance without any
normalisation layer, and so without the memory-bound passes GroupNorm costs on an accelerator
(bench/roofline.py: a ResNet's ceiling with them is the convolutions').

- `WSConv`: the kernel standardised per output channel, (w - mean) / (std * sqrt(fan_in)), times a
  learned gain: a unit-variance input gives a unit-variance output at any width.
- `NFBlock` (pre-activation): `x + alpha * skip_gain * f(relu(x / beta) * GAMMA)`, where beta is the
  expected standard deviation of x (tracked analytically: each block adds alpha^2 to the variance, a
  projected shortcut resets it to 1) and GAMMA rescales the ReLU to unit variance. `skip_gain` starts
  at 0 (SkipInit), so each block starts as the identity.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.kernels import conv3x3
from sora_jax.models.layers import Norm

GAMMA = float(np.sqrt(2.0 / (1.0 - 1.0 / np.pi)))  # std(relu(z)) = 1 / GAMMA for z ~ N(0, 1)
ALPHA = 0.2  # the residual branches' share of the variance added per block


def standardize(kernel, gain, eps: float = 1e-4):
  """[kh, kw, in, out] -> per output channel mean 0 and variance 1 / fan_in, times gain [out]."""
  fan_in = np.prod(kernel.shape[:-1])
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain


class WSConv(nn.Module):
  """A SAME convolution with a weight-standardised kernel (parameters kernel, gain, bias)."""
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: int = 1
  dtype: Any = jnp.float32
  padding: str = "SAME"

  @nn.compact
  def __call__(self, x):
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    kernel = self.param("kernel", nn.initializers.normal(1.0), shape, jnp.float32)
    gain = self.param("gain", nn.initializers.ones, (self.features,), jnp.float32)
    w = standardize(kernel, gain).astype(self.dtype)
    x = x.astype(self.dtype)
    if shape[:2] == (3, 3) and self.strides == 1:
      y = conv3x3(x, w)
    else:
      y = jax.lax.conv_general_dilated(x, w, (self.strides,) * 2, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)


class NFBlock(nn.Module):
  """Pre-activation basic block without normalisation. [N, H, W, Cin] -> [N, H/s, W/s, C]."""
  channels: int
  strides: int = 1
  beta: float = 1.0  # expected std of the input
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    out = Norm("none", self.dtype, name="act_in")(x * (1.0 / self.beta), relu=True) * GAMMA
    shortcut = x
    if x.shape[-1] != self.channels or self.strides != 1:
      shortcut = WSConv(self.channels, (1, 1), self.strides, self.dtype, name="shortcut")(out)
    y = WSConv(self.channels, (3, 3), self.strides, self.dtype, name="Conv_0")(out)
    y = Norm("none", self.dtype, name="act_mid")(y, relu=True) * GAMMA
    y = WSConv(self.channels, (3, 3), 1, self.dtype, name="Conv_1")(y)
    skip_gain = self.param("skip_gain", nn.initializers.zeros, (), jnp.float32)
    return Norm("none", self.dtype, name="residual")(y * (ALPHA * skip_gain).astype(self.dtype), residual=shortcut)


def next_beta(beta: float, projected: bool) -> float:
  """Expected std after a block whose input had std `beta`: a projected shortcut restarts from unit variance."""
  return float(np.sqrt((1.0 if projected else beta ** 2) + ALPHA ** 2))
