"""Default run: a small encoder pretrained with InfoNCE on built-in `moving_shapes`, CPU minutes.

It is the schema's defaults (`sora-jax config --show default` prints every field and its doc).
"""

from sora_jax.config import defaults


def get_config():
  return defaults()
