"""Terms against a momentum (EMA) teacher: MoCo v3 and BYOL.

The train state keeps `ema_params`, an exponential moving average of the encoder's parameters
(training.ema); the step runs the encoder with them (no gradient) on the same views and hands each
view's teacher embedding to these terms. The online side adds a predictor MLP (the objective's
parameter `predictor`) on its embedding; only the online network and the predictor learn.

Both sides are centred over the global batch before they are normalised (`_centred`).

  moco:  MoCo v3 (Chen, Xie, He 2021): InfoNCE between the prediction of view i and the teacher's
         embedding of view j != i over the global batch, scaled by 2 T, averaged over ordered pairs.
  byol:  BYOL (Grill et al. 2020) / rho-BYOL (Feichtenhofer et al. 2021): 2 - 2 cos(prediction of
         view i, teacher embedding of view j), no negatives, averaged over ordered pairs i != j.

Both are means over the global batch, so a step sees the same loss on any number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sora_jax.linalg import l2_normalize

PREDICTOR_TERMS = ("moco", "byol")  # terms with the online predictor MLP
TEACHER_TERMS = PREDICTOR_TERMS + ("latent_mask",)  # terms that read the EMA teacher (objectives.latent)


def _centred(x: jax.Array) -> jax.Array:
  """[B, V, E] minus its mean over the global batch (per view), then unit length: what BatchNorm in
  MoCo v3's and BYOL's heads does for them. Without it a freshly initialised teacher maps every clip
  to nearly one point (per-dimension std 0.016 where spread unit vectors have 0.125), its keys tell
  nothing apart, and the student learns nothing (MoCo on moving_digits stayed at chance) or
  collapses (BYOL: std 0.0005 by step 60)."""
  return l2_normalize(x - x.mean(0, keepdims=True))


def init_predictor(key: jax.Array, dim: int, hidden: int) -> dict:
  """The predictor MLP's parameters: dim -> hidden (LayerNorm, GELU) -> dim (LeCun-normal kernels). The
  output layer has no bias: the terms centre the predictions over the batch, so a bias would get a
  zero gradient and Adam would walk it on rounding noise (differently on every device layout)."""
  k1, k2 = jax.random.split(key)
  return {"hidden": {"kernel": jax.random.normal(k1, (dim, hidden)) / jnp.sqrt(dim), "bias": jnp.zeros((hidden,))},
          "norm": {"scale": jnp.ones((hidden,)), "bias": jnp.zeros((hidden,))},
          "out": {"kernel": jax.random.normal(k2, (hidden, dim)) / jnp.sqrt(hidden)}}  # no bias: centring removes it


def predict(params: dict, x: jax.Array) -> jax.Array:
  """[..., dim] -> [..., dim]: the predictor MLP."""
  h = jax.nn.standardize(x @ params["hidden"]["kernel"] + params["hidden"]["bias"], axis=-1, epsilon=1e-6)
  h = h * params["norm"]["scale"] + params["norm"]["bias"]
  return jax.nn.gelu(h) @ params["out"]["kernel"]


def _pairs(v: int) -> list[tuple[int, int]]:
  return [(i, j) for i in range(v) for j in range(v) if i != j]


def byol(predictions: jax.Array, teacher: jax.Array) -> tuple[jax.Array, dict]:
  """predictions, teacher: [B, V, E] (any scale; both are normalised here) -> (loss, metrics).

  loss = mean over ordered view pairs i != j and the batch of 2 - 2 cos(p_i, stop_gradient(z_j)), both
  sides centred over the batch first (`_centred`).
  """
  p, z = _centred(predictions), jax.lax.stop_gradient(_centred(teacher))
  cos = jnp.stack([jnp.sum(p[:, i] * z[:, j], -1) for i, j in _pairs(p.shape[1])])  # [pairs, B]
  return jnp.mean(2.0 - 2.0 * cos), {"byol_cosine": jnp.mean(cos)}


def moco(predictions: jax.Array, teacher: jax.Array, temperature) -> tuple[jax.Array, dict]:
  """predictions, teacher: [B, V, E] -> (loss, metrics): MoCo v3's symmetric contrastive loss.

  For each ordered pair i != j: logits = p_i z_j^T / T over the global batch ([B, B]), the positive of
  row b is column b; cross-entropy x 2T (MoCo v3's scaling), averaged over the pairs. Both sides are
  centred over the batch first (`_centred`).
  """
  p, z = _centred(predictions), jax.lax.stop_gradient(_centred(teacher))
  labels = jnp.arange(p.shape[0])
  losses, accs = [], []
  for i, j in _pairs(p.shape[1]):
    logits = p[:, i] @ z[:, j].T / temperature
    losses.append(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
    accs.append(jnp.mean(jnp.argmax(logits, -1) == labels))
  return 2.0 * temperature * jnp.mean(jnp.stack(losses)), {"moco_accuracy": jnp.mean(jnp.stack(accs))}
