"""The photometric augmentations on the accelerator (`data.augment.on: device`), inside the jitted step.

The host still decodes, picks the frames, crops, resizes and flips (`augment.crop_views`) and draws
every random number (`augment.draw_params`, packed by `augment.pack_params`); colour jitter,
grayscale, blur and solarisation then run here, in JAX, on the uint8 clips, as `augment.apply_batch`
runs them in TF: the same ops, draws and order, so each clip comes out as the host would make it, to
the rounding of a pixel level. Why: at the pod configs' clip shape these ops are about two thirds of
the host's CPU time per clip, and one accelerator step consumes clips faster than a host's cores can
augment them (bench/pod_input.py); here they are a few elementwise passes over the clips.

Every op acts on one clip at a time (no sum runs across clips), so a clip's pixels do not depend on
which other clips share its device: the same numbers on any number of processes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

# The packed parameters' last axis (augment.pack_params writes it): [..., T, len(PACKED)].
PACKED = ("jitter", "brightness", "contrast", "saturation", "hue", "gray", "blur", "sigma", "solarize")
_LUMA = np.array((0.299, 0.587, 0.114), np.float32)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """`config.data.augment` as the ops read it; its defaults are the schema's (`from_config`)."""
  crop_scale: tuple[float, float]
  flip_prob: float
  color_jitter_prob: float
  color_jitter_strength: float
  color_jitter: tuple[float, ...]  # (brightness, contrast, saturation, hue) maxima; () = SimCLR's x strength
  per_frame_jitter: bool
  grayscale_prob: float
  blur_prob: float
  solarize_prob: float
  aspect_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # of the crop box (not a config field)

  @classmethod
  def from_config(cls, config) -> "AugmentConfig":
    a = config.data.augment
    return cls(crop_scale=tuple(float(v) for v in a.crop_scale), flip_prob=float(a.flip_prob),
               color_jitter_prob=float(a.color_jitter_prob),
               color_jitter_strength=float(a.color_jitter_strength),
               color_jitter=tuple(float(v) for v in a.color_jitter),
               per_frame_jitter=bool(a.per_frame_jitter),
               grayscale_prob=float(a.grayscale_prob), blur_prob=float(a.blur_prob),
               solarize_prob=float(a.solarize_prob))


def jitter_magnitudes(cfg: AugmentConfig) -> tuple[float, float, float, float]:
  """(brightness delta, contrast, saturation, hue delta) maxima: `color_jitter` when given, else
  SimCLR's (0.8, 0.8, 0.8, 0.2) x strength. Brightness is additive on [0, 1] pixels, as in SimCLR, so
  dark frames saturate to black or white at strength 1; hue 0.5 draws any hue."""
  if cfg.color_jitter:
    return tuple(cfg.color_jitter)
  s = cfg.color_jitter_strength
  return 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s


def every_op_drawn(shape) -> np.ndarray:
  """Packed draws [*shape, 9] with every op drawn: the most the step does (benchmarks, memory figures)."""
  draws = dict(jitter=1.0, brightness=0.1, contrast=1.2, saturation=1.2, hue=0.1, gray=1.0, blur=1.0, sigma=1.0,
               solarize=1.0)
  return np.broadcast_to(np.array([draws[k] for k in PACKED], np.float32), (*shape, len(PACKED))).copy()


def _luma(x):
  """[..., 3] -> [...]. Multiply-adds, not a matmul: a float32 matmul runs at lower precision by default
  on GPUs (TF32) and TPUs (bfloat16 passes), which would move pixels by several levels."""
  return x[..., 0] * _LUMA[0] + x[..., 1] * _LUMA[1] + x[..., 2] * _LUMA[2]


def _bcs(x, b, c, s, per_frame: bool):
  """Brightness, contrast, saturation as one affine colour map (augment._brightness_contrast_saturation).
  x [n, T, S, S, 3]; b, c, s [n, T] (per clip: equal over T)."""
  frame_mean = jnp.mean(_luma(x), axis=(2, 3))  # [n, T]
  mean = frame_mean if per_frame else jnp.mean(frame_mean, axis=1, keepdims=True)
  b, c, s = b[..., None, None], c[..., None, None], s[..., None, None]  # [n, T, 1, 1]
  m = mean[..., None, None] + b * jnp.sum(_LUMA)
  a = c * (s * jnp.eye(3) + (1.0 - s) * _LUMA[None, :])  # [n, T, 3, 3]: row i makes channel i
  k = (c * b + (1.0 - c) * m) * (s + (1.0 - s) * jnp.sum(_LUMA))  # [n, T, 1, 1]
  a = a[:, :, None, None]  # [n, T, 1, 1, 3, 3]
  return sum(a[..., j] * x[..., j, None] for j in range(3)) + k[..., None]  # channel i: sum_j a_ij x_j + k


def _adjust_hue(x, delta):
  """RGB in [0, 1] -> HSV -> hue + delta (mod 1) -> RGB (tf.image.adjust_hue's result). delta [n, T]."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  v = jnp.max(x, axis=-1)
  span = v - jnp.min(x, axis=-1)
  s = jnp.where(v > 0, span / jnp.where(v > 0, v, 1.0), 0.0)
  safe = jnp.where(span > 0, span, 1.0)
  # the largest channel by argmax (the first of equals: r, g, b, as TF's kernel tests them), not by `v == r`:
  # XLA may compute x twice in different fusions, and two copies need not be bit-equal
  top = jnp.argmax(x, axis=-1)
  h = jnp.where(top == 0, (g - b) / safe, jnp.where(top == 1, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)) / 6.0
  h = jnp.where(span > 0, h, 0.0)
  h = jnp.mod(h + delta[..., None, None], 1.0) * 6.0
  channel = lambda n: jnp.clip(jnp.abs(jnp.mod(h + n, 6.0) - 3.0) - 1.0, 0.0, 1.0)  # the hue's share of r, g, b
  return jnp.stack([v * (1.0 - s + s * channel(k)) for k in (0.0, 4.0, 2.0)], axis=-1)


def _blur(x, sigma):
  """Separable Gaussian (augment._blur: radius S/16, sigma scaled by S/32, zero padding, along the width
  then the height) as sums of shifted copies: one elementwise pass per direction, each clip its own
  kernel. x [n, T, S, S, 3], sigma [n]."""
  size = x.shape[2]
  radius = max(1, size // 16)
  d = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (d[None, :] / (sigma * (size / 32.0))[:, None]) ** 2)
  k = k / jnp.sum(k, axis=1, keepdims=True)  # [n, K]
  for axis in (3, 2):  # width, then height
    pad = [(0, 0)] * 5
    pad[axis] = (radius, radius)
    xp = jnp.pad(x, pad)
    x = sum(k[:, i, None, None, None, None] * jax.lax.slice_in_dim(xp, i, i + size, axis=axis)
            for i in range(2 * radius + 1))
  return x


def apply(video, packed, cfg: AugmentConfig) -> jax.Array:
  """uint8 [..., T, S, S, 3] clips (cropped and flipped on the host) + their packed draws [..., T, 9]
  -> uint8 clips, augmented."""
  jitter_maxima = jitter_magnitudes(cfg)
  lead = video.shape[:-4]
  x = video.reshape((-1, *video.shape[-4:])).astype(jnp.float32) / 255.0
  p = {k: packed.reshape((-1, *packed.shape[-2:]))[..., i] for i, k in enumerate(PACKED)}  # [n, T]
  chosen = lambda name: (p[name][:, 0] > 0)[:, None, None, None, None]
  brightness, contrast, saturation, hue = jitter_maxima
  if cfg.color_jitter_prob > 0 and any(jitter_maxima):
    y = x
    if brightness or contrast or saturation:
      y = jnp.clip(_bcs(y, p["brightness"], p["contrast"], p["saturation"], cfg.per_frame_jitter), 0.0, 1.0)
    if hue:
      y = jnp.clip(_adjust_hue(y, p["hue"]), 0.0, 1.0)
    x = jnp.where(chosen("jitter"), y, x)
  if cfg.grayscale_prob > 0:
    x = jnp.where(chosen("gray"), jnp.repeat(_luma(x)[..., None], 3, axis=-1), x)
  if cfg.blur_prob > 0:
    x = jnp.where(chosen("blur"), _blur(x, p["sigma"][:, 0]), x)
  if cfg.solarize_prob > 0:
    x = jnp.where(chosen("solarize") & (x >= 0.5), 1.0 - x, x)
  out = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)
  return out.reshape((*lead, *out.shape[1:]))
