"""`sora-jax eval` (and `python eval.py`): every protocol on a run and its baselines; prints the table."""

from __future__ import annotations

TAKES_OVERRIDES = True  # eval.* fields only: the run's model and data are what was trained


def add_arguments(parser) -> None:
  parser.add_argument("--workdir", required=True, help="a training run's workdir (its config is read from there)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step to evaluate (default: the latest)")
  parser.add_argument("--baselines", default=None,
                      help="comma-separated baselines to evaluate beside the run, of random, supervised, "
                           "pretrained, bag_of_words, i3d_kinetics; a generator run's: generate_mse (default: config.eval.baselines; '' for none)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
  import logging

  from sora_jax.evaluation import report
  from sora_jax.evaluation.run import evaluate
  logging.basicConfig(level=logging.INFO, format="%(message)s")  # the steps of a long evaluation
  baselines = None if args.baselines is None else tuple(b for b in args.baselines.split(",") if b)
  rep = evaluate(args.workdir, step=args.step, progress=not args.no_progress, baselines=baselines,
                 overrides=args.overrides)
  if rep.get("kind") == "generator":
    from sora_jax.evaluation.generation import markdown
    print("\n" + markdown(rep))
    print(f"report: {rep['paths']['md']}  figures: {rep['paths']['json']}  clips: {rep['paths']['png']}")
    return 0
  print(f"\nsora-jax eval: {args.workdir} (checkpoint step {rep['checkpoint_step']}, {rep['dataset']['name']}; "
        f"% on the {rep['config']['data']['eval_split']} split)\n")
  print(report.text_table(rep))
  if report.actor_text(rep):
    print("\n" + report.actor_text(rep))
  print(f"\nreport: {rep['paths']['md']}  figures: {rep['paths']['json']}")
  return 0
