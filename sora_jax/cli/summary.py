"""`sora-jax model-summary`: modules, output shapes, parameter counts and FLOPs per clip for a config;
with --per-device-batch, the train step's memory per device on the last line."""

from __future__ import annotations

import sys

TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
  parser.add_argument("--config", default="default", help="a named config or a config file")
  parser.add_argument("--depth", type=int, default=2, help="module nesting depth shown (default 2)")
  parser.add_argument("--no-module-flops", action="store_true",
                      help="skip per-module FLOPs (faster; the total is always computed)")
  parser.add_argument("--per-device-batch", type=int, default=None, metavar="N",
                      help="also compile the train step for one device holding N clips and print its memory "
                           "(XLA's memory analysis: state, temporaries, outputs)")
  parser.add_argument("--platform", choices=("cpu", "cuda", "rocm", "tpu"), default=None,
                      help="compile the memory figure for this platform (default: the current backend); where it "
                           "is not installed, the CPU figure is printed as a proxy and says so")


def run(args) -> int:
  import jax

  from sora_jax.config import load_config, validate
  from sora_jax.models.summary import format_table, summary_rows
  from sora_jax.training import memory
  config = validate(load_config(args.config, args.overrides))
  rows, totals = summary_rows(config, depth=args.depth, module_flops=not args.no_module_flops)
  print(format_table(rows, totals))
  if args.per_device_batch is None:
    return 0
  device = None
  if args.platform:
    try:
      device = jax.devices(args.platform)[0]
    except RuntimeError:
      print(f"no {args.platform} backend on this machine: the figure below is compiled for "
            f"{jax.default_backend()} as a proxy (the same program; each backend fuses and schedules it its own "
            "way, so take it as an estimate, and recompile on the target to be sure)", file=sys.stderr)
  print(memory.describe(memory.step_memory(config, args.per_device_batch, device)))
  return 0
