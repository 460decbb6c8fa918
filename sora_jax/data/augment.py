"""Temporally consistent clip augmentation (TF ops, stateless randomness).

One draw per clip for every op, shared by all its frames (so motion is the only thing that changes
within a clip), independent across views because each view has its own key. The option
`per_frame_jitter` draws the colour jitter per frame instead (as DPC does).
"""

from __future__ import annotations

import math

import tensorflow as tf

# The config as the ops read it and the jitter's maxima: shared with the device's ops, which import no TF.
from sora_jax.data.device_augment import PACKED, AugmentConfig, jitter_magnitudes  # noqa: F401


def _u(key, shape=(), lo=0.0, hi=1.0):
  return tf.random.stateless_uniform(shape, seed=key, minval=lo, maxval=hi)


_NUM_PARAMS = 16  # uniforms per view: crop (4), flip, jitter gate + 4 strengths, gray, blur gate + sigma, solarise


def draw_params(key, num_views: int, num_frames: int, cfg: AugmentConfig) -> dict:
  """Every random number of V views' augmentation, from one key: view v's row is a function of
  (key, v) only. Returns dict of float32 tensors with leading dim V."""
  u = _u(key, [num_views, _NUM_PARAMS])
  b_max, c_max, s_max, h_max = jitter_magnitudes(cfg)

  def scale(x, lo, hi):
    return lo + (hi - lo) * x

  area = scale(u[:, 0], *cfg.crop_scale)
  r = tf.exp(scale(u[:, 1], math.log(cfg.aspect_ratio[0]), math.log(cfg.aspect_ratio[1])))
  w = tf.minimum(tf.sqrt(area * r), 1.0)
  h = tf.minimum(tf.sqrt(area / r), 1.0)
  y0, x0 = u[:, 2] * (1.0 - h), u[:, 3] * (1.0 - w)
  jitter = u[:, 6:10]  # brightness, contrast, saturation, hue: per clip [V, 1, 4] or per frame [V, T, 4]
  if cfg.per_frame_jitter:
    jitter = _u(tf.random.experimental.stateless_fold_in(key, tf.constant(7, tf.int64)), [num_views, num_frames, 4])
  else:
    jitter = jitter[:, None, :]
  flip = u[:, 4] < cfg.flip_prob
  x_a, x_b = tf.where(flip, x0 + w, x0), tf.where(flip, x0, x0 + w)  # x1 < x0: crop_and_resize mirrors
  return {
      "box": tf.stack([y0, x_a, y0 + h, x_b], -1),  # [V, 4], flip folded in
      "flip": tf.cast(flip, tf.float32),
      "jitter": tf.cast(u[:, 5] < cfg.color_jitter_prob, tf.float32),
      "brightness": scale(jitter[..., 0], -b_max, b_max),
      "contrast": scale(jitter[..., 1], max(0.0, 1 - c_max), 1 + c_max),
      "saturation": scale(jitter[..., 2], max(0.0, 1 - s_max), 1 + s_max),
      "hue": scale(jitter[..., 3], -h_max, h_max),
      "gray": tf.cast(u[:, 10] < cfg.grayscale_prob, tf.float32),
      "blur": tf.cast(u[:, 11] < cfg.blur_prob, tf.float32),
      "sigma": scale(u[:, 12], 0.1, 2.0),
      "solarize": tf.cast(u[:, 13] < cfg.solarize_prob, tf.float32),
  }


def pack_params(params: dict, num_views: int, num_frames: int):
  """draw_params' colour draws (without "box") -> float32 [V, T, 9] in device_augment.PACKED's order,
  per-clip draws repeated over the frames: what `data.augment.on: device` sends to the step."""
  cols = [tf.broadcast_to(tf.reshape(tf.cast(params[k], tf.float32), [num_views, -1]), [num_views, num_frames])
          for k in PACKED]
  return tf.stack(cols, -1)


def crop_views(frames, box, num_frames: int, size: int):
  """uint8 [V*T, H, W, 3] (view-major) + boxes [V, 4] -> uint8 [V, T, S, S, 3]: one crop per view."""
  v = tf.shape(box)[0]
  boxes = tf.repeat(box, num_frames, axis=0)
  out = tf.image.crop_and_resize(tf.cast(frames, tf.float32), boxes, tf.range(v * num_frames), [size, size])
  out = tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)
  return tf.reshape(out, [v, num_frames, size, size, 3])


_LUMA = (0.299, 0.587, 0.114)


def _brightness_contrast_saturation(x, p, per_frame: bool):
  """float [n, T, S, S, 3] -> SimCLR's brightness (y = x + b), contrast (y = (y - m) * c + m, m the
  mean luma of y over the clip, or the frame if per_frame) and saturation (y = g + (y - g) * s, g
  the luma of y), unclipped, as one affine colour map per clip (or frame): y = c M x + k with
  M = s I + (1 - s) 1 luma^T and k = (c b + (1 - c) m) (s + (1 - s) sum(luma)). One pass over the
  pixels instead of eight (the map is exact algebra; floats round differently, within 1e-6)."""
  n, t = tf.shape(x)[0], tf.shape(x)[1]
  b, c, s = (tf.convert_to_tensor(p[k])[..., None, None] for k in ("brightness", "contrast", "saturation"))
  luma = tf.constant(_LUMA)
  frame_mean = tf.reduce_mean(_grayscale(x), [2, 3, 4])  # [n, T]
  mean = frame_mean if per_frame else tf.reduce_mean(frame_mean, 1, keepdims=True)
  m = mean[..., None, None] + b * tf.reduce_sum(luma)  # mean luma after the brightness shift
  a = c * (s * tf.eye(3) + (1.0 - s) * luma[None, :])  # [n, T or 1, 3, 3]: row i makes channel i
  k = (c * b + (1.0 - c) * m) * (s + (1.0 - s) * tf.reduce_sum(luma))  # [n, T or 1, 1, 1]
  y = tf.matmul(tf.reshape(x, tf.stack([n, t, -1, 3])), a, transpose_b=True) + k
  return tf.reshape(y, tf.shape(x))


def _grayscale(x):
  """[..., 3] -> [..., 1] luma (a matmul: much faster than a reduction over a size-3 axis)."""
  shape = tf.shape(x)
  y = tf.matmul(tf.reshape(x, [-1, 3]), tf.constant(_LUMA)[:, None])
  return tf.reshape(y, tf.concat([shape[:-1], [1]], 0))


def _blur(x, sigma, size: int):
  """float [N, T, S, S, 3], sigma [N] (relative; scaled to the frame size) -> blurred, per-clip kernels."""
  radius = max(1, size // 16)
  n, t = tf.shape(x)[0], tf.shape(x)[1]
  sig = sigma * (size / 32.0)
  d = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-0.5 * (d[:, None] / sig[None, :]) ** 2)
  k = k / tf.reduce_sum(k, 0, keepdims=True)  # [K, N]
  k = tf.repeat(k, 3, axis=1)  # [K, N*3], channel-major per clip
  y = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), tf.stack([t, size, size, n * 3]))
  y = tf.nn.depthwise_conv2d(y, k[None, :, :, None], [1, 1, 1, 1], "SAME")
  y = tf.nn.depthwise_conv2d(y, k[:, None, :, None], [1, 1, 1, 1], "SAME")
  return tf.transpose(tf.reshape(y, tf.stack([t, size, size, n, 3])), [3, 0, 1, 2, 4])


def _adjust_hue(x, delta, per_frame: bool):
  """float [n, T, S, S, 3] in [0, 1], hue deltas [n, 1] (or [n, T] per frame) -> hue shifted. TF's
  fused rgb -> hsv -> shift -> rgb kernel, one call per clip (or frame: its delta is a scalar): 0.6x
  the CPU of rgb_to_hsv, add, hsv_to_rgb over the whole batch, and equal to them within 1e-6."""
  shape = tf.shape(x)
  if per_frame:
    x = tf.reshape(x, tf.concat([[-1], shape[2:]], 0))
  y = tf.map_fn(lambda a: tf.image.adjust_hue(a[0], a[1]), (x, tf.reshape(delta, [-1])), fn_output_signature=tf.float32)
  return tf.reshape(y, shape)


def apply_batch(video, params: dict, cfg: AugmentConfig):
  """uint8 [N, T, S, S, 3] (cropped, flipped) + params with leading dim N -> uint8, vectorised over clips;
  each op runs only on the clips that draw it (gathered, transformed, scattered back). The blur
  convolves each of its clips on its own, since a convolution's rounding depends on how many clips
  it sees: so a clip comes out the same whatever else is in the batch."""
  size = video.shape[2]
  x = tf.cast(video, tf.float32) / 255.0

  brightness, contrast, saturation, hue = jitter_magnitudes(cfg)

  def jitter(x, p):  # an op whose maxima are all 0 is the identity: not run
    if brightness or contrast or saturation:
      x = tf.clip_by_value(_brightness_contrast_saturation(x, p, cfg.per_frame_jitter), 0.0, 1.0)
    if hue:
      x = tf.clip_by_value(_adjust_hue(x, p["hue"], cfg.per_frame_jitter), 0.0, 1.0)
    return x

  def when(name, fn, x):
    chosen = tf.reshape(tf.where(params[name] > 0), [-1])  # the clips that draw this op

    def apply():
      sub = {k: tf.gather(v, chosen) for k, v in params.items()}
      return tf.tensor_scatter_nd_update(x, chosen[:, None], fn(tf.gather(x, chosen), sub))
    return tf.cond(tf.size(chosen) > 0, apply, lambda: x)

  def blur(x, p):
    return tf.map_fn(lambda a: _blur(a[0][None], a[1][None], size)[0], (x, p["sigma"]), fn_output_signature=tf.float32)

  if cfg.color_jitter_prob > 0 and any(jitter_magnitudes(cfg)):
    x = when("jitter", jitter, x)
  if cfg.grayscale_prob > 0:
    x = when("gray", lambda x, p: tf.tile(_grayscale(x), [1, 1, 1, 1, 3]), x)
  if cfg.blur_prob > 0:
    x = when("blur", blur, x)
  if cfg.solarize_prob > 0:
    x = when("solarize", lambda x, p: tf.where(x >= 0.5, 1.0 - x, x), x)
  return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def augment_clip(clip, key, size: int, cfg: AugmentConfig):
  """uint8 [T, H, W, 3] -> uint8 [T, S, S, 3]: one clip, one random draw per op for all its frames."""
  t = clip.shape[0] if clip.shape[0] is not None else tf.shape(clip)[0]
  params = draw_params(key, 1, t, cfg)
  cropped = crop_views(clip, params["box"], t, size)
  return apply_batch(cropped, params, cfg)[0]
