"""Pretrain a video encoder: `python train.py --config configs/default.py --workdir runs/demo`.

Thin absl entry point; the work is in sora_jax.training (see README).
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "run config (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and reports go", required=True)


def main(argv):
  del argv
  from sora_jax.training import entry
  return entry.main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
