"""Checks of the `eval` section (called by sora_jax.config.validate with the whole config)."""

from __future__ import annotations

from sora_jax.config import check_choice, check_float, check_int
from sora_jax.errors import ConfigError

BASELINES = ("random", "supervised")
FEATURES = ("pooled", "embedding")
PROJECTIONS = ("pca", "tsne")


def _get(config, name, default):
  return config.eval[name] if name in config.eval else default


def validate(config) -> None:
  check_int(config, "eval.batch_size", minimum=1)
  check_int(config, "eval.num_clips", minimum=1)
  check_int(config, "eval.num_crops", minimum=1)
  check_int(config, "eval.knn_k", minimum=1)
  check_float(config, "eval.knn_temperature", minimum=0.0, exclusive_minimum=True)
  ks = config.eval.retrieval_ks
  if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
    raise ConfigError(f"config.eval.retrieval_ks={ks!r} must be a non-empty list of positive integers, e.g. (1, 5, 10, 20)")
  if not isinstance(config.eval.mean_center, bool):
    raise ConfigError(f"config.eval.mean_center={config.eval.mean_center!r} must be true or false")
  baselines = config.eval.baselines
  if isinstance(baselines, str):
    baselines = tuple(b for b in baselines.split(",") if b)
  for b in baselines:
    if b not in BASELINES:
      raise ConfigError(f"config.eval.baselines contains {b!r}; choose among {', '.join(map(repr, BASELINES))}")
  # Optional fields (older configs may lack them; defaults live in configs/default.py).
  if "feature" in config.eval:
    check_choice(config, "eval.feature", FEATURES)
  if "projection" in config.eval:
    check_choice(config, "eval.projection", PROJECTIONS)
  for name in ("probe_learning_rates", "probe_weight_decays"):
    values = _get(config, name, (1.0,))
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in values):
      raise ConfigError(f"config.eval.{name}={values!r} must be a non-empty list of numbers >= 0")
  if "probe_steps" in config.eval:
    check_int(config, "eval.probe_steps", minimum=1)
  if "val_fraction" in config.eval:
    check_float(config, "eval.val_fraction", minimum=0.0, maximum=0.9, exclusive_minimum=True)
  if "finetune_epochs" in config.eval:
    check_int(config, "eval.finetune_epochs", minimum=0)
  for name in ("finetune_learning_rate", "finetune_head_learning_rate"):
    if name in config.eval:
      check_float(config, f"eval.{name}", minimum=0.0, exclusive_minimum=True)
  if "supervised_steps" in config.eval:
    check_int(config, "eval.supervised_steps", minimum=0)
  if "quick_examples" in config.eval:
    check_int(config, "eval.quick_examples", minimum=2)
  if "max_examples" in config.eval:
    check_int(config, "eval.max_examples", minimum=0)
