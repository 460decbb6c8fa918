"""`sora-jax config`: the named configs, and every field of one (value, type, doc) from the schema."""

from __future__ import annotations

TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
  parser.add_argument("--list", action="store_true", help="the named configs shipped with the package")
  parser.add_argument("--show", metavar="CONFIG", default=None,
                      help="a named config or a config file: print every field as a markdown table")
  parser.add_argument("--json", action="store_true", help="with --show: the resolved config as JSON instead")


def run(args) -> int:
  from sora_jax.config import load_config, named_configs, reference, to_json, validate
  if args.show is None:
    print("\n".join(named_configs()))
    return 0
  config = validate(load_config(args.show, args.overrides))
  print(to_json(config) if args.json else reference(config))
  return 0
