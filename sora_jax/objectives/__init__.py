"""Objectives: pure functions of model outputs on global arrays -> (loss, metrics).

`compute_loss(config, outputs_per_view, batch, params=None)` combines the terms named by
`config.objective.name` ('infonce', 'predictive', 'supervised', joined by '+') with the weights
`config.objective.<term>_weight`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from sora_jax.config import terms
from sora_jax.objectives.contrastive import infonce
from sora_jax.objectives.predictive import predictive
from sora_jax.objectives.supervised import supervised

__all__ = ["compute_loss", "infonce", "predictive", "supervised", "init_params", "temperature"]


def init_params(config) -> dict:
  """Trainable parameters owned by the objective: the log-temperature when it is learned."""
  if config.objective.learn_temperature:
    return {"log_temperature": jnp.log(jnp.asarray(config.objective.temperature, jnp.float32))}
  return {}


def temperature(config, params: Mapping[str, Any] | None) -> jax.Array | float:
  """The softmax temperature: exp(learned log-T) clipped to [0.01, 1], else the fixed value."""
  if params and "log_temperature" in params:
    return jnp.clip(jnp.exp(params["log_temperature"]), 0.01, 1.0)
  return config.objective.temperature


def compute_loss(config, outputs_per_view: Sequence[Mapping[str, jax.Array]], batch: Mapping[str, jax.Array],
                 params: Mapping[str, Any] | None = None) -> tuple[jax.Array, dict]:
  """Weighted sum of the configured terms.

  Args:
    outputs_per_view: V dicts of `VideoEncoder` outputs for `[B, ...]` inputs (one per view).
    batch: at least `label` int32 `[B]` (for supervised).
    params: the objective's own parameters (`init_params`), e.g. a learned temperature.
  Returns:
    (loss scalar float32, metrics dict of scalars: each term's loss and accuracy, 'temperature').
  """
  temp = temperature(config, params)
  loss = jnp.zeros((), jnp.float32)
  metrics: dict[str, jax.Array] = {}
  for term in terms(config.objective.name):
    weight = getattr(config.objective, f"{term}_weight")
    if term == "infonce":
      emb = jnp.stack([o["embedding"] for o in outputs_per_view], axis=1)  # [B, V, E]
      value, m = infonce(emb, temp)
    elif term == "predictive":
      parts = [predictive(o["predictions"], o["targets"], temp) for o in outputs_per_view]
      value = jnp.mean(jnp.stack([p[0] for p in parts]))
      m = {"predictive_accuracy": jnp.mean(jnp.stack([p[1]["predictive_accuracy"] for p in parts]))}
    else:
      parts = [supervised(o["logits"], batch["label"]) for o in outputs_per_view]
      value = jnp.mean(jnp.stack([p[0] for p in parts]))
      m = {"supervised_accuracy": jnp.mean(jnp.stack([p[1]["supervised_accuracy"] for p in parts]))}
    metrics[f"{term}_loss"] = value
    metrics.update(m)
    loss = loss + weight * value
  metrics["temperature"] = jnp.asarray(temp, jnp.float32)
  return loss, metrics
