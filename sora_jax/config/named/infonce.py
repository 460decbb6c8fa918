"""The schema's defaults, the `default` config until 2026-12-05: one seed CNN over each frame's RGB
and its difference from the previous frame, an LSTM over time, InfoNCE between two views of each
clip over the global batch, on built-in `moving_shapes`, CPU minutes (about 1 s a step on 2 cores).
Cheaper than `default` (one tower, no reversed clips) and weaker on appearance (docs/results.md).
"""

from sora_jax.config import defaults


def get_config():
  return defaults()
