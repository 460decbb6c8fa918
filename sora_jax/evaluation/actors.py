"""Per-actor figures: which action (motion) and which shape each actor of a clip has.

Every present actor of every clip is one example: its features are the run's per-actor ones
(`actor_pooled` or `actor_embedding`, as config.eval.feature picks for clips) or, for the clip-level
baseline, its clip's vector repeated for each of its actors. The clip vector cannot tell its actors
apart: on labels that differ between the actors of a clip it should stay near the share of the
clip's most frequent label, which the `clip` rows show beside the run's.
"""

from __future__ import annotations

import numpy as np

from sora_jax.evaluation import probes, suite


def per_actor(split: dict, feature: str) -> dict | None:
  """An embedded split with actors -> {feature: [M, D], label, motion_label, video_id} over its M
  present actors (label = the actor's shape, motion_label = its action); None without actors or
  without `feature`."""
  if "actor_mask" not in split or feature not in split:
    return None
  mask = split["actor_mask"].astype(bool)
  x = split[feature]
  x = x[mask] if x.ndim == 3 else np.repeat(x, mask.sum(1), axis=0)  # [N, A, D] or a clip's [N, D] per actor
  return {feature: x, "label": split["actor_label"][mask], "motion_label": split["actor_motion"][mask],
          "video_id": np.repeat(split["video_id"], mask.sum(1))}


def actor_figures(config, info: dict, ordered: tuple[dict, dict, dict]) -> dict:
  """{"actor": {"shape": figures, "motion": figures}, "clip": {...}}: the probes on the actors of the
  (train, val, test) splits, from per-actor features (when the model has them) and from the clips'."""
  clip_feature = config.eval.feature
  out = {}
  for name, feature in (("actor", f"actor_{clip_feature}"), ("clip", clip_feature)):
    splits = [per_actor(s, feature) for s in ordered]
    if any(s is None for s in splits):
      continue
    figs = {}
    for what, key, n in (("shape", "label", int(info["num_classes"])),
                         ("motion", "motion_label", int(info.get("num_motion_classes") or 0))):
      f = suite.figures(config, *splits, label_key=key, num_classes=n, with_retrieval=False, feature=feature)
      if f:
        figs[what] = f
    out[name] = figs
  if out:
    test = per_actor(ordered[2], clip_feature)
    out["chance"] = {"shape": suite.chance(test, "label"), "motion": suite.chance(test, "motion_label")}
  return out


CLASSIFIER_FILE = "actor_classifier.npz"  # under W/eval: what `sora-jax predict --tracks` reads


def fit_classifiers(config, info: dict, ordered: tuple[dict, dict, dict], figures: dict) -> dict | None:
  """The per-actor linear classifiers of the probes (each refit on train + validation with the
  learning rate and weight decay its probe chose): {'feature', '<what>_w' [D, C], '<what>_b' [C],
  '<what>_names' [C]} for shape and motion; None without per-actor features."""
  feature = f"actor_{config.eval.feature}"
  splits = [per_actor(s, feature) for s in ordered[:2]]
  if any(s is None for s in splits) or "actor" not in figures:
    return None
  out = {"feature": np.array(feature)}
  for what, key, names in (("shape", "label", info["class_names"]), ("motion", "motion_label", info["motion_names"])):
    if what not in figures["actor"]:
      continue
    x = np.concatenate([s[feature] for s in splits])
    y = np.concatenate([s[key] for s in splits])
    x, y = probes.known(x, y)
    protocol = figures["actor"][what]["linear_protocol"]
    w, b = probes.fit_linear(x, y, len(names), [protocol["learning_rate"]], [protocol["weight_decay"]],
                             steps=config.eval.probe_steps)
    out.update({f"{what}_w": w[0], f"{what}_b": b[0], f"{what}_names": np.array([str(n) for n in names])})
  return out
