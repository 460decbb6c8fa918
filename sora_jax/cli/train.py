"""`sora-jax train` (and `python train.py`): pretrain an encoder; rerunning resumes the workdir's run."""

from __future__ import annotations

import argparse
import logging
import sys

TAKES_OVERRIDES = True
EX_TEMPFAIL = 75  # (sysexits.h) a preempted run: the same command resumes it


def add_arguments(parser) -> None:
  parser.add_argument("--config", default="default",
                      help="a named config (default, dpc, seed, supervised, large, text; see `sora-jax config --list`) "
                           "or a config file (.py with get_config())")
  parser.add_argument("--workdir", required=True, help="checkpoints, metrics and reports go here (a local path or "
                      "a URL); an existing run there is resumed")
  parser.add_argument("--coordinator-address", default=None, help="multi-host: host:port of process 0 "
                      "(or $JAX_COORDINATOR_ADDRESS; SLURM/TPU pods are detected)")
  parser.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
  parser.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
  parser.add_argument("--no-quick-eval", action="store_true", help="skip the periodic kNN evaluation "
                      "(train.quick_eval_every)")
  old = {"coordinator_address": {}, "num_processes": {"type": int}, "process_id": {"type": int},
         "no_quick_eval": {"action": "store_true"}}
  for flag, kind in old.items():  # the spellings before kebab-case: still read, no longer listed
    parser.add_argument(f"--{flag}", dest=flag, help=argparse.SUPPRESS, **kind)


def run(args) -> int:
  from sora_jax.config import load_config
  logging.basicConfig(level=logging.WARNING, format="%(message)s")  # orbax/absl INFO is noise here
  config = load_config(args.config, args.overrides)
  from sora_jax.parallel import distributed
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  import jax

  from sora_jax.evaluation.quick import make_quick_eval
  from sora_jax.training.loop import train
  hooks = (make_quick_eval(config),) if config.train.quick_eval_every and not args.no_quick_eval else ()
  state = train(config, args.workdir, hooks=hooks)
  if int(state.step) < config.train.num_steps:  # stopped by SIGTERM or Ctrl-C (the loop said so), saved
    return EX_TEMPFAIL  # not done: `make train` does not go on to eval, a job scheduler sees it unfinished
  if jax.process_index() == 0:
    print(f"done: step {int(state.step)}, workdir {args.workdir}", file=sys.stderr)
  return 0
