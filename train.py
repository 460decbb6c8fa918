"""Pretrain a video encoder: `python train.py --config default --workdir runs/demo`.

The same command as `sora-jax train` (see README): a named config or a config file, any field
overridden with `--config.section.field=value`, multi-host flags, resume by rerunning.
"""

import sys

from sora_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["train", *sys.argv[1:]]))
