"""`sora-jax eval --workdir W`: the same as `python eval.py --workdir W`."""

from __future__ import annotations


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="a training run's workdir (its config is read from there)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step to evaluate (default: the latest)")
  parser.add_argument("--baselines", default=None,
                      help="comma-separated baselines to evaluate beside the run: random,supervised "
                           "(default: config.eval.baselines; '' for none)")
  parser.add_argument("--set", action="append", default=[], metavar="eval.FIELD=VALUE",
                      help="change an eval setting of the run's config, e.g. --set eval.num_clips=4 (repeatable)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
  from sora_jax.evaluation import entry
  baselines = None if args.baselines is None else tuple(b for b in args.baselines.split(",") if b)
  return entry.main(args.workdir, step=args.step, progress=not args.no_progress, baselines=baselines,
                    overrides=args.set)
