"""The supervised reference: the default encoder trained with cross-entropy on moving_shapes'
shape labels (5 classes), one view, same budget, for comparing the self-supervised representation.
"""

import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "_sora_config_default_base", pathlib.Path(__file__).resolve().parent / "default.py")
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
  c = _base.get_config()
  c.data.num_views = 1
  c.model.num_classes = 5  # moving_shapes: square, circle, triangle, cross, diamond
  c.objective.name = "supervised"
  c.data.augment.color_jitter_prob = 0.3
  c.data.augment.grayscale_prob = 0.0
  return c
