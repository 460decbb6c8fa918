"""sora_jax.training: train state, the sharded step, the loop, checkpoints (see README "Training").

`train(config, workdir, *, hooks=()) -> TrainState`; `checkpoint.load_for_inference(workdir, step=None)`.
"""


def train(config, workdir, **kwargs):
  """See `sora_jax.training.loop.train` (imported lazily: importing the package stays cheap)."""
  from sora_jax.training.loop import train as _train
  return _train(config, workdir, **kwargs)
