"""Evaluate a trained run: `python eval.py --workdir runs/demo` (the config is read from the workdir).

The same command as `sora-jax eval` (see README); eval settings change with `--config.eval.FIELD=value`.
"""

import sys

from sora_jax.cli import main

if __name__ == "__main__":
  sys.exit(main(["eval", *sys.argv[1:]]))
