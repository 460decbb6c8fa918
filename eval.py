"""Evaluate a trained run: `python eval.py --workdir runs/demo` (config is read from the workdir).

Linear probe, kNN, retrieval R@k, temporal probes and fine-tuning against the random-weights and
supervised baselines (config.eval.baselines); writes <workdir>/eval/report.{json,md} and PNG plots
and prints the table.
"""

import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "a training run's workdir", required=True)
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
_BASELINES = flags.DEFINE_list("baselines", None, "random,supervised (default: config.eval.baselines)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars")
_SET = flags.DEFINE_multi_string("set", [], "eval.FIELD=VALUE changes to the run's eval settings (repeatable)")


def main(argv):
  del argv
  from sora_jax.errors import SoraError
  try:
    from sora_jax.evaluation import entry
    return entry.main(_WORKDIR.value, step=_STEP.value, progress=_PROGRESS.value, baselines=_BASELINES.value,
                      overrides=_SET.value)
  except SoraError as e:
    print(f"eval.py: error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
