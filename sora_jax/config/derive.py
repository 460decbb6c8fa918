"""Configs derived from a run's config: each derivation written once.

- `classifier`: the run's architecture trained as a classifier (fine-tuning, and the base of the
  supervised baseline);
- `supervised_baseline`: the named config `supervised`'s recipe on the run's data and architecture.
"""

from __future__ import annotations

import copy

from sora_jax.config.load import load_config


def classifier(config, num_classes: int):
  """`config` training its architecture as a `num_classes` classifier with cross-entropy: a
  classifier head, one view per clip, the `supervised` objective (no temperature, no DPC
  predictor, no reversed clips), no gradient accumulation, no baselines of its own. The rest (data, augmentation,
  optimizer, mesh, seed) is `config`'s."""
  cfg = copy.deepcopy(config)
  cfg.model.num_classes = int(num_classes)
  cfg.model.predict_steps = 0
  cfg.model.time_reversal = False  # (the reversed clips are infonce's; same parameters without them)
  cfg.data.num_views = 1
  cfg.objective.name = "supervised"
  cfg.objective.learn_temperature = False
  cfg.train.grad_accum_steps = 1
  cfg.eval.baselines = ()  # (bag_of_words, for one, needs the run's text term)
  return cfg


def supervised_baseline(config, num_classes: int):
  """The supervised baseline's config: the named config `supervised` (its views, augmentation and
  optimizer) with the run's data, clip shape, architecture, mesh, eval settings and seed, as a
  `classifier`, for `eval.supervised_steps` steps (0: the named config's)."""
  sup = load_config("supervised")
  with sup.ignore_type():
    for name in ("name", "data_dir", "num_frames", "frame_size", "stride", "train_split", "eval_split"):
      sup.data[name] = config.data[name]  # the run's data and clip shape; its own views and augmentation
    sup.model = copy.deepcopy(config.model)
    sup.mesh = copy.deepcopy(config.mesh)
    sup.eval = copy.deepcopy(config.eval)
  sup.seed = config.seed
  steps = config.eval.supervised_steps
  if steps:
    sup.train.num_steps = steps
    sup.train.checkpoint_every = steps
    sup.optimizer.warmup_steps = min(sup.optimizer.warmup_steps, max(steps // 10, 1))
  sup.train.quick_eval_every = 0
  return classifier(sup, num_classes)
