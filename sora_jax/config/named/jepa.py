"""V-JEPA for our architecture at the default's budget: half of each clip's time steps (one
contiguous block) are hidden behind a learned mask token at the temporal model's input, and the
online network predicts the EMA teacher's temporal representations of those steps (smooth-L1 in
latent space). InfoNCE between the two views stays on, on the whole clips (a second online pass:
objective.mask_every_term=false), so the clip embedding is trained on what it will be used on; the
biLSTM predicts a hidden step from both sides.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.objective.name = "infonce+latent_mask"
  c.model.latent_predict = True
  c.model.bidirectional = True
  c.objective.mask_ratio = 0.5
  c.objective.ema_momentum = 0.99
  return c
