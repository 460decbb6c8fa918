"""Checks of `config.data` (runs at start-up, before anything reads a file)."""

from __future__ import annotations

import os
import pathlib

from sora_jax.config import check_choice, check_float, check_int
from sora_jax.errors import ConfigError

BUILTIN = ("moving_shapes", "moving_digits")
VIEW_GAPS = ("uniform", "decreasing")
SAMPLINGS = ("random", "uniform", "centred")


def parse_name(name: str) -> tuple[str, str]:
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
                    "'moving_digits[/small]', 'tfrecord:PATH' or 'tfds:NAME/CONFIG'")


def data_dir(config) -> str:
  """config.data.data_dir, else $SORA_JAX_DATA_DIR, else ~/.cache/sora_jax/datasets."""
  d = config.data.get("data_dir", "") or os.environ.get("SORA_JAX_DATA_DIR", "") or "~/.cache/sora_jax/datasets"
  return str(pathlib.Path(d).expanduser())


def _check_range(config, dotted: str, lo: float, hi: float) -> None:
  node = config
  for k in dotted.split("."):
    node = node[k]
  if not (isinstance(node, (tuple, list)) and len(node) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node)
          and lo <= node[0] <= node[1] <= hi):
    raise ConfigError(f"config.{dotted}={node!r} must be a pair (low, high) with {lo} <= low <= high <= {hi}")


def validate(config) -> None:
  parse_name(config.data.name)
  check_int(config, "data.num_frames", minimum=1, maximum=1024)
  check_int(config, "data.frame_size", minimum=8, maximum=1024)
  check_int(config, "data.stride", minimum=1, maximum=64)
  check_int(config, "data.num_views", minimum=1, maximum=16)
  check_choice(config, "data.view_gap", VIEW_GAPS)
  if "sampling" in config.data:
    check_choice(config, "data.sampling", SAMPLINGS)
  for split in ("train_split", "eval_split"):
    if not isinstance(config.data[split], str) or not config.data[split]:
      raise ConfigError(f"config.data.{split}={config.data[split]!r} must name a split, e.g. 'train'")
  a = "data.augment"
  _check_range(config, f"{a}.crop_scale", 0.01, 1.0)
  for p in ("flip_prob", "color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
    check_float(config, f"{a}.{p}", minimum=0.0, maximum=1.0)
  check_float(config, f"{a}.color_jitter_strength", minimum=0.0, maximum=4.0)
  jitter = tuple(config.data.augment.get("color_jitter", ()))
  if jitter and (len(jitter) != 4 or not all(isinstance(v, (int, float)) and v >= 0 for v in jitter)
                 or jitter[3] > 0.5):
    raise ConfigError(f"config.data.augment.color_jitter={jitter!r} must be () or 4 numbers >= 0 (brightness, "
                      "contrast, saturation, hue maxima; hue <= 0.5), e.g. (0.2, 0.3, 0.8, 0.5)")
  if not isinstance(config.data.augment.per_frame_jitter, bool):
    raise ConfigError(f"config.data.augment.per_frame_jitter={config.data.augment.per_frame_jitter!r} must be "
                      "true or false")
  check_int(config, "data.shuffle_buffer", minimum=0)
  npc = check_int(config, "data.num_parallel_calls", minimum=-1)
  if npc == 0:
    raise ConfigError("config.data.num_parallel_calls=0 must be -1 (AUTOTUNE) or >= 1")
  check_int(config, "data.prefetch", minimum=0)
  if "train" in config and "batch_size" in config.train:
    bs = config.train.batch_size
    if isinstance(bs, int) and bs < 1:
      raise ConfigError(f"config.train.batch_size={bs} must be >= 1")
