"""Dense predictive coding (DPC): from the causal LSTM's state at step t, predict the embeddings of
steps t+1..t+3, each scored against every true future in the global batch. One view per video
(the task itself is the supervision), longer clips so there is a future to predict.
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
  c.data.num_frames = 8
  c.model.temporal = "lstm"  # unidirectional = causal: sequence[t] sees frames <= t only
  c.model.bidirectional = False
  c.model.predict_steps = 3
  c.objective.name = "predictive"
  c.objective.temperature = 0.1
  return c
