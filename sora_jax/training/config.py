"""Checks of `config.train`, `config.optimizer` and `config.mesh` (start-up, before compile).

Checks that need the device count (mesh.data=-1) run again in `parallel.mesh.make_mesh`, which
also raises ConfigError before anything compiles.
"""

from __future__ import annotations

from sora_jax.config import check_choice, check_float, check_int
from sora_jax.errors import ConfigError


def validate(config) -> None:
  batch = check_int(config, "train.batch_size", minimum=1)
  check_int(config, "train.num_steps", minimum=1)
  accum = check_int(config, "train.grad_accum_steps", minimum=1)
  check_int(config, "train.checkpoint_every", minimum=0)
  check_int(config, "train.keep_checkpoints", minimum=1)
  check_int(config, "train.log_every", minimum=1)
  check_int(config, "train.quick_eval_every", minimum=0)
  if batch % accum:
    raise ConfigError(f"config.train.batch_size={batch} is not divisible by train.grad_accum_steps={accum}; "
                      "make the batch a multiple of the accumulation steps")

  check_choice(config, "optimizer.name", ("adamw", "sgd", "lars"))
  check_float(config, "optimizer.learning_rate", minimum=0.0, exclusive_minimum=True)
  check_int(config, "optimizer.warmup_steps", minimum=0)
  check_choice(config, "optimizer.schedule", ("cosine", "constant"))
  check_float(config, "optimizer.weight_decay", minimum=0.0)
  check_float(config, "optimizer.momentum", minimum=0.0, maximum=1.0)
  check_float(config, "optimizer.clip_norm", minimum=0.0)

  data = check_int(config, "mesh.data", minimum=-1)
  fsdp = check_int(config, "mesh.fsdp", minimum=1)
  if data == 0:
    raise ConfigError("config.mesh.data=0 is not a device count; use -1 (all devices) or a positive number")
  if data > 0:
    check_batch_divisible(batch, accum, data * fsdp, f"mesh.data*mesh.fsdp={data}*{fsdp}")


def check_batch_divisible(batch: int, accum: int, shards: int, what: str) -> None:
  """The global (micro-)batch must split evenly over the devices that hold batch rows."""
  if batch % (accum * shards):
    raise ConfigError(f"config.train.batch_size={batch} is not divisible by the data axis ({what}={shards}"
                      f"{f' x grad_accum_steps={accum}' if accum > 1 else ''}); use a multiple of "
                      f"{accum * shards}, e.g. --config.train.batch_size={max(1, batch // (accum * shards) + 1) * accum * shards}")
