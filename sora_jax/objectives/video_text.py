"""Video-text alignment (CLIP's symmetric InfoNCE) over the global batch, and the text side's head.

The video side is the encoder's `aligned` output (a head on the pooled vector, unit norm); the text
side is a trainable linear projection of a caption's unit feature, also unit norm. Both meet in one
space where a sentence finds the videos it describes (`text_features` then `project_text` is what
search and zero-shot classification call).

The feature comes from `config.text.tower`: `minilm`, the frozen pretrained tower's sentence
embedding (computed once per caption, outside the step); or `bag_of_words`, the mean of token
embeddings over the same tokenizer, trained from scratch (the baseline that shows what pretraining
is worth). In training, `text.feature_noise` adds Gaussian noise to the unit feature, so that the
projection cannot key on the small shifts that tell one phrasing of a description from another
(it helps when only the projections train; in the joint run at 0.08 it hurt: docs/text.md).

Captions repeat across a batch (two videos can share a phrasing): every video whose caption is the
same string as the query's (same `caption_id`) is a positive, not a negative (soft targets spread
over them), so the loss does not push apart what the text cannot tell apart.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import optax

from sora_jax.errors import SoraError
from sora_jax.linalg import l2_normalize
from sora_jax.models.text_encoder import BertEncoder, BertSpec, load_text_tower, mean_pool

PARAMS = "text_projection"
LOG_TEMPERATURE = "video_text_log_temperature"
BOW = "bag_of_words_embedding"
TOWER = "text_tower"  # the pretrained tower's weights when text.train_layers > 0
BOW_VOCAB = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary: the bag of words uses the same tokenizer


def pretrained(config) -> dict:
  """{TOWER: the pretrained tower's params (numpy)} when text.train_layers > 0, else {}."""
  return {TOWER: load_text_tower().params} if config.text.train_layers else {}


def init_params(config, key, text_dim: int, pretrained: dict | None = None) -> dict:
  """The text projection [text_dim -> model.text_embed_dim] (LeCun normal, like flax's Dense), the
  log of the learned temperature, and with text.tower=bag_of_words the token embeddings
  [BOW_VOCAB, text_dim] (normal, std 1/sqrt(text_dim)); with text.train_layers > 0 the tower's
  weights from `pretrained` (they enter a jitted init as an argument, never as a constant)."""
  e = config.model.text_embed_dim
  k_proj, k_bow = jax.random.split(key)
  kernel = jax.random.normal(k_proj, (text_dim, e), jnp.float32) / jnp.sqrt(text_dim)
  params = {PARAMS: {"kernel": kernel, "bias": jnp.zeros((e,), jnp.float32)},
            LOG_TEMPERATURE: jnp.log(jnp.asarray(config.objective.video_text_temperature, jnp.float32))}
  if config.text.tower == "bag_of_words":
    params[BOW] = jax.random.normal(k_bow, (BOW_VOCAB, text_dim), jnp.float32) / jnp.sqrt(text_dim)
  if config.text.train_layers:
    if TOWER not in (pretrained or {}):
      raise SoraError("text.train_layers > 0 starts from the pretrained tower: pass "
                      "pretrained=objectives.pretrained(config) to init_params / init_state")
    params[TOWER] = jax.tree_util.tree_map(jnp.asarray, pretrained[TOWER])
  return params


def tokens_in(config) -> bool:
  """Whether a caption reaches the step as token ids (a tower that trains) rather than a fixed vector."""
  return config.text.tower == "bag_of_words" or config.text.train_layers > 0


def frozen(config, path: tuple[str, ...]) -> bool:
  """Whether the objective parameter at `path` (under the objective's params) stays fixed: the
  pretrained tower's embeddings and its layers below the top text.train_layers."""
  if not path or path[0] != TOWER:
    return False
  top = BertSpec().num_hidden_layers - config.text.train_layers
  return not (path[1].startswith("layer_") and int(path[1].removeprefix("layer_")) >= top)


def text_features(config, params, raw: jax.Array, key: jax.Array | None = None) -> jax.Array:
  """A caption's input to the projection: [N, D] unit vectors (plus training noise when `key` is given).

  raw: minilm, frozen: float [N, D] the tower's sentence embeddings; bag_of_words or minilm with
  text.train_layers > 0: int32 [N, L] token ids (0 = padding, the tokenizer's [PAD]), embedded here
  (the frozen part of the tower under stop_gradient, so no gradient flows below the top layers).
  """
  if config.text.tower == "bag_of_words":
    keep = (raw > 0).astype(jnp.float32)[..., None]
    x = (params[BOW][raw] * keep).sum(axis=1) / jnp.maximum(keep.sum(axis=1), 1.0)
  elif config.text.train_layers:
    flat = flax.traverse_util.flatten_dict(params[TOWER])
    tower = flax.traverse_util.unflatten_dict(
        {k: jax.lax.stop_gradient(v) if frozen(config, (TOWER,) + k) else v for k, v in flat.items()})
    mask = raw > 0
    x = mean_pool(BertEncoder(BertSpec()).apply({"params": tower}, raw, mask), mask)
  else:
    x = raw
  x = l2_normalize(x.astype(jnp.float32))
  sigma = float(config.text.feature_noise)
  if key is not None and sigma > 0:
    x = x + sigma * jax.random.normal(key, x.shape, jnp.float32)
  return x


def project_text(params, text: jax.Array) -> jax.Array:
  """Caption features [N, D_text] -> unit vectors [N, E] in the video-text space."""
  p = params[PARAMS]
  return l2_normalize(text.astype(jnp.float32) @ p["kernel"] + p["bias"])


def temperature(params) -> jax.Array:
  """exp(learned log-T), clipped to [0.01, 1] (CLIP clips the logit scale at 100)."""
  return jnp.clip(jnp.exp(params[LOG_TEMPERATURE]), 0.01, 1.0)


def video_text(video: jax.Array, text: jax.Array, caption_id: jax.Array, mask: jax.Array,
               temp: jax.Array | float) -> tuple[jax.Array, dict]:
  """Symmetric InfoNCE between videos and their captions.

  Args:
    video: `[B, V, E]` unit vectors of V views (each view is scored against the captions; the loss
      is the mean over views).
    text: `[B, E]` unit vectors of each video's caption.
    caption_id: int `[B]`: equal ids = the same caption string (positives for each other).
    mask: bool `[B]`: False = the video has no caption (left out of both directions).
    temp: the softmax temperature.
  Returns:
    (loss, {'video_text_accuracy'}): accuracy = share of (view, video) queries whose top caption is
    one of its positives.
  """
  b, v, _ = video.shape
  video, text = video.astype(jnp.float32), text.astype(jnp.float32)
  same = (caption_id[:, None] == caption_id[None, :]) & mask[:, None] & mask[None, :]  # [B, B]
  targets = same / jnp.maximum(same.sum(axis=1, keepdims=True), 1)
  n = jnp.maximum(mask.sum(), 1)
  losses, accs = [], []
  for i in range(v):
    logits = (video[:, i] @ text.T) / temp  # [B videos, B captions]
    logits = jnp.where(mask[None, :], logits, -1e9)  # a missing caption is no candidate
    v2t = optax.losses.softmax_cross_entropy(logits, targets)
    t2v = optax.losses.softmax_cross_entropy(jnp.where(mask[None, :], logits.T, -1e9), targets)
    losses.append(jnp.where(mask, (v2t + t2v) / 2, 0.0).sum() / n)
    hit = jnp.take_along_axis(same, jnp.argmax(logits, axis=1)[:, None], axis=1)[:, 0]
    accs.append(jnp.where(mask, hit, False).sum() / n)
  return jnp.mean(jnp.stack(losses)), {"video_text_accuracy": jnp.mean(jnp.stack(accs))}
