"""Dense predictive coding (DPC): from the causal LSTM's state at step t, predict the embeddings of
steps t+1..t+3, each scored against every true future in the global batch. One view per video
(the task itself is the supervision), longer clips so there is a future to predict.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.num_views = 1
  c.data.num_frames = 8
  c.model.temporal = "lstm"  # unidirectional = causal: sequence[t] sees frames <= t only
  c.model.bidirectional = False
  c.model.predict_steps = 3
  c.objective.name = "predictive"
  c.objective.temperature = 0.1
  return c
