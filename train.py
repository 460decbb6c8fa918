"""Pretrain a video encoder: `python train.py --config configs/default.py --workdir runs/demo`.

Thin absl entry point; the work is in sora_jax.training (see README). Override any config field
with `--config.train.num_steps=100`. Multi-host: run one process per host with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (or $JAX_COORDINATOR_ADDRESS,
$JAX_NUM_PROCESSES, $JAX_PROCESS_ID; SLURM and TPU pods are detected). Rerunning the same
command resumes from the workdir's latest checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "run config (configs/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, metrics and reports go", required=True)
_COORD = flags.DEFINE_string("coordinator_address", None, "multi-host: host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
_PID = flags.DEFINE_integer("process_id", None, "multi-host: index of this process")
_QUICK = flags.DEFINE_bool("quick_eval", True, "periodic kNN accuracy while training (train.quick_eval_every)")


def main(argv):
  del argv
  from sora_jax.errors import SoraError
  logging.set_verbosity(logging.WARNING)  # orbax/tfds INFO lines drown the progress bar
  try:
    from sora_jax.config import validate
    config = validate(_CONFIG.value)  # one-line errors before any device is touched
    from sora_jax.parallel import distributed
    distributed.initialize(_COORD.value, _NPROC.value, _PID.value)
    from sora_jax.training import entry
    hooks = entry.default_hooks(config) if _QUICK.value else ()
    return entry.main(config, _WORKDIR.value, hooks=hooks)
  except SoraError as e:
    print(f"train.py: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
