"""The `infonce` run with a ViT on every frame instead of the seed CNN, at the default's CPU budget:
ViT-Ti's width (192, 3 heads) cut to 4 blocks, 8 x 8 patches (16 per 32 px frame), mean-pooled;
frames with their differences (rgb+diff) as infonce. Data, objective and steps are infonce's;
the learning rate is a Transformer's (3e-4 after 50 warm-up steps, against the seed CNN's 3e-3; at 1e-3
it learned less: 32.8 against 42.0 linear, docs/results.md).
configs/large_vit.py is the pod-scale ViT.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.model.frame_encoder = "vit"
  c.model.vit_size = "Ti"
  c.model.vit_depth = 4
  c.model.vit_patch = 8
  c.model.frame_pool = "mean"
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 50
  return c
