"""Checks of the `model` section, run by `sora_jax.config.validate` before anything compiles."""

from __future__ import annotations

from sora_jax.config import _get, check_choice, check_float, check_int
from sora_jax.errors import ConfigError

FRAME_ENCODERS = ("seed_cnn", "resnet")
RESNET_DEPTHS = (18, 34)
RESNET_STEMS = ("small", "imagenet")
FRAME_INPUTS = ("rgb", "rgb+diff")
FRAME_POOLS = ("mean", "flatten")
NORMS = ("none", "group", "batch")
TEMPORAL = ("lstm", "gru", "transformer", "none")
POOLING = ("last", "mean", "cls")
DTYPES = ("float32", "bfloat16")


def _check_bool(config, dotted: str) -> bool:
  value = _get(config, dotted)
  if not isinstance(value, bool):
    raise ConfigError(f"config.{dotted}={value!r} must be one of True, False")
  return value


def _check_triple(config, dotted: str, positive: bool) -> tuple[float, ...]:
  value = _get(config, dotted)
  ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
  if not ok or (positive and min(value) <= 0):
    what = "positive numbers" if positive else "numbers"
    raise ConfigError(f"config.{dotted}={value!r} must be 3 {what}, one per RGB channel, e.g. (0.5, 0.5, 0.5)")
  return tuple(float(v) for v in value)


def validate(config) -> None:
  """Raises ConfigError naming the field and the allowed values for any bad `model.*` value."""
  if "model" not in config:
    raise ConfigError("config has no 'model' section; start from configs/default.py")
  check_choice(config, "model.frame_encoder", FRAME_ENCODERS)
  check_float(config, "model.width", minimum=0.0, exclusive_minimum=True)
  depth = _get(config, "model.resnet_depth")
  if depth not in RESNET_DEPTHS or isinstance(depth, bool):
    raise ConfigError(f"config.model.resnet_depth={depth!r} is not supported; choose one of {RESNET_DEPTHS}")
  if "resnet_stem" in config.model:
    check_choice(config, "model.resnet_stem", RESNET_STEMS)
  for field, choices in (("frame_input", FRAME_INPUTS), ("frame_pool", FRAME_POOLS)):
    if field in config.model:  # absent in configs written before these options: the old behaviour
      check_choice(config, f"model.{field}", choices)
  check_choice(config, "model.norm", NORMS)
  temporal = check_choice(config, "model.temporal", TEMPORAL)
  hidden = check_int(config, "model.hidden_size", minimum=1)
  check_int(config, "model.num_layers", minimum=1)
  bidirectional = _check_bool(config, "model.bidirectional")
  heads = check_int(config, "model.num_heads", minimum=1)
  causal = _check_bool(config, "model.causal")
  _check_bool(config, "model.remat")
  _check_bool(config, "model.scan_layers")
  pooling = check_choice(config, "model.pooling", POOLING)
  check_int(config, "model.head_hidden", minimum=1)
  check_int(config, "model.head_layers", minimum=1)
  check_int(config, "model.embed_dim", minimum=1)
  check_int(config, "model.num_classes", minimum=0)
  check_int(config, "model.predict_steps", minimum=0)
  _check_triple(config, "model.input_mean", positive=False)
  _check_triple(config, "model.input_std", positive=True)
  check_choice(config, "model.dtype", DTYPES)

  if temporal == "transformer" and hidden % heads:
    raise ConfigError(f"config.model.hidden_size={hidden} must be divisible by config.model.num_heads={heads}")
  if bidirectional and temporal not in ("lstm", "gru"):
    raise ConfigError(f"config.model.bidirectional=True needs config.model.temporal in 'lstm', 'gru' "
                      f"(got {temporal!r}); a non-causal transformer already sees both directions")
  if bidirectional and causal:
    raise ConfigError("config.model.causal=True contradicts config.model.bidirectional=True; set one to False")
  if causal and temporal not in ("transformer", "lstm", "gru"):
    raise ConfigError(f"config.model.causal=True needs a temporal model; config.model.temporal={temporal!r}")
  if pooling == "cls" and temporal == "none":
    raise ConfigError("config.model.pooling='cls' needs a temporal model to read the CLS token; "
                      "choose config.model.pooling in 'last', 'mean' or set config.model.temporal")
