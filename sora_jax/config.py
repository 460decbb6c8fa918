"""Loading and validating run configs.

A config is an ml_collections ConfigDict from `configs/*.py:get_config()`. Each stage owns the
checks of its own section (`sora_jax.<stage>.config.validate`); `validate` runs them all at
start-up so a bad value fails in one line before anything compiles.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
from typing import Any, Iterable

import ml_collections

from sora_jax.errors import ConfigError

# Stages that validate their own section, in pipeline order.
_SECTION_VALIDATORS = (
    "sora_jax.data.config",
    "sora_jax.models.config",
    "sora_jax.objectives.config",
    "sora_jax.training.config",
    "sora_jax.evaluation.config",
)


def load_config(path: str | pathlib.Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """Loads `get_config()` from a python file and applies `a.b=value` overrides."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"config file {str(path)!r} not found; pass one of configs/*.py")
  spec = importlib.util.spec_from_file_location(f"_sora_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {str(path)!r} defines no get_config()")
  config = module.get_config()
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    set_value(config, key.removeprefix("config."), value)
  return config


def set_value(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets `config[dotted]` from a command-line string, keeping the field's type."""
  *parents, leaf = dotted.split(".")
  node = config
  for name in parents:
    if name not in node:
      raise ConfigError(f"unknown config field {dotted!r} (no section {name!r})")
    node = node[name]
  if leaf not in node:
    raise ConfigError(f"unknown config field {dotted!r}; fields here: {sorted(node.keys())}")
  old = node[leaf]
  try:
    value = _parse_like(old, text)
  except (ValueError, json.JSONDecodeError) as e:
    raise ConfigError(f"config field {dotted!r}: cannot parse {text!r} as {type(old).__name__}") from e
  with node.ignore_type():
    node[leaf] = value


def _parse_like(old: Any, text: str) -> Any:
  if isinstance(old, bool):
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ValueError(text)
  if isinstance(old, int):
    return int(text)
  if isinstance(old, float):
    return float(text)
  if isinstance(old, (list, tuple)):
    return type(old)(json.loads(text))
  if old is None:
    try:
      return json.loads(text)
    except json.JSONDecodeError:
      return text
  return text


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Runs every stage's checks; raises ConfigError naming the field and the fix."""
  for section in ("seed", "data", "model", "objective", "train", "optimizer", "mesh", "eval"):
    if section not in config:
      raise ConfigError(f"config has no {section!r} section; start from configs/default.py")
  check_int(config, "seed", minimum=0)
  for module_name in _SECTION_VALIDATORS:
    importlib.import_module(module_name).validate(config)
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


# Checks with uniform messages, shared by the stages' validators.

def _get(config, dotted: str):
  node = config
  for name in dotted.split("."):
    if name not in node:
      raise ConfigError(f"config field {dotted!r} is missing; see configs/default.py")
    node = node[name]
  return node


def check_choice(config, dotted: str, allowed: Iterable[str]) -> str:
  value = _get(config, dotted)
  allowed = tuple(allowed)
  if value not in allowed:
    raise ConfigError(f"config.{dotted}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}")
  return value


def check_int(config, dotted: str, minimum: int | None = None, maximum: int | None = None) -> int:
  value = _get(config, dotted)
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConfigError(f"config.{dotted}={value!r} must be an integer")
  if minimum is not None and value < minimum:
    raise ConfigError(f"config.{dotted}={value} must be >= {minimum}")
  if maximum is not None and value > maximum:
    raise ConfigError(f"config.{dotted}={value} must be <= {maximum}")
  return value


def check_float(config, dotted: str, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:
  value = _get(config, dotted)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(f"config.{dotted}={value!r} must be a number")
  if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
    raise ConfigError(f"config.{dotted}={value} must be {'>' if exclusive_minimum else '>='} {minimum}")
  if maximum is not None and value > maximum:
    raise ConfigError(f"config.{dotted}={value} must be <= {maximum}")
  return float(value)
