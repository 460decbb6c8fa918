"""The baselines evaluated next to a run: random weights and a supervised-trained encoder.

- random: the run's architecture initialised from config.seed, never trained;
- supervised: the same architecture with a classifier head, trained with cross-entropy on the
  run's data by `sora_jax.training.loop.train` from the named config `supervised` into
  `<workdir>/baselines/supervised` (reused when it already holds the final checkpoint).
"""

from __future__ import annotations

import copy
import logging

import jax

from sora_jax import storage
from sora_jax.config import load_config
from sora_jax.models import init_variables
from sora_jax.training import checkpoint
from sora_jax.training.loop import train

log = logging.getLogger("sora_jax.eval")


def random_variables(config):
  return init_variables(config, jax.random.PRNGKey(config.seed))


def supervised_config(config, info: dict):
  """The named config `supervised` (objective, views, augmentation, optimiser) with the run's data, clip
  shape, architecture, mesh and seed."""
  sup = load_config("supervised")
  with sup.ignore_type():
    for name in ("name", "data_dir", "num_frames", "frame_size", "stride", "train_split", "eval_split"):
      sup.data[name] = config.data[name]  # the run's data and clip shape; its own views and augmentation
    sup.model = copy.deepcopy(config.model)
    sup.mesh = copy.deepcopy(config.mesh)
    sup.eval = copy.deepcopy(config.eval)
  sup.seed = config.seed
  sup.model.num_classes = int(info["num_classes"])
  sup.model.predict_steps = 0
  steps = config.eval.supervised_steps
  if steps:
    sup.train.num_steps = steps
    sup.train.checkpoint_every = steps
    sup.optimizer.warmup_steps = min(sup.optimizer.warmup_steps, max(steps // 10, 1))
  sup.train.quick_eval_every = 0
  return sup


def supervised_variables(config, workdir, info: dict):
  """Trains (or reuses) the supervised baseline; -> (its config, variables, step)."""
  sup = supervised_config(config, info)
  sup_dir = storage.path(workdir) / "baselines" / "supervised"
  done = None
  if checkpoint.checkpoint_dir(sup_dir).is_dir():
    done = checkpoint.make_manager(sup_dir, async_save=False).latest_step()
  if done != sup.train.num_steps:
    log.info("training the supervised baseline (%d steps) into %s", sup.train.num_steps, sup_dir)
    train(sup, sup_dir)
  sup_config, variables, step = checkpoint.load_for_inference(sup_dir)
  return sup_config, variables, step
