"""`sora-jax model-summary`: modules, output shapes, parameter counts and FLOPs per clip for a config."""

from __future__ import annotations

TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
  parser.add_argument("--config", default="default", help="a named config or a config file")
  parser.add_argument("--depth", type=int, default=2, help="module nesting depth shown (default 2)")
  parser.add_argument("--no-module-flops", action="store_true",
                      help="skip per-module FLOPs (faster; the total is always computed)")


def run(args) -> int:
  from sora_jax.config import load_config, validate
  from sora_jax.models.summary import format_table, summary_rows
  config = validate(load_config(args.config, args.overrides))
  rows, totals = summary_rows(config, depth=args.depth, module_flops=not args.no_module_flops)
  print(format_table(rows, totals))
  return 0
