"""What `config.data.name` and `config.data.data_dir` mean: the one parser every stage uses."""

from __future__ import annotations

import os
import pathlib

from sora_jax.errors import ConfigError

BUILTIN = ("moving_shapes", "moving_digits", "moving_actors")


def parse_data_name(name) -> tuple[str, str]:
  """'moving_shapes/small' -> ('builtin', 'moving_shapes/small'); 'tfrecord:/p' -> ('tfrecord', '/p')."""
  if not isinstance(name, str) or not name:
    raise ConfigError(f"config.data.name={name!r} must be a non-empty string; use 'moving_shapes', "
                      "'moving_digits', 'tfrecord:PATH' or 'tfds:NAME/CONFIG'")
  if name.startswith("tfrecord:"):
    path = name[len("tfrecord:"):]
    if not path:
      raise ConfigError("config.data.name='tfrecord:' names no folder; use 'tfrecord:PATH' with the OUT of "
                        "`sora-jax prepare`")
    return "tfrecord", os.path.expanduser(path)
  if name.startswith("tfds:"):
    rest = name[len("tfds:"):]
    if not rest:
      raise ConfigError("config.data.name='tfds:' names no dataset; use e.g. 'tfds:ucf101/ucf101_1_256'")
    return "tfds", rest
  if name.split("/")[0] in BUILTIN and name.count("/") <= 1:
    return "builtin", name
  raise ConfigError(f"config.data.name={name!r} is not supported; use 'moving_shapes[/small]', "
                    "'moving_digits[/small]', 'moving_actors[/small]', 'tfrecord:PATH' or 'tfds:NAME/CONFIG'")


def data_dir(config) -> str:
  """config.data.data_dir, else $SORA_JAX_DATA_DIR, else ~/.cache/sora_jax/datasets."""
  d = config.data.data_dir or os.environ.get("SORA_JAX_DATA_DIR", "") or "~/.cache/sora_jax/datasets"
  return d if "://" in d else str(pathlib.Path(d).expanduser())
