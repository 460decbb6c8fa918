"""Moving averages of weights: the momentum (EMA) teacher of the encoder's parameters, and the
generator's average that samples.

After each optimizer update, ema <- m ema + (1 - m) params, with m rising from
objective.ema_momentum to 1 along a cosine over train.num_steps (BYOL's schedule): the teacher moves
early and settles late. The average lives in the train state (`ema_params`), sharded like the
parameters and checkpointed with them, so a resumed run continues with the same teacher.

The generator's average (generate.ema_decay > 0) lives beside it in params['objective'] (frozen to
the optimizer), so a checkpoint, a resume and every reader of the objective's parameters carry it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sora_jax.config import terms
from sora_jax.objectives import GENERATOR_EMA
from sora_jax.objectives.teacher import TEACHER_TERMS


def uses_teacher(config) -> bool:
  """Whether a term of `objective.name` trains against the EMA teacher."""
  return any(t in TEACHER_TERMS for t in terms(config.objective.name))


def momentum(config, step) -> jax.Array:
  """m(step) = 1 - (1 - m0) (cos(pi step / num_steps) + 1) / 2; m0 = objective.ema_momentum."""
  m0 = config.objective.ema_momentum
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(config.train.num_steps, 1), 0.0, 1.0)
  return 1.0 - (1.0 - m0) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def update(ema, params, m: jax.Array):
  """ema <- m ema + (1 - m) params, leaf by leaf (same tree, same shardings): optax's Polyak averaging."""
  return optax.incremental_update(params, ema, 1.0 - m)


def average_generator(config, params: dict, step) -> dict:
  """`params` with params['objective'][GENERATOR_EMA] moved toward the updated generator with decay
  min(generate.ema_decay, (1 + step) / (10 + step)): the average follows the first steps closely."""
  n = jnp.asarray(step, jnp.float32)
  decay = jnp.minimum(config.generate.ema_decay, (1.0 + n) / (10.0 + n))
  objective = dict(params["objective"])
  objective[GENERATOR_EMA] = update(objective[GENERATOR_EMA], objective["generator"], decay)
  return dict(params, objective=objective)
