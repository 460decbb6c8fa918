"""Where a config comes from: a named config, a config file, command-line overrides, a saved run.

- `load_config("default")` imports the named config `sora_jax.config.named.default` (shipped with the package,
  so it works from any folder); `load_config("my/exp.py")` runs that file's `get_config()`.
- `apply_overrides(config, ["train.num_steps=100"])`: the value is parsed as the schema's type.
- `migrate(saved_dict)`: a config written by any earlier version, brought up to date.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
import pkgutil
from typing import Any, Iterable

import ml_collections

from sora_jax.config import named, schema
from sora_jax.errors import ConfigError

# Fields added after runs were saved, whose absence meant something other than today's default:
# a run saved before them keeps the behaviour it was trained with.
LEGACY = {"model.frame_input": "rgb", "model.frame_pool": "mean", "model.resnet_stem": "small",
          "data.sampling": "random", "data.augment.color_jitter": (),
          "text.learning_rate_scale": 1.0,  # runs before it trained the tower's layers at the full rate
          "objective.mask_every_term": True,  # jepa runs before it masked the clips of every term
          "generate.layout_rank": 0,  # generators before the layout map had none
          "optimizer.clip_per_tower": False}  # two_tower runs before it clipped both towers over one norm


def named_configs() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(named.__path__) if not m.name.startswith("_"))


def load_config(spec: str | pathlib.Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """A named config (`default`, `dpc`, ...) or a config file's `get_config()`, with overrides applied."""
  text = str(spec)
  if text.endswith(".py") or "/" in text or pathlib.Path(text).is_file():
    module = _from_file(pathlib.Path(text))
  elif text in named_configs():
    module = importlib.import_module(f"sora_jax.config.named.{text}")
  else:
    raise ConfigError(f"--config {text!r} is neither a config file nor a named config; named configs: "
                      f"{', '.join(named_configs())}")
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config {text!r} defines no get_config()")
  config = module.get_config()
  apply_overrides(config, overrides)
  return config


def _from_file(path: pathlib.Path):
  if not path.is_file():
    raise ConfigError(f"config file {str(path)!r} not found; pass a file or one of: {', '.join(named_configs())}")
  spec = importlib.util.spec_from_file_location(f"_sora_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Sets each `section.field=value` (a leading `config.` is allowed)."""
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form --config.section.field=value")
    set_value(config, key.removeprefix("--").removeprefix("config."), value)
  return config


def set_value(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets `config[dotted]` from a command-line string, parsed as the field's declared type."""
  *parents, leaf = dotted.split(".")
  node = config
  for name in parents:
    if name not in node:
      raise ConfigError(f"unknown config field {dotted!r} (no section {name!r}); see `sora-jax config --show`")
    node = node[name]
  if leaf not in node:
    raise ConfigError(f"unknown config field {dotted!r}; fields here: {sorted(node.keys())}")
  like = schema.BY_NAME[dotted].default if dotted in schema.BY_NAME else node[leaf]
  try:
    value = _parse_like(like, text)
  except (ValueError, json.JSONDecodeError) as e:
    raise ConfigError(f"config field {dotted!r}: cannot parse {text!r} as {type(like).__name__}") from e
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
    t = text.strip()
    if t[:1] in "[(" and t[-1:] in "])":
      t = t[1:-1]
    return tuple(_scalar(v.strip()) for v in t.split(",") if v.strip())
  return text


def _scalar(text: str):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text.strip("'\"")


def migrate(saved: dict) -> ml_collections.ConfigDict:
  """A config saved by any version (a dict from JSON) -> today's schema.

  Fields added since take their defaults (or the value in LEGACY that keeps the saved run's
  behaviour); fields no longer in the schema are dropped; JSON lists become tuples again.
  """
  config = schema.defaults()
  for f in schema.FIELDS:
    try:
      value = schema.get(saved, f.name)
    except (KeyError, TypeError):
      value = LEGACY.get(f.name, f.default)
    *parents, leaf = f.name.split(".")
    node = config
    for p in parents:
      node = node[p]
    with node.ignore_type():
      node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def to_dict(config) -> dict:
  return json.loads(json.dumps(config.to_dict(), default=str))


def to_json(config) -> str:
  return json.dumps(to_dict(config), indent=2, sort_keys=True)
