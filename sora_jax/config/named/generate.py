"""The video generator: flow matching on the clips of built-in moving_shapes, conditioned on a trained
encoder run's embedding of each clip (`--config.generate.encoder_workdir=RUN`, required; the
generator adopts RUN's model section and freezes its weights). One view per video, no augmentation:
the generator learns the clips as they are. 6000 steps (about an hour on 2 cores) at a constant
learning rate after warm-up whose last 1000 steps decay to 0 (warmup-stable-decay: shape re-recognised
in 83.5% and 80.8% of the clips on two seeds, 80.5% and 78.2% after 4500 steps with a 750-step
cool-down, 76.8% after 3000 with 500; under a cosine 39.0% at 1500 steps), sampled from a moving
average of the weights (0.995; docs/generation.md).
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
  c.train.num_steps = 6000
  c.train.quick_eval_every = 0  # the quick kNN eval measures an encoder; this one is frozen
  c.train.checkpoint_every = 250
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = "constant"
  c.optimizer.cooldown_steps = 1000
  c.generate.ema_decay = 0.995
  c.eval.baselines = ("generate_mse",)  # the deterministic decoder, trained by eval beside it
  return c
