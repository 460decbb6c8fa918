"""Objectives: pure functions of model outputs on global arrays -> (loss, metrics).

`compute_loss(config, outputs, batch, params=None)` adds the terms named by
`config.objective.name` (any '+'-joined set of the registered TERMS) with the weights
`config.objective.<term>_weight`. A new term is one function here and its weight field in the schema.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from sora_jax.config import terms
from sora_jax.linalg import half_means
from sora_jax.models.generator import build_generator, init_generator
from sora_jax.objectives import generate as generate_lib, teacher as teacher_lib, video_text as video_text_lib
from sora_jax.objectives.actors import actor_infonce, actor_predictive
from sora_jax.objectives.collapse import collapse_metrics
from sora_jax.objectives.contrastive import infonce
from sora_jax.objectives.latent import latent_mask
from sora_jax.objectives.predictive import predictive
from sora_jax.objectives.supervised import supervised
from sora_jax.objectives.video_text import project_text, text_features, video_text

__all__ = ["TERMS", "compute_loss", "infonce", "predictive", "supervised", "video_text", "project_text", "text_features",
           "init_params", "pretrained", "sampling_generator", "temperature", "batch_keys", "latent_mask", "actor_infonce",
           "actor_predictive"]

TERM_SALT = 1 << 20  # the terms' keys: fold_in(step key, TERM_SALT + i), apart from the model's dropout key
GENERATOR_EMA = "generator_ema"  # params['objective'][GENERATOR_EMA]: the generator's weight average
TEXT_DIM = 384  # caption features of the frozen text tower (all-MiniLM-L6-v2)


def pretrained(config) -> dict:  # (a generate run's: training.state.pretrained_weights, the encoder run's)
  """Weights the objective starts from (numpy, loaded here, outside any jit; pass them to
  `init_params`): the pretrained text tower when text.train_layers > 0, else nothing."""
  return video_text_lib.pretrained(config) if "video_text" in terms(config.objective.name) else {}


def init_params(config, key=None, pretrained: dict | None = None) -> dict:
  """Trainable parameters owned by the objective: the log-temperature when it is learned; the text
  projection and its temperature for video_text (and the tower, from `pretrained`, when it trains);
  the predictor MLP for the teacher terms (moco, byol); the video generator for generate."""
  params = {}
  if config.objective.learn_temperature:
    params["log_temperature"] = jnp.log(jnp.asarray(config.objective.temperature, jnp.float32))
  key = jax.random.PRNGKey(config.seed) if key is None else key
  if "video_text" in terms(config.objective.name):
    params.update(video_text_lib.init_params(config, key, TEXT_DIM, pretrained))
  if any(t in teacher_lib.PREDICTOR_TERMS for t in terms(config.objective.name)):
    params["predictor"] = teacher_lib.init_predictor(jax.random.fold_in(key, 2), config.model.embed_dim,
                                                     config.objective.predictor_hidden)
  if "generate" in terms(config.objective.name):  # beside the encoder run's own (frozen: text projection...)
    params.update({k: v for k, v in (pretrained or {}).items() if k != "generator"})
    params["generator"] = init_generator(config, jax.random.fold_in(key, 3))
    if config.generate.ema_decay > 0:  # the average that samples (training.ema.average_generator)
      params[GENERATOR_EMA] = jax.tree_util.tree_map(jnp.copy, params["generator"])
  return params


def sampling_generator(params: Mapping[str, Any], average: bool = True):
  """The generator weights that sample: their moving average (generate.ema_decay > 0) unless
  `average` is False or the run kept none, else the trained weights."""
  return params[GENERATOR_EMA] if average and GENERATOR_EMA in params else params["generator"]


def temperature(config, params: Mapping[str, Any] | None) -> jax.Array | float:
  """The softmax temperature: exp(learned log-T) clipped to [0.01, 1], else the fixed value."""
  if params and "log_temperature" in params:
    return jnp.clip(jnp.exp(params["log_temperature"]), 0.01, 1.0)
  return config.objective.temperature


def _per_view(term, *arrays):
  """A term of one view's [B, ...] arrays, mapped over the view axis of [B, V, ...] arrays and
  averaged over the views (each view its own batch of negatives)."""
  value, metrics = jax.vmap(term, in_axes=1)(*arrays)
  return jnp.mean(value), {k: jnp.mean(m) for k, m in metrics.items()}


def _infonce(config, outputs, batch, params, temp, key):
  if "tower_embeddings" in outputs:  # model.frame_input=two_tower: each tower [B, V, 2, E'] its own InfoNCE
    towers = [outputs["tower_embeddings"][:, :, i] for i in range(2)]
    towers[1] = _with_reversed(towers[1], outputs)  # (time_reversal reverses the motion tower's clips)
    value, metrics = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[infonce(e, temp) for e in towers])
    # summed, so each tower's gradient is what it would be trained alone (clipped apart: training.optim)
    return jnp.sum(value), {k: jnp.mean(m) for k, m in metrics.items()}
  return infonce(_with_reversed(outputs["embedding"], outputs), temp)


def _with_reversed(embedding, outputs):
  """[B, V, E] -> [2B, V, E] with model.time_reversal: each clip played backwards is a video of its own."""
  if "reversed_embedding" in outputs:  # model.time_reversal
    return jnp.concatenate([embedding, outputs["reversed_embedding"]], axis=0)
  return embedding


def halves_apart(halves):
  """[B, V, 2, D] each view's features over the first and the second half of its frames -> [B, V, D]:
  view v's half v mod 2, so two views pair moments half a clip apart (what holds over time)."""
  return jnp.stack([halves[:, v, v % 2] for v in range(halves.shape[1])], 1)


def _appearance(config, outputs, batch, params, temp, key):
  frames = outputs["frames"]  # [B, V, T, D]: the frame encoder's features, before the temporal model
  loss, metrics = infonce(halves_apart(half_means(frames, 2)), temp)
  return loss, {"appearance_accuracy": metrics["contrastive_accuracy"]}


def _predictive(config, outputs, batch, params, temp, key):
  return _per_view(lambda p, t: predictive(p, t, temp), outputs["predictions"], outputs["targets"])


def _supervised(config, outputs, batch, params, temp, key):
  return _per_view(lambda logits: supervised(logits, batch["label"]), outputs["logits"])


def _video_text(config, outputs, batch, params, temp, key):
  text = project_text(params, text_features(config, params, batch["caption"], key))
  value, metrics = video_text(outputs["aligned"], text, batch["caption_id"], batch["caption_mask"],
                              video_text_lib.temperature(params))
  return value, dict(metrics, video_text_temperature=video_text_lib.temperature(params))


def _teacher_pair(outputs, params):
  """([B, V, E] the predictor on each view's embedding, [B, V, E] the teacher's embeddings)."""
  return teacher_lib.predict(params["predictor"], outputs["embedding"]), outputs["teacher"]


def _moco(config, outputs, batch, params, temp, key):
  return teacher_lib.moco(*_teacher_pair(outputs, params), temp)


def _byol(config, outputs, batch, params, temp, key):
  return teacher_lib.byol(*_teacher_pair(outputs, params))


def _actor_infonce(config, outputs, batch, params, temp, key):
  return actor_infonce(outputs["actor_embedding"], batch["actor_mask"], temp)


def _actor_predictive(config, outputs, batch, params, temp, key):
  return _per_view(lambda p, t: actor_predictive(p, t, batch["actor_mask"], temp), outputs["actor_predictions"],
                   outputs["actor_targets"])


def _actor_appearance(config, outputs, batch, params, temp, key):
  """View v's look over the first half of its frames (v even) or the second (v odd) [B, V, A, E]."""
  looks = halves_apart(jnp.swapaxes(outputs["actor_appearance_halves"], 2, 3))  # [B, V, 2, A, E] -> [B, V, A, E]
  loss, metrics = actor_infonce(looks, batch["actor_mask"], temp)
  return loss, {"actor_appearance_accuracy": metrics["actor_contrastive_accuracy"]}


def _latent_mask(config, outputs, batch, params, temp, key):
  return _per_view(latent_mask, outputs["latent_predictions"], outputs["teacher_sequence"], outputs["time_mask"])


def _generate(config, outputs, batch, params, temp, key):
  """The generator's loss on every view's clip given the frozen encoder's output for it."""
  if key is None:
    raise ValueError("the generate term draws noise and flow times: compute_loss needs the step's key")
  g, video = config.generate, batch["video"]
  clips = generate_lib.to_unit(video.reshape((-1,) + video.shape[2:]))
  cond = jax.lax.stop_gradient(outputs[g.condition])
  cond = cond.reshape((-1, cond.shape[-1])).astype(jnp.float32)
  model = build_generator(config)
  apply = lambda *a: model.apply({"params": params["generator"]}, *a)
  return generate_lib.loss(g.method, apply, clips, cond, key, g.cond_dropout)


Term = Callable[..., tuple[jax.Array, dict]]
TERMS: dict[str, Term] = {"infonce": _infonce, "predictive": _predictive, "supervised": _supervised,
                          "video_text": _video_text, "moco": _moco, "byol": _byol, "latent_mask": _latent_mask,
                          "actor_infonce": _actor_infonce, "actor_predictive": _actor_predictive,
                          "actor_appearance": _actor_appearance,
                          "appearance": _appearance,
                          "generate": _generate}
# Batch entries a term reads besides the video (they go to the devices with it).
BATCH_KEYS = {"supervised": ("label",), "video_text": ("caption", "caption_id", "caption_mask"),
              "actor_infonce": ("boxes", "actor_mask"), "actor_predictive": ("boxes", "actor_mask"),
              "actor_appearance": ("boxes", "actor_mask")}


def batch_keys(config) -> tuple[str, ...]:
  """The batch entries the train step needs on the devices for this config's terms."""
  keys = ["video", "label"] + (["augment"] if config.data.augment.on == "device" else [])
  for term in terms(config.objective.name):
    keys += [k for k in BATCH_KEYS.get(term, ()) if k not in keys]
  return tuple(keys)


def compute_loss(config, outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array],
                 params: Mapping[str, Any] | None = None, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Weighted sum of the configured terms.

  Args:
    outputs: the `VideoEncoder` outputs of V views of B videos, each `[B, V, ...]` (the layout the
      pipeline's `video` [B, V, T, H, W, 3] has); with a teacher term also `teacher`: the EMA
      teacher's embeddings `[B, V, E]`; with latent_mask, `teacher_sequence` [B, V, T, D'] (the
      teacher's temporal outputs of the unmasked clips) and `time_mask` float [B, V, T] (1 = the
      step was hidden from the online network).
    batch: `label` int32 `[B]` (supervised); caption `[B, D_text]`, caption_id int32 `[B]`,
      caption_mask bool `[B]` (video_text).
    params: the objective's own parameters (`init_params`), e.g. a learned temperature.
    key: the step's key for the terms' own random draws (each term gets its own fold); None = none.
  Returns:
    (loss scalar float32, metrics dict of scalars: each term's loss and accuracy, 'temperature', and
    the embeddings' spread (`collapse_metrics`: 'embedding_std', 'embedding_rank')).
  """
  temp = temperature(config, params)
  loss = jnp.zeros((), jnp.float32)
  metrics: dict[str, jax.Array] = {}
  for i, term in enumerate(terms(config.objective.name)):
    term_key = None if key is None else jax.random.fold_in(key, TERM_SALT + i)
    value, m = TERMS[term](config, outputs, batch, params, temp, term_key)
    metrics[f"{term}_loss"] = value
    metrics.update(m)
    loss = loss + getattr(config.objective, f"{term}_weight") * value
  metrics["temperature"] = jnp.asarray(temp, jnp.float32)
  if "embedding" in outputs:
    embedding = outputs["embedding"]
    metrics.update(collapse_metrics(embedding.reshape((-1, embedding.shape[-1]))))
  return loss, metrics
