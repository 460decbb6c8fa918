"""Per-actor: the default run on built-in `moving_actors` (2-4 actors per video, each walking,
running, stopping or turning), with per-actor features (RoIAlign at each actor's box in each frame,
a temporal model over each track) trained by the actor-level InfoNCE alone: with the clip-level
InfoNCE beside it, shape fell from 88.7 to 73.1 (linear probe) and motion from 64.3 to 63.3
(docs/actors.md); the clip's own head then stays untrained.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.name = "moving_actors"
  c.model.actors = True
  c.objective.name = "actor_infonce"
  c.eval.baselines = ("random",)
  return c
