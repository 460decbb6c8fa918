"""The video generator: flow matching on the clips of built-in moving_shapes, conditioned on a trained
encoder run's embedding of each clip (`--config.generate.encoder_workdir=RUN`, required; the
generator adopts RUN's model section and freezes its weights). One view per video, no augmentation:
the generator learns the clips as they are. A constant learning rate after warm-up (the cosine's
falling rate held shape back: 39.0% re-recognised at 1500 steps against 65.0% constant), and samples
from a moving average of the weights (0.995: motion 95.5% against 91.2% from the weights themselves;
docs/generation.md).
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.objective.name = "generate"
  c.data.num_views = 1
  c.data.augment.crop_scale = (1.0, 1.0)
  c.data.augment.color_jitter_prob = 0.0
  c.data.augment.grayscale_prob = 0.0
  c.train.batch_size = 32
  c.train.num_steps = 1500
  c.train.quick_eval_every = 0  # the quick kNN eval measures an encoder; this one is frozen
  c.train.checkpoint_every = 250
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "constant"
  c.generate.ema_decay = 0.995
  c.eval.baselines = ("generate_mse",)  # the deterministic decoder, trained by eval beside it
  return c
