"""MoCo v3 against a momentum teacher at the default's budget: the online encoder plus a predictor
MLP queries the EMA teacher's keys of the other view, InfoNCE over the global batch (temperature
0.2, MoCo v3's), symmetric over the views.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.objective.name = "moco"
  c.objective.temperature = 0.2
  c.objective.ema_momentum = 0.99
  return c
