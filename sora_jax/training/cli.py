"""`sora-jax train`: same as train.py (config file + key=value overrides, multi-host flags)."""

from __future__ import annotations


def add_arguments(parser) -> None:
  parser.add_argument("--config", default="configs/default.py", help="run config (configs/*.py)")
  parser.add_argument("--workdir", required=True, help="checkpoints, metrics and reports go here; "
                      "an existing run there is resumed")
  parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                      help="config overrides, e.g. train.num_steps=100 optimizer.learning_rate=3e-4")
  parser.add_argument("--coordinator_address", default=None, help="multi-host: host:port of process 0 "
                      "(or $JAX_COORDINATOR_ADDRESS; SLURM/TPU pods are detected)")
  parser.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
  parser.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
  parser.add_argument("--no_quick_eval", action="store_true", help="skip the periodic kNN evaluation")


def run(args) -> int:
  import logging
  from sora_jax.config import load_config, validate
  logging.basicConfig(level=logging.WARNING, format="%(message)s")  # orbax/absl INFO is noise here
  config = validate(load_config(args.config, args.overrides))
  from sora_jax.parallel import distributed
  distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  from sora_jax.training import entry
  hooks = () if args.no_quick_eval else entry.default_hooks(config)
  return entry.main(config, args.workdir, hooks=hooks)
