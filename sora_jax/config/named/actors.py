"""Per-actor: the default run on built-in `moving_actors` (2-4 actors per video, each walking,
running, stopping or turning), with per-actor features (RoIAlign at each actor's box in each frame,
a temporal model over each track) trained by an actor-level InfoNCE beside the clip-level one.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.name = "moving_actors"
  c.model.actors = True
  c.objective.name = "infonce+actor_infonce"
  c.eval.baselines = ("random",)
  return c
