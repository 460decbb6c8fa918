"""Evaluate a trained run: `python eval.py --workdir runs/demo` (config is read from the workdir)."""

from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "a training run's workdir", required=True)


def main(argv):
  del argv
  from sora_jax.evaluation import entry
  return entry.main(_WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
