"""The momentum teacher: MoCo v3 and BYOL against direct numpy computations on any device count, the
momentum schedule, and the EMA update inside the jitted step (resume, FSDP and process counts:
test_training.py's shared tiny run trains infonce+byol)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax import objectives
from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.objectives import teacher
from sora_jax.training import ema


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _centred(x):
  x = x.astype(np.float64)
  return _unit(x - x.mean(0, keepdims=True))


def _numpy_byol(p, z):
  p, z = _centred(p), _centred(z)
  v = p.shape[1]
  return np.mean([np.mean(2 - 2 * np.sum(p[:, i] * z[:, j], -1)) for i in range(v) for j in range(v) if i != j])


def _numpy_moco(p, z, t):
  p, z = _centred(p), _centred(z)
  v, out = p.shape[1], []
  for i in range(v):
    for j in range(v):
      if i != j:
        logits = p[:, i] @ z[:, j].T / t
        logits -= logits.max(1, keepdims=True)
        out.append(np.mean(-np.diag(logits) + np.log(np.exp(logits).sum(1))))
  return 2 * t * np.mean(out)


def _example(b=16, v=3, e=8, seed=0):
  rs = np.random.RandomState(seed)
  return rs.normal(size=(b, v, e)).astype(np.float32), rs.normal(size=(b, v, e)).astype(np.float32)


@pytest.mark.parametrize("n_devices", [1, 2, 8])
def test_moco_and_byol_match_numpy_on_any_device_count(n_devices):
  p, z = _example()
  mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  byol, _ = jax.jit(teacher.byol)(put(p), put(z))
  moco, m = jax.jit(lambda a, b: teacher.moco(a, b, 0.2))(put(p), put(z))
  np.testing.assert_allclose(float(byol), _numpy_byol(p, z), rtol=1e-5)
  np.testing.assert_allclose(float(moco), _numpy_moco(p, z, 0.2), rtol=1e-5)
  assert 0 <= float(m["moco_accuracy"]) <= 1


def test_the_teacher_side_gets_no_gradient_and_a_perfect_prediction_costs_nothing():
  p, z = _example(b=4, v=2)
  grad_z = jax.grad(lambda z: teacher.byol(jnp.asarray(p), z)[0] + teacher.moco(jnp.asarray(p), z, 0.1)[0])(z)
  assert not np.any(np.asarray(grad_z))
  swapped = z[:, ::-1]  # view 0 predicts the teacher's view 1 exactly, and the other way round
  assert float(teacher.byol(jnp.asarray(swapped), jnp.asarray(z))[0]) == pytest.approx(0.0, abs=1e-6)


def test_terms_read_the_predictor_and_the_teachers_view_embeddings():
  config = load_config("infonce", ["objective.name=infonce+moco+byol", "objective.moco_weight=0.5",
                                   "objective.byol_weight=2.0", "model.embed_dim=8", "objective.predictor_hidden=16"])
  params = objectives.init_params(config, jax.random.PRNGKey(0))
  assert params["predictor"]["hidden"]["kernel"].shape == (8, 16)
  online, target = _example(b=8, v=2)
  outputs = {"embedding": _unit(online), "teacher": _unit(target)}  # [B, V, E]
  loss, m = objectives.compute_loss(config, outputs, {"label": np.zeros(8, np.int32)}, params)
  predicted = np.asarray(teacher.predict(params["predictor"], jnp.asarray(_unit(online))))
  np.testing.assert_allclose(float(m["byol_loss"]), _numpy_byol(predicted, _unit(target)), rtol=1e-5)
  np.testing.assert_allclose(float(m["moco_loss"]), _numpy_moco(predicted, _unit(target), config.objective.temperature),
                             rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(m["infonce_loss"]) + 0.5 * float(m["moco_loss"])
                             + 2.0 * float(m["byol_loss"]), rtol=1e-6)


def test_momentum_rises_along_a_cosine_from_its_start_to_one():
  config = load_config("infonce", ["objective.name=byol", "objective.ema_momentum=0.9", "train.num_steps=100"])
  ms = np.array([float(ema.momentum(config, s)) for s in range(0, 101, 10)])
  assert ms[0] == pytest.approx(0.9) and ms[-1] == pytest.approx(1.0) and ms[5] == pytest.approx(0.95)
  assert np.all(np.diff(ms) > 0)
  new = ema.update({"w": jnp.ones(3)}, {"w": jnp.zeros(3)}, jnp.float32(0.9))
  np.testing.assert_allclose(np.asarray(new["w"]), 0.9)


def test_one_step_moves_the_teacher_by_one_minus_momentum_toward_the_updated_encoder():
  from sora_jax.models import build_encoder
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  from sora_jax.training.step import make_train_step
  config = load_config("infonce", ["objective.name=byol", "model.width=0.125", "model.hidden_size=16",
                                   "model.head_hidden=16", "model.embed_dim=8", "data.num_frames=4",
                                   "data.frame_size=16", "train.batch_size=4", "optimizer.warmup_steps=0"])
  tx = build_optimizer(config)
  state = jax.jit(lambda: init_state(config, tx))()
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(state.ema_params),
                                                  jax.tree_util.tree_leaves(state.params["encoder"])))
  video = np.random.RandomState(0).randint(0, 255, (4, 2, 4, 16, 16, 3)).astype(np.uint8)
  step = jax.jit(make_train_step(config, build_encoder(config), tx))
  batch = {"video": video, "label": np.zeros(4, np.int32)}
  new, metrics = step(state, batch)
  other = jax.tree_util.tree_map(lambda x: x * 0.5, state.ema_params)  # another teacher, the same student
  _, other_metrics = step(state.replace(ema_params=other), batch)
  assert float(other_metrics["byol_loss"]) != pytest.approx(float(metrics["byol_loss"]), rel=1e-4)
  m = float(metrics["ema_momentum"])
  assert m == pytest.approx(config.objective.ema_momentum)
  assert 0 < float(metrics["embedding_std"]) and 1 < float(metrics["embedding_rank"]) <= 8  # logged every step
  moved = 0
  for e, old, p in zip(*(jax.tree_util.tree_leaves(t) for t in (new.ema_params, state.params["encoder"],
                                                                    new.params["encoder"]))):
    np.testing.assert_allclose(np.asarray(e), m * np.asarray(old) + (1 - m) * np.asarray(p), rtol=1e-5, atol=1e-7)
    moved += not np.array_equal(np.asarray(e), np.asarray(old))
  assert moved > 0
  plain = load_config("infonce", ["model.width=0.125"])  # no teacher term: no teacher in the state
  assert jax.eval_shape(lambda: init_state(plain, build_optimizer(plain))).ema_params is None


def test_teacher_terms_need_two_views():
  with pytest.raises(ConfigError, match="num_views"):
    validate(load_config("infonce", ["objective.name=byol", "data.num_views=1"]))


def test_collapse_metrics_tell_a_spread_batch_from_a_collapsed_one():
  from sora_jax.objectives.collapse import collapse_metrics
  rs = np.random.RandomState(0)
  spread = _unit(rs.normal(size=(512, 16))).astype(np.float32)
  m = {k: float(v) for k, v in jax.jit(collapse_metrics)(spread).items()}
  assert m["embedding_std"] == pytest.approx(1 / np.sqrt(16), rel=0.05) and 14 < m["embedding_rank"] <= 16
  one_point = np.tile(spread[:1], (512, 1))
  assert float(collapse_metrics(one_point)["embedding_std"]) == pytest.approx(0.0, abs=1e-6)
  two_dirs = _unit(rs.normal(size=(512, 2)) @ rs.normal(size=(2, 16))).astype(np.float32)  # a plane's worth
  assert float(collapse_metrics(two_dirs)["embedding_rank"]) < 2.5
  s = np.linalg.svd(spread - spread.mean(0), compute_uv=False)
  p = s / s.sum()
  np.testing.assert_allclose(m["embedding_rank"], np.exp(-np.sum(p * np.log(p))), rtol=1e-4)
