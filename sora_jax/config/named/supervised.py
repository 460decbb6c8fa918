"""The supervised reference: the `infonce` encoder (one tower) trained with cross-entropy on moving_shapes'
shape labels (5 classes), one view, same budget, for comparing the self-supervised representation.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.num_views = 1
  c.model.num_classes = 5  # moving_shapes: square, circle, triangle, cross, diamond
  c.objective.name = "supervised"
  c.data.augment.color_jitter_prob = 0.3
  c.data.augment.grayscale_prob = 0.0
  return c
