"""BYOL / rho-BYOL against a momentum teacher at the default's budget: the online encoder plus a
predictor MLP matches the EMA teacher's embedding of the other view (cosine, no negatives). The
teacher's momentum starts at objective.ema_momentum and rises to 1 along a cosine.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.objective.name = "byol"
  c.objective.ema_momentum = 0.99
  return c
