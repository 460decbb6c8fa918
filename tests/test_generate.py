"""The generator's parts: the flow (path, loss, guided velocity, Euler sampler) against direct
computations, the network (patches, the null condition, adaLN-zero), the sampler's seeding, the
Fréchet distance, and the generate config's checks. End to end (train, generate, eval):
test_generate_apps.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import objectives
from sora_jax.config import load_config, migrate, to_dict, validate
from sora_jax.config.checks import SOLVERS, parse_samplers
from sora_jax.errors import ConfigError, DataError
from sora_jax.evaluation.generation import frechet_distance, mean_pairwise
from sora_jax.evaluation.sampler import Sampler
from sora_jax.models.generator import VideoGenerator, build_generator, patchify, unpatchify
from sora_jax.objectives import generate as flow
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.training import ema

SHAPE = (2, 4, 8, 8, 3)


def test_flow_loss_is_the_velocity_mse_of_the_clean_clip_prediction_on_the_drawn_path():
  key = jax.random.PRNGKey(3)
  clips = jax.random.uniform(jax.random.PRNGKey(1), SHAPE, minval=-1, maxval=1)
  cond = jnp.ones((2, 5))
  seen = {}

  def apply(x, t, c, drop):  # a clean-clip prediction that depends on all its inputs
    seen.update(x=np.asarray(x), t=np.asarray(t), drop=np.asarray(drop))
    return 0.5 * x + t[:, None, None, None, None] + c.sum(-1)[:, None, None, None, None] * 0.1

  value, _ = flow.loss("flow", apply, clips, cond, key, 0.5)
  k_noise, k_time, k_drop = jax.random.split(key, 3)
  x0 = np.asarray(jax.random.normal(k_noise, SHAPE))
  t = 1 / (1 + np.exp(0.8 - 0.8 * np.asarray(jax.random.normal(k_time, (2,)))))
  tb = t[:, None, None, None, None]
  xt = (1 - tb) * x0 + tb * np.asarray(clips)
  np.testing.assert_allclose(seen["x"], xt, atol=1e-6)
  np.testing.assert_allclose(seen["t"], t, atol=1e-6)
  pred = 0.5 * xt + tb + 0.5
  v = (pred - xt) / np.maximum(1 - tb, 0.05)
  np.testing.assert_allclose(float(value), np.mean((v - (np.asarray(clips) - x0)) ** 2), rtol=1e-5)
  drops = [flow.loss("flow", apply, clips, cond, jax.random.PRNGKey(i), 0.5) and seen["drop"].copy() for i in range(40)]
  assert 0.3 < np.mean(drops) < 0.7  # the condition is dropped at about the configured rate


def test_mse_decoder_loss_sees_no_noise():
  clips = jnp.full(SHAPE, 0.25)
  apply = lambda x, t, c, drop: x + t[:, None, None, None, None] - 1.0  # = x: zeros in, zeros out
  value, _ = flow.loss("mse", apply, clips, jnp.zeros((2, 3)), jax.random.PRNGKey(0), 0.1)
  assert float(value) == pytest.approx(0.0625)


def test_guidance_mixes_conditional_and_unconditional_velocities():
  def apply(x, t, c, drop):  # clean clips 1 + 2 with the condition, 1 without
    cond_part = jnp.where(drop[:, None, None, None, None] if drop is not None else False, 0.0, 2.0)
    return jnp.ones_like(x) + cond_part
  x = jnp.zeros(SHAPE)  # at t = 0.5 a clip's velocity is (clip - 0) / 0.5
  for w, want in ((1.0, 6.0), (0.0, 2.0), (2.5, 2.0 + 2.5 * 4.0)):
    np.testing.assert_allclose(np.asarray(flow.velocity(apply, x, 0.5, jnp.zeros((2, 3)), w)), want, rtol=1e-6)


def test_euler_sampler_reaches_the_target_of_the_straight_path():
  target = jax.random.uniform(jax.random.PRNGKey(2), SHAPE, minval=-0.9, maxval=0.9)
  apply = lambda x, t, c, drop: target  # a perfect clean-clip prediction: Euler lands on it
  out = flow.sample("flow", apply, jnp.zeros((2, 3)), jax.random.PRNGKey(0), SHAPE, num_steps=7, guidance=1.0)
  np.testing.assert_allclose(np.asarray(out), np.asarray(target), atol=1e-5)
  assert np.array_equal(np.asarray(flow.to_uint8(jnp.array([-2.0, -1.0, 0.0, 1.0]))), [0, 0, 128, 255])


def test_heun_is_second_order_along_the_path_and_its_last_step_is_eulers():
  # A clean-clip prediction of x - (1 - t) x: the velocity is -x, so x(t) = x0 exp(-t).
  apply = lambda x, t, c, drop: x - (1 - t)[:, None, None, None, None] * x
  x0, n, cond = jnp.ones((1, 1, 2, 2, 3)), 8, jnp.zeros((1, 3))
  ends = {}
  for name in ("euler", "heun"):
    x = x0
    for i in range(n - 1):  # to t = 7/8 (the last step ends at t = 1, where the velocity divides by 0)
      x = flow.SOLVERS[name](apply, x, jnp.int32(i), n, cond, 1.0)
    ends[name] = float(np.abs(np.asarray(x) - np.exp(-(n - 1) / n)).max())
  assert ends["heun"] < ends["euler"] / 5, ends
  last = [np.asarray(flow.SOLVERS[s](apply, x0, jnp.int32(n - 1), n, cond, 1.0)) for s in ("euler", "heun")]
  np.testing.assert_array_equal(last[0], last[1])


def test_patches_round_trip_and_keep_pixels_together():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 8, 8, 3))
  p = patchify(x, 4)
  assert p.shape == (1, 2, 4, 48)
  np.testing.assert_array_equal(np.asarray(p[0, 0, 1]).reshape(4, 4, 3), np.asarray(x[0, 0, 0:4, 4:8]))
  np.testing.assert_array_equal(np.asarray(unpatchify(p, 4, 8, 8)), np.asarray(x))


def _perturbed(model, x, t, cond):
  params = model.init(jax.random.PRNGKey(0), x, t, cond)["params"]
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  return params, jax.tree_util.tree_unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


def test_generator_starts_at_zero_and_drops_the_condition_to_the_null_vector():
  model = VideoGenerator(width=16, depth=2, num_heads=2, patch=4)
  x, t = jax.random.normal(jax.random.PRNGKey(2), SHAPE), jnp.array([0.2, 0.7])
  a, b = (jax.random.normal(jax.random.PRNGKey(k), (2, 6)) for k in (3, 4))
  params, moved = _perturbed(model, x, t, a)
  assert np.abs(np.asarray(model.apply({"params": params}, x, t, a))).max() == 0.0  # adaLN-zero, zero output layer
  out = lambda c, drop=None: np.asarray(model.apply({"params": moved}, x, t, c, drop))
  assert out(a).shape == SHAPE and np.abs(out(a) - out(b)).max() > 1e-3
  dropped = jnp.array([True, False])
  np.testing.assert_allclose(out(a, dropped)[0], out(b, dropped)[0], atol=1e-6)
  assert np.abs(out(a, dropped)[1] - out(b, dropped)[1]).max() > 1e-3


def test_layout_gives_each_token_position_its_own_vector_from_the_condition():
  model = VideoGenerator(width=16, depth=1, num_heads=2, patch=4, layout_rank=3)
  x, t = jnp.zeros(SHAPE), jnp.array([0.2, 0.7])
  a = jax.random.normal(jax.random.PRNGKey(3), (2, 6))
  _, moved = _perturbed(model, x, t, a)
  assert moved["layout_in"]["kernel"].shape == (16, 4 * 4 * 3)  # frames x patches x rank
  out, state = model.apply({"params": moved}, x, t, a, capture_intermediates=True)
  layout = np.asarray(state["intermediates"]["layout_out"]["__call__"][0])  # [B, T, N, D]
  assert layout.shape == (2, 4, 4, 16)
  assert np.abs(layout - layout[:, :1, :1]).max() > 1e-3  # not one vector for every position
  off = {**moved, "layout_in": {"kernel": jnp.zeros_like(moved["layout_in"]["kernel"]),
                                "bias": jnp.zeros_like(moved["layout_in"]["bias"])}}
  assert np.abs(np.asarray(model.apply({"params": off}, x, t, a)) - np.asarray(out)).max() > 1e-4  # it is used
  plain = VideoGenerator(width=16, depth=1, num_heads=2, patch=4).init(jax.random.PRNGKey(0), x, t, a)["params"]
  assert "layout_in" not in plain


def _sampler_config(method="flow"):
  c = load_config("generate")
  c.data.num_frames, c.data.frame_size = 2, 8
  c.generate.width, c.generate.depth, c.generate.num_heads, c.generate.patch_size = 16, 1, 2, 4
  c.generate.sample_steps, c.generate.method = 3, method
  return c


def _sampler(mesh, method="flow"):
  config = _sampler_config(method)
  model = build_generator(config)
  x = jnp.zeros((1, 2, 8, 8, 3))
  _, params = _perturbed(model, x, jnp.zeros(1), jnp.zeros((1, 4)))
  return Sampler(config, params, mesh)


def test_sampler_rows_depend_on_seed_and_row_only():
  cond = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (3, 4)))
  eight = _sampler(mesh_lib.inference_mesh(_sampler_config()))
  one = _sampler(jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), mesh_lib.BATCH_AXES))
  many = eight.sample(cond, num=2, seed=7)
  assert many.shape == (6, 2, 8, 8, 3) and many.dtype == np.uint8
  np.testing.assert_array_equal(eight.sample(cond[1:2], num=1, seed=7)[0], many[2])  # row 0 of condition 1
  assert np.abs(one.sample(cond, num=2, seed=7).astype(int) - many).max() <= 1  # any device count
  assert not np.array_equal(eight.sample(cond, num=2, seed=8), many)
  assert not np.array_equal(many[0], many[1])  # two samples of one condition differ
  with pytest.raises(DataError, match="--num 0"):
    eight.sample(cond, num=0)
  with pytest.raises(DataError, match="guidance"):
    eight.sample(cond, guidance=-1.0)
  heun = eight.sample(cond, num=2, seed=7, solver="heun")  # per call, beside the run's euler
  assert heun.shape == many.shape and not np.array_equal(heun, many)
  np.testing.assert_array_equal(eight.sample(cond, num=2, seed=7, solver="euler", sample_steps=3), many)
  assert not np.array_equal(eight.sample(cond, num=2, seed=7, sample_steps=6), many)
  with pytest.raises(DataError, match="--solver 'rk4'"):
    eight.sample(cond, solver="rk4")
  with pytest.raises(DataError, match="--sample-steps 0"):
    eight.sample(cond, sample_steps=0)
  mse = _sampler(eight.mesh, "mse").sample(cond, num=2, seed=1)
  np.testing.assert_array_equal(mse[0], mse[1])  # the decoder is deterministic


def test_frechet_distance_and_pairwise_distance():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(500, 3))
  a -= a.mean(0)
  assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  assert frechet_distance(a, a + np.array([3.0, 0, 4.0])) == pytest.approx(25.0, rel=1e-6)
  assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-4)  # (2-1)^2 Tr S
  groups = np.array([[[0.0, 0.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
  assert mean_pairwise(groups) == pytest.approx(2.5)


@pytest.mark.parametrize("change, message", [
    ({"objective.name": "generate+infonce"}, "combines with no other term"),
    ({"generate.encoder_workdir": ""}, "needs a trained encoder run"),
    ({"generate.patch_size": 5}, "must divide data.frame_size"),
    ({"train.grad_accum_steps": 2}, "no micro-batched form"),
    ({"generate.condition": "aligned"}, "needs an encoder trained with video_text"),
    ({"eval.baselines": ("random",)}, "only baseline is generate_mse"),
    ({"eval.generate_samplers": "heun:2,rk4:2"}, "'rk4:2' is not SOLVER:GUIDANCE"),
    ({"eval.generate_samplers": "heun"}, "'heun' is not SOLVER:GUIDANCE"),
    ({"eval.generate_samplers": "euler:-1"}, "guidance >= 0"),
    ({"eval.generate_samplers": "euler:2:0"}, "'euler:2:0' is not"),
])
def test_generate_config_errors(change, message):
  c = load_config("generate")
  c.generate.encoder_workdir = "runs/x"
  for dotted, value in change.items():
    section, name = dotted.split(".")
    c[section][name] = value
  with pytest.raises(ConfigError, match=message):
    validate(c)


def test_sampler_rows_parse():
  assert parse_samplers("heun:2,euler:3:64") == [("heun", 2.0, None), ("euler", 3.0, 64)]
  assert parse_samplers(("heun:1.5",)) == [("heun", 1.5, None)] and parse_samplers("") == []
  assert SOLVERS == tuple(flow.SOLVERS)  # the config's names are the sampler's


def test_encoder_configs_refuse_the_generator_baseline():
  c = load_config("infonce")
  c.eval.baselines = ("generate_mse",)
  with pytest.raises(ConfigError, match="generator's baseline"):
    validate(c)


def test_the_generators_average_follows_early_steps_and_then_decays_at_its_rate():
  c = load_config("generate")
  c.generate.ema_decay = 0.99
  params = {"encoder": {"w": jnp.ones(2)}, "objective": {"generator": {"w": jnp.full(2, 10.0)},
                                                         "generator_ema": {"w": jnp.zeros(2)}, "other": jnp.ones(())}}
  for step, decay in ((0, 0.1), (8, 0.5), (10_000, 0.99)):  # min(0.99, (1 + step) / (10 + step))
    out = ema.average_generator(c, params, step)
    np.testing.assert_allclose(out["objective"]["generator_ema"]["w"], (1 - decay) * 10.0, rtol=1e-6)
    assert out["encoder"] is params["encoder"] and out["objective"]["other"] is params["objective"]["other"]
    np.testing.assert_array_equal(out["objective"]["generator"]["w"], 10.0)
  assert objectives.sampling_generator(out["objective"]) is out["objective"]["generator_ema"]
  assert objectives.sampling_generator(out["objective"], average=False) is out["objective"]["generator"]
  assert objectives.sampling_generator({"generator": 1}) == 1  # a run without an average samples its weights
  c.generate.encoder_workdir = "runs/x"
  c.generate.ema_decay = 1.0  # an average that never moves
  with pytest.raises(ConfigError, match=r"generate.ema_decay=1.0 must be <= 0.9999"):
    validate(c)


def test_a_generator_keeps_an_average_only_when_asked():
  c = load_config("generate")
  assert c.generate.ema_decay == 0.995  # the generate config's; the schema's default is off
  params = objectives.init_params(c, jax.random.PRNGKey(0))
  jax.tree_util.tree_map(np.testing.assert_array_equal, params["generator_ema"], params["generator"])
  saved = to_dict(c)
  del saved["generate"]["ema_decay"]  # a generator saved before the field: its checkpoint holds no average
  assert migrate(saved).generate.ema_decay == 0.0
  assert "generator_ema" not in objectives.init_params(migrate(saved), jax.random.PRNGKey(0))
