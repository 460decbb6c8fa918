"""Temporal probes: how much the representation uses time.

- motion: the appearance protocols on the motion labels (direction of movement on the built-in
  datasets), which no single frame can tell;
- shuffled: the same probes on embeddings of clips whose frames were permuted (independently per
  clip, seeded), for both labellings. The drop from ordered to shuffled clips is the part of the
  figure that depends on frame order.
"""

from __future__ import annotations

from sora_jax.evaluation import suite


def temporal_figures(config, info: dict, ordered: tuple[dict, dict, dict], shuffled: tuple[dict, dict, dict] | None) -> dict:
  """-> {"motion", "shuffled_appearance", "shuffled_motion", "drop"}: figures dicts (absent when not computable)."""
  out = {}
  n_motion = int(info.get("num_motion_classes") or 0)
  motion = suite.figures(config, *ordered, label_key="motion_label", num_classes=n_motion)
  if motion:
    out["motion"] = motion
  if shuffled is not None:
    app = suite.figures(config, *shuffled, label_key="label", num_classes=int(info["num_classes"]),
                        with_retrieval=False)
    if app:
      out["shuffled_appearance"] = app
    mot = suite.figures(config, *shuffled, label_key="motion_label", num_classes=n_motion, with_retrieval=False)
    if mot:
      out["shuffled_motion"] = mot
  return out


def drops(figs: dict) -> dict:
  """Ordered minus shuffled linear-probe accuracy, per labelling (positive = uses frame order)."""
  out = {}
  for name, shuf in (("appearance", "shuffled_appearance"), ("motion", "shuffled_motion")):
    if name in figs and shuf in figs:
      out[name] = figs[name]["linear"] - figs[shuf]["linear"]
  return out
