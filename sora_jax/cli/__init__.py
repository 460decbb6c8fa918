"""The `sora-jax` command. `train.py` and `eval.py` are shims over the same code.

Each subcommand is a module here with `add_arguments(parser)` and `run(args)`, which calls one
library function. Modules are imported only when their subcommand runs, so `sora-jax --help`
starts without jax or tensorflow. Config fields are overridden with `--config.section.field=value`
wherever a subcommand takes a config (train, model-summary, config) or changes one (eval).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from sora_jax.errors import ConfigError, SoraError, unwritable, unwritable_message

# name -> (module under sora_jax.cli, one-line help)
SUBCOMMANDS = {
    "prepare": ("prepare", "decode a folder or manifest of videos into sharded TFRecords"),
    "config": ("config", "list the named configs, or show every field of one with its doc"),
    "model-summary": ("summary", "table of modules, shapes, parameters and FLOPs for a config"),
    "train": ("train", "pretrain an encoder (same as train.py)"),
    "eval": ("eval", "evaluate a trained run (same as eval.py)"),
    "embed": ("embed", "embed a folder of videos into a searchable index"),
    "search": ("search", "nearest videos to a query file or id"),
    "predict": ("predict", "class probabilities for one video file"),
    "generate": ("generate", "clips from a generator run: like a video, for a sentence, or between two"),
    "import-torch": ("import_torch", "a reference PyTorch state_dict -> a workdir the other commands read"),
    "export": ("export", "a run's encoder weights -> .safetensors or a PyTorch state_dict"),
}


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls `--config.a.b=v` and `--config.a.b v` out of argv -> (the rest, ['a.b=v', ...])."""
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      key, sep, value = arg[len("--config."):].partition("=")
      if not sep:
        if i + 1 >= len(argv):
          raise ConfigError(f"{arg} needs a value: --config.{key}=VALUE")
        i += 1
        value = argv[i]
      overrides.append(f"{key}={value}")
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="sora-jax", description="Self-supervised video representations in JAX.",
                                   epilog="Override any config field with --config.section.field=value.")
  parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (module, help_text) in SUBCOMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
    p.set_defaults(_module=module)
    if only in (None, name):  # only the chosen subcommand's module is imported
      importlib.import_module(f"sora_jax.cli.{module}").add_arguments(p)
  return parser


def set_environment() -> None:
  """Environment of a command's process, set before TensorFlow is imported (an existing value is kept).

  TensorFlow's C++ log lines are noise here. And `import tensorflow` loads Keras 3 (and through it
  scikit-learn), about 3 s of a 9.5 s import on a 2-core EPYC (`python bench/startup.py`), for
  `tf.keras`, which no command uses; with TF_USE_LEGACY_KERAS it tries the `tf_keras` package
  instead, and where that is not installed it loads nothing (`tf.keras` then fails on first use).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if importlib.util.find_spec("tf_keras") is None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  set_environment()
  debug = "--debug" in argv
  args = None
  try:
    argv, overrides = split_overrides(argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not args.command:
      parser.print_help()
      return 2
    module = importlib.import_module(f"sora_jax.cli.{args._module}")
    if overrides and not getattr(module, "TAKES_OVERRIDES", False):
      raise ConfigError(f"`sora-jax {args.command}` takes no --config.FIELD overrides (got {overrides[0]!r})")
    args.overrides = overrides
    return int(module.run(args) or 0)
  except SoraError as e:
    if debug:
      raise
    print(f"sora-jax: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print("sora-jax: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # noqa: BLE001 - a full or read-only disk is one line; anything else a traceback
    cause = None if debug else unwritable(e)
    if cause is None:
      raise
    where = getattr(args, "workdir", None) or getattr(args, "out", None)
    print(f"sora-jax: error: {unwritable_message(cause, where)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
