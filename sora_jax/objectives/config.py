"""Checks of `config.objective` (runs at start-up, before anything compiles)."""

from __future__ import annotations

from sora_jax.config import check_choice, check_float
from sora_jax.errors import ConfigError

OBJECTIVES = ("infonce", "predictive", "supervised", "infonce+predictive", "infonce+supervised",
              "predictive+supervised", "infonce+predictive+supervised")


def terms(name: str) -> tuple[str, ...]:
  """'infonce+predictive' -> ('infonce', 'predictive')."""
  return tuple(name.split("+"))


def validate(config) -> None:
  name = check_choice(config, "objective.name", OBJECTIVES)
  check_float(config, "objective.temperature", minimum=0.0, exclusive_minimum=True)
  for term in terms(name):
    check_float(config, f"objective.{term}_weight", minimum=0.0)
  if "infonce" in terms(name) and config.data.num_views < 2:
    raise ConfigError(f"config.data.num_views={config.data.num_views} but objective {name!r} needs >= 2 views "
                      "of each video; set --config.data.num_views=2 or use objective.name='predictive'")
  if "predictive" in terms(name):
    if config.model.get("predict_steps", 0) < 1:
      raise ConfigError(f"objective {name!r} needs the DPC predictor; set --config.model.predict_steps=2 (>= 1)")
    if config.model.predict_steps >= config.data.num_frames:
      raise ConfigError(f"config.model.predict_steps={config.model.predict_steps} must be < "
                        f"data.num_frames={config.data.num_frames} (there must be a future to predict)")
    m = config.model
    if m.get("bidirectional", False) or (m.get("temporal") == "transformer" and not m.get("causal", False)):
      raise ConfigError(f"objective {name!r} predicts the future from sequence[t], which must not see frames "
                        "after t; set --config.model.bidirectional=False (and model.causal=True for a transformer)")
  if "supervised" in terms(name) and config.model.get("num_classes", 0) < 1:
    raise ConfigError(f"objective {name!r} needs a classifier; set --config.model.num_classes to the "
                      "dataset's number of classes")
