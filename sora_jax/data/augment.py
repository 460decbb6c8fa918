"""Temporally consistent clip augmentation (TF ops, stateless randomness).

One draw per clip for every op, shared by all its frames (so motion is the only thing that changes
within a clip), independent across views because each view has its own key. The option
`per_frame_jitter` draws the colour jitter per frame instead (as DPC does).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  crop_scale: tuple[float, float] = (0.5, 1.0)
  aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5
  color_jitter_prob: float = 0.8
  color_jitter_strength: float = 0.5
  per_frame_jitter: bool = False
  grayscale_prob: float = 0.2
  blur_prob: float = 0.0
  solarize_prob: float = 0.0

  @classmethod
  def from_config(cls, config) -> "AugmentConfig":
    a = config.data.augment
    return cls(crop_scale=tuple(float(v) for v in a.crop_scale), flip_prob=float(a.flip_prob),
               color_jitter_prob=float(a.color_jitter_prob),
               color_jitter_strength=float(a.color_jitter_strength), per_frame_jitter=bool(a.per_frame_jitter),
               grayscale_prob=float(a.grayscale_prob), blur_prob=float(a.blur_prob),
               solarize_prob=float(a.solarize_prob))


def _u(key, shape=(), lo=0.0, hi=1.0):
  return tf.random.stateless_uniform(shape, seed=key, minval=lo, maxval=hi)


def crop_box(key, scale, ratio):
  """A random-resized-crop box [y0, x0, y1, x1] in relative coordinates (area fraction in `scale`,
  aspect ratio in `ratio`, log-uniform), as in Inception/SimCLR."""
  k1, k2, k3, k4 = tf.unstack(tf.random.experimental.stateless_split(key, 4))
  area = _u(k1, (), scale[0], scale[1])
  log_r = _u(k2, (), math.log(ratio[0]), math.log(ratio[1]))
  r = tf.exp(log_r)
  w = tf.minimum(tf.sqrt(area * r), 1.0)
  h = tf.minimum(tf.sqrt(area / r), 1.0)
  y0 = _u(k3) * (1.0 - h)
  x0 = _u(k4) * (1.0 - w)
  return tf.stack([y0, x0, y0 + h, x0 + w])


def _grayscale(x):
  return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)


def color_jitter(x, key, strength: float, per_frame: bool):
  """float [T, H, W, 3] in [0, 1]: brightness, contrast, saturation, hue (SimCLR's strengths)."""
  t = tf.shape(x)[0]
  shape = tf.stack([t, 1, 1, 1]) if per_frame else tf.constant([1, 1, 1, 1])
  kb, kc, ks, kh = tf.unstack(tf.random.experimental.stateless_split(key, 4))
  s = strength
  b = _u(kb, shape, -0.8 * s, 0.8 * s)
  c = _u(kc, shape, max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)
  sat = _u(ks, shape, max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)
  hue = _u(kh, shape, -0.2 * s, 0.2 * s)
  x = x + b
  mean = tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True)
  if not per_frame:
    mean = tf.reduce_mean(mean, axis=0, keepdims=True)
  x = (x - mean) * c + mean
  g = _grayscale(x)
  x = tf.clip_by_value(g + (x - g) * sat, 0.0, 1.0)
  if per_frame:
    x = tf.map_fn(lambda a: tf.image.adjust_hue(a[0], a[1][0, 0, 0]), (x, hue), fn_output_signature=tf.float32)
  else:
    x = tf.image.adjust_hue(x, hue[0, 0, 0, 0])
  return tf.clip_by_value(x, 0.0, 1.0)


def gaussian_blur(x, key, size: int):
  """float [T, H, W, 3]: separable Gaussian blur, sigma in [0.1, 2.0] * size / 224 * 10 (SimCLR scaled)."""
  sigma = _u(key, (), 0.1, 2.0) * max(size / 224.0, 0.15)
  radius = max(1, size // 20)
  d = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-0.5 * (d / sigma) ** 2)
  k = k / tf.reduce_sum(k)
  kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
  ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
  x = tf.nn.depthwise_conv2d(x, kx, [1, 1, 1, 1], "SAME")
  return tf.nn.depthwise_conv2d(x, ky, [1, 1, 1, 1], "SAME")


def augment_clip(clip, key, size: int, cfg: AugmentConfig):
  """uint8 [T, H, W, 3] -> uint8 [T, S, S, 3], one random draw per op for the whole clip."""
  keys = tf.unstack(tf.random.experimental.stateless_split(key, 8))
  t = tf.shape(clip)[0]
  box = crop_box(keys[0], cfg.crop_scale, cfg.aspect_ratio)
  x = tf.image.crop_and_resize(tf.cast(clip, tf.float32) / 255.0, tf.tile(box[None], [t, 1]),
                               tf.range(t), [size, size], method="bilinear")
  if cfg.flip_prob > 0:
    x = tf.cond(_u(keys[1]) < cfg.flip_prob, lambda: tf.reverse(x, [2]), lambda: x)
  if cfg.color_jitter_prob > 0 and cfg.color_jitter_strength > 0:
    x = tf.cond(_u(keys[2]) < cfg.color_jitter_prob,
                lambda: color_jitter(x, keys[3], cfg.color_jitter_strength, cfg.per_frame_jitter), lambda: x)
  if cfg.grayscale_prob > 0:
    x = tf.cond(_u(keys[4]) < cfg.grayscale_prob, lambda: tf.tile(_grayscale(x), [1, 1, 1, 3]), lambda: x)
  if cfg.blur_prob > 0:
    x = tf.cond(_u(keys[5]) < cfg.blur_prob, lambda: gaussian_blur(x, keys[6], size), lambda: x)
  if cfg.solarize_prob > 0:
    x = tf.cond(_u(keys[7]) < cfg.solarize_prob, lambda: tf.where(x < 0.5, x, 1.0 - x), lambda: x)
  x = tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)
  return tf.ensure_shape(x, [None, size, size, 3])
