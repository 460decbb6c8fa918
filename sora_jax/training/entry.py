"""`train.py` and `sora-jax train` land here: validate, train, report one line."""

from __future__ import annotations

import logging

from sora_jax.training.loop import train

log = logging.getLogger("sora_jax.train")


def main(config, workdir, hooks=()) -> int:
  """Validates (one-line ConfigError before anything compiles), trains, checkpoints, logs. Returns 0."""
  from sora_jax.config import validate
  validate(config)
  state = train(config, workdir, hooks=hooks)
  import jax
  if jax.process_index() == 0:
    print(f"done: step {int(state.step)}, workdir {workdir}", file=__import__("sys").stderr)
  return 0


def default_hooks(config) -> tuple:
  """The evaluation engineer's quick kNN eval, when that module exists and quick_eval_every > 0."""
  import importlib.util
  if not config.train.quick_eval_every or importlib.util.find_spec("sora_jax.evaluation.quick") is None:
    return ()
  from sora_jax.evaluation.quick import make_quick_eval
  return (make_quick_eval(config),)
