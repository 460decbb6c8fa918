"""The generator's objective and its sampler, in one place: flow matching (rectified flow) and the
deterministic MSE decoder kept as the baseline.

Flow matching (Lipman et al. 2023; Liu et al. 2023): a path from noise x0 ~ N(0, I) at t = 0 to a
data clip x1 at t = 1, x_t = (1 - t) x0 + t x1, with velocity x1 - x0; t is drawn logit-normal,
sigmoid(N(-0.8, 0.8)) as JiT does: most draws in the noisier half, where the clip's layout is decided. The network predicts the clean clip x1 and its velocity is
(x1_hat - x_t) / (1 - t), trained with the velocity MSE (Li & He 2025, "Back to Basics: Let
Denoising Generative Models Denoise"): a patch token has more pixel values (8 x 8 x 3 = 192) than
the Transformer has channels (128), so it cannot carry the noise a predicted velocity must contain
(v-prediction measured here: the velocity MSE stayed at 0.40 at every t after 750 steps and samples
were noise), while the clean clip lies on a low-dimensional manifold it can reach. Sampling integrates the
learned velocity from noise with Euler steps; classifier-free guidance (Ho & Salimans 2022) mixes the
conditional and the unconditional velocities, v_u + w (v_c - v_u), the condition having been dropped
in training with probability `cond_dropout`. The MSE decoder maps the condition alone to a clip (its
input: zeros at t = 1) and gives the blurred average of what the condition allows.

`apply(x [B, T, H, W, 3], t [B], cond [B, E], drop [B] | None) -> [B, T, H, W, 3]` is the generator
with its parameters bound (its output: the clean clip); clips are float in [-1, 1] (`to_unit`, `to_uint8`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

METHODS = ("flow", "mse")
Apply = Callable[..., jax.Array]


def to_unit(video: jax.Array) -> jax.Array:
  """uint8 frames -> float32 in [-1, 1]."""
  return video.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(x: jax.Array) -> jax.Array:
  """float clips in [-1, 1] (clipped) -> uint8 frames."""
  return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)


def flow_path(x0: jax.Array, x1: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """-> (x_t, the velocity target x1 - x0) for t [B]."""
  tb = t.reshape((-1,) + (1,) * (x1.ndim - 1))
  return (1.0 - tb) * x0 + tb * x1, x1 - x0


TIME_MEAN, TIME_STD = -0.8, 0.8  # t = sigmoid(N(mean, std)) in training (JiT's)
MIN_GAP = 0.05  # 1 - t in the velocity of a clean-clip prediction is at least this (JiT's clip)


def velocity_of(x1_hat: jax.Array, xt: jax.Array, t: jax.Array) -> jax.Array:
  """The velocity (x1_hat - x_t) / (1 - t) of a clean-clip prediction at time t [B] (1 - t >= MIN_GAP)."""
  gap = jnp.maximum(1.0 - t, MIN_GAP).reshape((-1,) + (1,) * (xt.ndim - 1))
  return (x1_hat - xt) / gap


def loss(method: str, apply: Apply, clips: jax.Array, cond: jax.Array, key: jax.Array,
         cond_dropout: float) -> tuple[jax.Array, dict]:
  """The generator's training loss on clips [B, T, H, W, 3] in [-1, 1] given cond [B, E].
  -> (loss, metrics); flow: the velocity MSE; mse: the clip MSE of the deterministic decoder."""
  b = clips.shape[0]
  k_noise, k_time, k_drop = jax.random.split(key, 3)
  if method == "mse":
    pred = apply(jnp.zeros_like(clips), jnp.ones((b,), jnp.float32), cond, None)
    value = jnp.mean(jnp.square(pred - clips))
    return value, {"generate_mse": value}
  x0 = jax.random.normal(k_noise, clips.shape, jnp.float32)
  t = jax.nn.sigmoid(TIME_MEAN + TIME_STD * jax.random.normal(k_time, (b,), jnp.float32))
  xt, target = flow_path(x0, clips, t)
  drop = jax.random.bernoulli(k_drop, cond_dropout, (b,))
  value = jnp.mean(jnp.square(velocity_of(apply(xt, t, cond, drop), xt, t) - target))
  return value, {"generate_flow_mse": value}


def velocity(apply: Apply, x: jax.Array, t: jax.Array, cond: jax.Array, guidance: float) -> jax.Array:
  """The guided velocity at x [B, ...], time t []: v_u + guidance (v_c - v_u); guidance 1 = v_c alone
  (one network call), 0 = unconditional. (The network's outputs are clean-clip predictions.)"""
  b = x.shape[0]
  ts = jnp.full((b,), t, jnp.float32)
  if guidance == 1.0:
    return velocity_of(apply(x, ts, cond, None), x, ts)
  both = apply(jnp.concatenate([x, x]), jnp.concatenate([ts, ts]), jnp.concatenate([cond, cond]),
               jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)]))
  both = velocity_of(both, jnp.concatenate([x, x]), jnp.concatenate([ts, ts]))
  v_c, v_u = both[:b], both[b:]
  return v_u + guidance * (v_c - v_u)


def euler_step(apply: Apply, x: jax.Array, i: jax.Array, num_steps: int, cond: jax.Array,
               guidance: float) -> jax.Array:
  """Step i of `num_steps` Euler steps from t = i / num_steps."""
  dt = 1.0 / num_steps
  return x + dt * velocity(apply, x, i * dt, cond, guidance)


def heun_step(apply: Apply, x: jax.Array, i: jax.Array, num_steps: int, cond: jax.Array,
              guidance: float) -> jax.Array:
  """Step i of `num_steps` Heun steps (Euler, then the mean of the velocities at both ends; two network
  calls): second order along the path. The last step is Euler's: its end is t = 1, where a clean-clip
  prediction's velocity divides by 1 - t."""
  dt = 1.0 / num_steps
  v = velocity(apply, x, i * dt, cond, guidance)
  euler = x + dt * v
  return jax.lax.cond(i + 1 < num_steps,
                      lambda: x + 0.5 * dt * (v + velocity(apply, euler, (i + 1) * dt, cond, guidance)),
                      lambda: euler)


SOLVERS = {"euler": euler_step, "heun": heun_step}


def initial_noise(key: jax.Array, shape: tuple) -> jax.Array:
  """x0 of the sampler: N(0, I) of the clips' shape [B, T, H, W, 3]."""
  return jax.random.normal(key, shape, jnp.float32)


def sample(method: str, apply: Apply, cond: jax.Array, key: jax.Array, shape: tuple, *, num_steps: int,
           guidance: float, solver: str = "euler") -> jax.Array:
  """Clips [B, T, H, W, 3] in [-1, 1] for cond [B, E] (shape: the clips'). flow: `num_steps` steps
  of `solver` (SOLVERS) from `initial_noise(key)` (in one fori_loop; the apps step in Python to show progress);
  mse: the decoder's one output (key unused)."""
  if method == "mse":
    return jnp.clip(apply(jnp.zeros(shape, jnp.float32), jnp.ones((shape[0],), jnp.float32), cond, None), -1, 1)
  step = SOLVERS[solver]
  x = jax.lax.fori_loop(0, num_steps, lambda i, x: step(apply, x, i, num_steps, cond, guidance),
                        initial_noise(key, shape))
  return jnp.clip(x, -1.0, 1.0)
