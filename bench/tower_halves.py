"""What each tower of a `model.frame_input=two_tower` run learned: eval's linear probe (appearance and
motion labels) on each tower's half of the cached `pooled` features, and on both.

  python eval.py --workdir RUN           # caches the features under RUN/eval/embeddings/ssl/
  python bench/tower_halves.py RUN

Prints a table and, last, one JSON line {tower: {label: accuracy %}}.
"""

from __future__ import annotations

import argparse
import json

from sora_jax.config.load import migrate
from sora_jax.evaluation import features, probes
from sora_jax.training.checkpoint import saved_run_config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  args = parser.parse_args()
  e = migrate(saved_run_config(args.workdir)[0]).eval  # the probe sweep eval ran
  root = f"{args.workdir}/eval/embeddings/ssl/"
  splits = {s: features.load(root + s) for s in ("train", "validation", "test")}
  width = splits["train"]["pooled"].shape[1] // 2
  out = {}
  for tower, cols in (("rgb", slice(0, width)), ("second", slice(width, None)), ("both", slice(None))):
    x = {s: d["pooled"][:, cols] for s, d in splits.items()}  # (the probe L2-normalises its input)
    for label in ("label", "motion_label"):
      y = {s: d[label] for s, d in splits.items()}
      classes = int(max(y["train"].max(), y["test"].max()) + 1)
      fit = probes.linear_probe(x["train"], y["train"], x["validation"], y["validation"], x["test"], y["test"],
                                num_classes=classes, learning_rates=tuple(e.probe_learning_rates),
                                weight_decays=tuple(e.probe_weight_decays), steps=e.probe_steps)
      out.setdefault(tower, {})[label] = round(100 * fit["accuracy"], 1)
  print(f"{'tower':8s} {'appearance':>10s} {'motion':>8s}")
  for tower, row in out.items():
    print(f"{tower:8s} {row['label']:10.1f} {row['motion_label']:8.1f}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
