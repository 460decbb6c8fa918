"""The `sora-jax` command. Each subcommand lives in its own module and is imported only when run."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from sora_jax.errors import SoraError

# name -> (module with `add_arguments(parser)` and `run(args)`, one-line help)
SUBCOMMANDS = {
    "prepare": ("sora_jax.data.prepare_cli", "decode a folder or manifest of videos into sharded TFRecords"),
    "model-summary": ("sora_jax.models.summary", "table of modules, shapes, parameters and FLOPs for a config"),
    "train": ("sora_jax.training.cli", "pretrain an encoder (same as train.py)"),
    "eval": ("sora_jax.evaluation.cli", "evaluate a trained run (same as eval.py)"),
    "embed": ("sora_jax.apps.embed_cli", "embed a folder of videos into a searchable index"),
    "search": ("sora_jax.apps.search_cli", "nearest videos to a query file or id"),
    "predict": ("sora_jax.apps.predict_cli", "class probabilities for one video file"),
}


def _available():
  return {name: v for name, v in SUBCOMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="sora-jax", description="Self-supervised video representations in JAX.")
  parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module_name, help_text) in _available().items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    p.set_defaults(_module=module_name)
    importlib.import_module(module_name).add_arguments(p)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log lines are noise here
  debug = "--debug" in argv
  try:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
      parser.print_help()
      return 2
    return int(importlib.import_module(args._module).run(args) or 0)
  except SoraError as e:
    if debug:
      raise
    print(f"sora-jax: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("sora-jax: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
