"""The video generator: flow matching on the clips of built-in moving_shapes, conditioned on a trained
encoder run's embedding of each clip (`--config.generate.encoder_workdir=RUN`, required; the
generator adopts RUN's model section and freezes its weights). One view per video, no augmentation:
the generator learns the clips as they are.
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
  c.eval.baselines = ("generate_mse",)  # the deterministic decoder, trained by eval beside it
  return c
