"""latent_mask: V-JEPA (Bardes et al. 2024) for a frame encoder + temporal model.

Per clip, `objective.mask_blocks` contiguous blocks of time steps (each round(mask_ratio x T /
blocks) long, placed at random from the step key) are hidden at the temporal model's input by a
learned mask token (models.VideoEncoder, `time_mask`). The online network predicts, at each hidden
step, the EMA teacher's representation of that step (its temporal model's output on the whole,
unmasked clip, layer-normalised as V-JEPA's targets), with a smooth-L1 loss in latent space; no
pixels are reconstructed. With a bidirectional temporal model (biLSTM, non-causal Transformer) a
hidden step is predicted from both sides; with a causal one, from the past.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sora_jax.config.validate import mask_length


def draw_mask(key: jax.Array, batch: int, num_frames: int, ratio: float, blocks: int) -> jax.Array:
  """bool [batch, num_frames]: True at the hidden steps, `blocks` runs of mask_length each per row."""
  length = mask_length(num_frames, ratio, blocks)
  starts = jax.random.randint(key, (batch, blocks), 0, num_frames - length + 1)
  t = jnp.arange(num_frames)
  return jnp.any((t >= starts[..., None]) & (t < starts[..., None] + length), axis=1)


def latent_mask(predictions: jax.Array, teacher_sequence: jax.Array, mask: jax.Array) -> tuple[jax.Array, dict]:
  """predictions, teacher_sequence: [B, T, D]; mask: bool [B, T] (True = hidden) -> (loss, metrics).

  loss = mean over the hidden steps of the whole batch of smooth-L1(prediction, layer_norm(teacher)),
  averaged over D; the teacher gets no gradient.
  """
  target = jax.lax.stop_gradient(jax.nn.standardize(teacher_sequence.astype(jnp.float32), axis=-1, epsilon=1e-6))
  per_step = optax.huber_loss(predictions.astype(jnp.float32), target, delta=1.0).mean(-1)  # [B, T]
  weight = mask.astype(jnp.float32)
  loss = jnp.sum(per_step * weight) / jnp.maximum(jnp.sum(weight), 1.0)
  return loss, {"latent_mask_hidden": jnp.mean(weight)}
