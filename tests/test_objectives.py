"""Objectives against direct numpy computations, and independence from the device count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax import objectives
from sora_jax.config import load_config


def _normalise(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_ntxent(emb, temp):
  """SimCLR NT-Xent written out: for every anchor and every other view of its video."""
  b, v, _ = emb.shape
  flat = _normalise(emb.reshape(b * v, -1).astype(np.float64))
  sim = flat @ flat.T / temp
  vid = np.repeat(np.arange(b), v)
  losses = []
  for i in range(b * v):
    neg = [j for j in range(b * v) if vid[j] != vid[i]]
    for j in range(b * v):
      if j != i and vid[j] == vid[i]:
        logits = np.array([sim[i, j]] + [sim[i, k] for k in neg])
        losses.append(-(logits[0] - np.log(np.exp(logits).sum())))
  return float(np.mean(losses))


@pytest.mark.parametrize("views", [2, 3])
def test_infonce_matches_numpy(views):
  emb = np.random.RandomState(0).normal(size=(6, views, 5)).astype(np.float32)
  loss, metrics = objectives.infonce(jnp.asarray(emb), 0.2)
  np.testing.assert_allclose(float(loss), _numpy_ntxent(emb, 0.2), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["contrastive_accuracy"]), _numpy_accuracy(emb), rtol=1e-6)


def _numpy_accuracy(emb):
  """Share of clips whose most cosine-similar other clip is a view of the same video."""
  b, v, _ = emb.shape
  flat = _normalise(emb.reshape(b * v, -1).astype(np.float64))
  sim = flat @ flat.T
  np.fill_diagonal(sim, -np.inf)
  vid = np.repeat(np.arange(b), v)
  return float(np.mean(vid[sim.argmax(axis=1)] == vid))


def test_infonce_accuracy_and_low_loss_for_perfect_views():
  base = _normalise(np.random.RandomState(1).normal(size=(8, 16)))
  emb = np.stack([base, base + 1e-3], axis=1).astype(np.float32)
  loss, m = objectives.infonce(jnp.asarray(emb), 0.1)
  assert float(m["contrastive_accuracy"]) == 1.0
  shuffled = np.stack([base, base[::-1]], axis=1).astype(np.float32)
  loss_bad, m_bad = objectives.infonce(jnp.asarray(shuffled), 0.1)
  assert float(loss) < float(loss_bad) and float(m_bad["contrastive_accuracy"]) < 1.0


@pytest.mark.parametrize("n_devices", [1, 2, 8])
def test_infonce_same_on_any_device_count(n_devices):
  """The batch sharded over n devices gives the single-device numpy value: negatives are global."""
  emb = np.random.RandomState(2).normal(size=(16, 2, 8)).astype(np.float32)
  mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
  x = jax.device_put(emb, NamedSharding(mesh, P("data")))
  loss, m = jax.jit(lambda e: objectives.infonce(e, 0.1))(x)
  np.testing.assert_allclose(float(loss), _numpy_ntxent(emb, 0.1), rtol=1e-5)


def _numpy_predictive(pred, targ, temp):
  b, t, kk, _ = pred.shape
  per_k = []
  for k in range(1, kk + 1):
    q = pred[:, : t - k, k - 1].reshape(-1, pred.shape[-1]).astype(np.float64)
    keys = targ[:, k:].reshape(-1, targ.shape[-1]).astype(np.float64)
    logits = q @ keys.T / temp
    lse = np.log(np.exp(logits).sum(-1))
    per_k.append(np.mean(lse - np.diag(logits)))
  return float(np.mean(per_k))


def test_predictive_matches_numpy_and_rewards_true_future():
  rs = np.random.RandomState(3)
  targ = _normalise(rs.normal(size=(4, 5, 8))).astype(np.float32)
  pred = _normalise(rs.normal(size=(4, 5, 2, 8))).astype(np.float32)
  loss, _ = objectives.predictive(jnp.asarray(pred), jnp.asarray(targ), 0.5)
  np.testing.assert_allclose(float(loss), _numpy_predictive(pred, targ, 0.5), rtol=1e-5)
  # Predicting exactly the true future: accuracy 1 and a lower loss than random predictions.
  perfect = np.zeros_like(pred)
  for k in (1, 2):
    perfect[:, : 5 - k, k - 1] = targ[:, k:]
  loss_p, m = objectives.predictive(jnp.asarray(perfect), jnp.asarray(targ), 0.5)
  assert float(m["predictive_accuracy"]) == 1.0 and float(loss_p) < float(loss)


def test_supervised_ignores_unknown_labels():
  logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
  loss, m = objectives.supervised(logits, jnp.array([0, 0, -1]))
  expected = np.mean([np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(2.0))])
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  assert float(m["supervised_accuracy"]) == 0.5


def test_compute_loss_weights_terms_and_learned_temperature_has_gradient():
  config = load_config("configs/infonce.py")
  config.objective.name = "infonce+supervised"
  config.objective.infonce_weight = 0.5
  config.objective.supervised_weight = 2.0
  config.objective.learn_temperature = True
  rs = np.random.RandomState(4)
  outputs = {"embedding": jnp.asarray(_normalise(rs.normal(size=(4, 2, 6))), jnp.float32),
             "logits": jnp.asarray(rs.normal(size=(4, 2, 3)), jnp.float32)}  # [B, V, ...]
  batch = {"label": jnp.array([0, 1, 2, -1])}
  params = objectives.init_params(config)
  loss, m = objectives.compute_loss(config, outputs, batch, params)
  np.testing.assert_allclose(float(loss), 0.5 * float(m["infonce_loss"]) + 2.0 * float(m["supervised_loss"]),
                             rtol=1e-6)
  np.testing.assert_allclose(float(m["temperature"]), 0.1, rtol=1e-5)
  grad = jax.grad(lambda p: objectives.compute_loss(config, outputs, batch, p)[0])(params)
  assert float(jnp.abs(grad["log_temperature"])) > 0


def test_contrastive_accuracy_is_the_nearest_other_clip_hand_computed():
  """3 videos x 2 views at angles (0, 10), (90, 100), (180, 300) degrees on the unit circle. Each
  clip's nearest other clip: 0 -> 10 and 10 -> 0 (hits), 90 -> 100 and 100 -> 90 (hits), 180 -> 100
  (80 deg, nearer than its own 300 at 120 deg: a miss), 300 -> 0 (60 deg: a miss). 4 of 6 = 2/3.
  Without masking the clip itself, every anchor would find itself (accuracy 1)."""
  deg = np.deg2rad([[0, 10], [90, 100], [180, 300]])
  emb = np.stack([np.cos(deg), np.sin(deg)], axis=-1).astype(np.float32)  # [3, 2, 2]
  _, m = objectives.infonce(jnp.asarray(emb), 0.1)
  np.testing.assert_allclose(float(m["contrastive_accuracy"]), 4 / 6, rtol=1e-6)


def test_learned_temperature_is_clipped_at_both_ends():
  config = load_config("infonce", ["objective.learn_temperature=true"])
  for log_t, want in ((np.log(1e-5), 0.01), (np.log(50.0), 1.0), (np.log(0.3), 0.3)):
    got = objectives.temperature(config, {"log_temperature": jnp.asarray(log_t, jnp.float32)})
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_predictive_term_is_the_mean_over_views():
  config = load_config("dpc", ["data.num_views=2"])
  rs = np.random.RandomState(5)
  views = [{"targets": _normalise(rs.normal(size=(3, 5, 8))).astype(np.float32),
            "predictions": _normalise(rs.normal(size=(3, 5, 2, 8))).astype(np.float32)} for _ in range(2)]
  outputs = {k: jnp.stack([jnp.asarray(o[k]) for o in views], axis=1) for k in views[0]}  # [B, V, ...]
  loss, m = objectives.compute_loss(config, outputs, {"label": jnp.zeros(3, jnp.int32)})
  want = np.mean([_numpy_predictive(o["predictions"], o["targets"], config.objective.temperature) for o in views])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert abs(want - _numpy_predictive(views[0]["predictions"], views[0]["targets"], 0.1)) > 1e-3  # views differ


@pytest.mark.parametrize("views", [2, 3])
def test_appearance_pairs_each_views_half_with_the_other_views_other_half(views):
  """objective appearance: NT-Xent over the frame features' mean over view v's half v mod 2 (view 0 its
  first half, view 1 its second, view 2 its first...), so no pair of views shows the same moments."""
  config = load_config("configs/infonce.py", ["objective.name=appearance", "objective.temperature=0.2"])
  frames = np.random.RandomState(5).normal(size=(5, views, 6, 4)).astype(np.float32)  # [B, V, T, D]
  loss, m = objectives.compute_loss(config, {"frames": jnp.asarray(frames)}, {})
  looks = np.stack([frames[:, v, :3].mean(1) if v % 2 == 0 else frames[:, v, 3:].mean(1) for v in range(views)], 1)
  np.testing.assert_allclose(float(m["appearance_loss"]), _numpy_ntxent(looks, 0.2), rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(m["appearance_loss"]), rtol=1e-6)
