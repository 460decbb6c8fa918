"""Clip sampling: which frame indices form each clip (TF ops, stateless, inside tf.data).

A clip of T frames with stride s spans (T-1)*s+1 frames. Videos shorter than that repeat their
last frame (indices are clamped), so every video yields full clips.
"""

from __future__ import annotations

import tensorflow as tf


def span(num_frames: int, stride: int) -> int:
  return (num_frames - 1) * stride + 1


def _frames_from_starts(starts, n, num_frames, stride):
  """starts int32 [C] -> int32 [C, T] clamped to [0, n-1]; stride an int or one per clip."""
  strides = tf.reshape(tf.constant(stride, tf.int32), [-1, 1])
  offs = tf.range(num_frames, dtype=tf.int32)[None, :] * strides
  return tf.minimum(starts[:, None] + offs, n - 1)


def eval_indices(n, num_frames: int, stride: int, num_clips: int):
  """Uniformly spaced clips over a video of n frames (one clip: centred): int32 [C, T]."""
  n = tf.cast(n, tf.int32)
  room = tf.maximum(n - span(num_frames, stride), 0)
  if num_clips == 1:
    starts = tf.reshape(room // 2, [1])
  else:
    frac = tf.linspace(0.0, 1.0, num_clips)
    starts = tf.cast(tf.round(frac * tf.cast(room, tf.float32)), tf.int32)
  return _frames_from_starts(starts, n, num_frames, stride)


def train_indices(n, num_frames: int, stride: int, num_views: int, key, *, sampling: str = "random",
                  view_gap: str = "uniform", view_strides: tuple = ()):
  """Start frames of V views of one video: int32 [V, T].

  view_strides (one per view; () = `stride` for all): views of different time scales, as in LSTCL
  (a view spanning the whole action beside a shorter one). Each view then starts uniformly among
  the starts that keep it inside the video (random) or at its centre (centred).

  random: the gaps between view 0 and each other view are drawn from `view_gap` (uniform over the
  possible gaps, or 'decreasing' with distance as in CVRL), then view 0's start uniformly among the
  starts that keep every view inside the video. uniform: views evenly spaced; centred: all views
  at the centre (they then differ only by augmentation).
  """
  n = tf.cast(n, tf.int32)
  if view_strides:
    rooms = tf.maximum(n - tf.constant([span(num_frames, s) for s in view_strides], tf.int32), 0)
    if sampling == "centred":
      starts = rooms // 2
    else:
      u = tf.random.stateless_uniform([num_views], seed=key)
      starts = tf.minimum(tf.cast(tf.floor(u * tf.cast(rooms + 1, tf.float32)), tf.int32), rooms)
    return _frames_from_starts(starts, n, num_frames, tuple(view_strides))
  room = tf.maximum(n - span(num_frames, stride), 0)
  if sampling == "centred":
    starts = tf.fill([num_views], room // 2)
  elif sampling == "uniform":
    if num_views == 1:
      starts = tf.reshape(room // 2, [1])
    else:
      starts = tf.cast(tf.round(tf.linspace(0.0, 1.0, num_views) * tf.cast(room, tf.float32)), tf.int32)
  else:
    k_gap, k_start = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    u = tf.random.stateless_uniform([num_views - 1], seed=k_gap)
    g = tf.cast(room + 1, tf.float32)
    if view_gap == "decreasing":  # density ∝ (room + 1 - t): inverse CDF of a linear ramp
      gaps = g * (1.0 - tf.sqrt(1.0 - u))
    else:
      gaps = g * u
    gaps = tf.minimum(tf.cast(tf.floor(gaps), tf.int32), room)
    gaps = tf.concat([tf.zeros([1], tf.int32), gaps], 0)
    free = room - tf.reduce_max(gaps)  # view 0 may start anywhere in [0, free]
    s0 = tf.random.stateless_uniform([], seed=k_start, minval=0, maxval=free + 1, dtype=tf.int32)
    starts = s0 + gaps
  return _frames_from_starts(starts, n, num_frames, stride)


def short_side_size(h, w, size: int):
  """int32 (H', W'): the size `resize_short_side` gives H x W frames (H, W when min(H, W) == size)."""
  hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
  scale = tf.cast(size, tf.float32) / tf.minimum(hf, wf)
  return (tf.maximum(tf.cast(tf.round(hf * scale), tf.int32), size),
          tf.maximum(tf.cast(tf.round(wf * scale), tf.int32), size))


def crop_offsets(h, w, size: int, num_crops: int) -> list:
  """(top, left) of each of `eval_crops`' crops of H x W frames: the centre, or the start, centre and
  end of the long side (both offsets centred when square)."""
  if num_crops == 1:
    return [((h - size) // 2, (w - size) // 2)]
  return [(tf.where(h > w, (h - size) * pos // 2, (h - size) // 2),
           tf.where(h > w, (w - size) // 2, (w - size) * pos // 2)) for pos in (0, 1, 2)]


def resize_short_side(frames, size: int):
  """uint8 [N, H, W, 3] -> uint8 [N, H', W', 3] with min(H', W') == size (bilinear, antialiased)."""
  shape = tf.shape(frames)
  h, w = shape[1], shape[2]

  def resize():
    nh, nw = short_side_size(h, w, size)
    out = tf.image.resize(frames, tf.stack([nh, nw]), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  return tf.cond(tf.equal(tf.minimum(h, w), size), lambda: frames, resize)


def eval_crops(frames, size: int, num_crops: int):
  """uint8 [N, H, W, 3] -> uint8 [K, N, S, S, 3]: resize short side to S, then the centre crop
  (K=1) or 3 crops at the start, centre and end of the long side (K=3)."""
  frames = resize_short_side(frames, size)
  shape = tf.shape(frames)
  offsets = crop_offsets(shape[1], shape[2], size, num_crops)
  return tf.stack([frames[:, oy:oy + size, ox:ox + size] for oy, ox in offsets], 0)
