"""Optimizers from `config.optimizer`: adamw | sgd (momentum) | lars, warmup + cosine or constant
(with a linear cool-down), clipping.

With `model.frame_input=two_tower` and `optimizer.clip_per_tower` the gradient norm is clipped over
each tower's parameters apart (the `motion_*` modules, and the rest), so one tower's gradient does
not shrink the other's step: each tower then steps as it would trained alone.

Weight decay (and LARS trust ratios) apply only to arrays of rank >= 2, i.e. not to biases,
norm scales or the learned temperature. Gradient accumulation is done by the train step (micro
batches inside one step), so one optimizer update = one step = one global batch.
"""

from __future__ import annotations

import flax
import jax
import optax

from sora_jax.config import terms
from sora_jax.objectives.video_text import TOWER, frozen


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup from 0 to optimizer.learning_rate, then cosine to 0 at train.num_steps, or constant
  (its last optimizer.cooldown_steps decaying linearly to 0: warmup-stable-decay)."""
  opt, total = config.optimizer, config.train.num_steps
  warmup = min(opt.warmup_steps, total)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, opt.learning_rate, warmup_steps=warmup,
                                              decay_steps=max(total, warmup + 1), end_value=0.0)
  parts = [optax.linear_schedule(0.0, opt.learning_rate, max(warmup, 1)), optax.constant_schedule(opt.learning_rate)]
  if not opt.cooldown_steps:
    return optax.join_schedules(parts, [warmup])
  cooldown = optax.linear_schedule(opt.learning_rate, 0.0, opt.cooldown_steps)
  return optax.join_schedules(parts + [cooldown], [warmup, total - opt.cooldown_steps])


def decay_mask(params):
  """True for arrays that get weight decay: matrices and kernels, not biases, scales or scalars."""
  return jax.tree_util.tree_map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def build_optimizer(config) -> optax.GradientTransformation:
  tx = _base(config, learning_rate_schedule(config))
  if "generate" in terms(config.objective.name):  # the generator trains; the encoder run's parts stay as they are
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, _generator_labels)
  if config.text.train_layers:  # the pretrained tower: its top layers at a fraction of the rate, the rest fixed
    scale = config.text.learning_rate_scale
    tower = _base(config, lambda step: scale * learning_rate_schedule(config)(step))
    tx = optax.multi_transform({"train": tx, "tower": tower, "frozen": optax.set_to_zero()},
                               lambda params: _labels(config, params))
  return tx


def _base(config, lr: optax.Schedule) -> optax.GradientTransformation:
  """optimizer.name at rate `lr`, with clipping (over the parameters it is given)."""
  opt = config.optimizer
  if opt.name == "adamw":
    tx = optax.adamw(lr, weight_decay=opt.weight_decay, mask=decay_mask)
  elif opt.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
                     optax.sgd(lr, momentum=opt.momentum or None))
  else:  # lars
    tx = optax.lars(lr, weight_decay=opt.weight_decay, weight_decay_mask=decay_mask,
                    trust_ratio_mask=decay_mask, momentum=opt.momentum)
  if opt.clip_norm > 0:
    clip = optax.clip_by_global_norm(opt.clip_norm)
    if opt.clip_per_tower and config.model.frame_input == "two_tower":
      clip = optax.multi_transform({"main": clip, "motion": clip}, _tower_labels)
    tx = optax.chain(clip, tx)
  return tx


def _tower_labels(params):
  """'motion' for the second tower's modules (the encoder's `motion_*`), 'main' for every other."""
  def label(path, _):
    return "motion" if any(str(getattr(k, "key", "")).startswith("motion_") for k in path) else "main"
  return jax.tree_util.tree_map_with_path(label, params)


def _generator_labels(params):
  """'train' for params['objective']['generator'], 'frozen' for the rest (the encoder run's)."""
  return {"encoder": "frozen", "objective": {k: "train" if k == "generator" else "frozen" for k in params["objective"]}}


def _labels(config, params):
  """'frozen' for the objective parameters `video_text.frozen` names, 'tower' for the tower's trained
  layers, 'train' for every other."""
  def label(k):
    if k[0] != "objective" or k[1:2] != (TOWER,):
      return "train"
    return "frozen" if frozen(config, k[1:]) else "tower"
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})
