"""The options that let a per-frame encoder see motion: `model.frame_input` and `model.frame_pool`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_models import B, S, T, fast_jit, tiny, video
from test_objectives import _numpy_ntxent

from sora_jax import objectives
from sora_jax.config import derive, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder, init_variables
from sora_jax.models.frame_encoders import make_frame_encoder


def frames_fn(c):
  model = build_encoder(c)
  return fast_jit(lambda v, x: model.apply(v, x)["frames"])


def static_video(seed=0):
  one = np.random.default_rng(seed).integers(0, 256, (B, 1, S, S, 3), dtype=np.uint8)
  return np.repeat(one, T, axis=1)


def test_frame_differences_feed_the_first_conv_and_only_matter_when_frames_change():
  c = tiny(frame_input="rgb+diff")
  v = init_variables(c, jax.random.PRNGKey(0))
  kernel = v["params"]["frame_encoder"]["conv0"]["kernel"]
  assert kernel.shape[2] == 6  # RGB + its difference from the previous frame
  bumped = jax.tree_util.tree_map(lambda a: a, v)
  bumped["params"]["frame_encoder"]["conv0"]["kernel"] = kernel.at[:, :, 3:].add(0.5)
  f = frames_fn(c)
  still, moving = static_video(), video()
  np.testing.assert_allclose(f(v, still), f(bumped, still), rtol=1e-5, atol=1e-6)
  # The first frame has no predecessor: its difference is zero, so it ignores those weights too.
  np.testing.assert_allclose(f(v, moving)[:, 0], f(bumped, moving)[:, 0], rtol=1e-5, atol=1e-6)
  assert np.abs(f(v, moving)[:, 1:] - f(bumped, moving)[:, 1:]).max() > 1e-3


def test_rgb_input_keeps_three_channels():
  v = init_variables(tiny(frame_input="rgb"), jax.random.PRNGKey(0))
  assert v["params"]["frame_encoder"]["conv0"]["kernel"].shape[2] == 3


def test_two_streams_put_the_rgb_encoder_beside_a_second_encoder_that_sees_the_differences_only():
  c = tiny(frame_input="two_stream")
  v = init_variables(c, jax.random.PRNGKey(0))
  assert [v["params"][n]["conv0"]["kernel"].shape[2] for n in ("frame_encoder", "motion_encoder")] == [3, 3]
  rgb = init_variables(tiny(frame_input="rgb"), jax.random.PRNGKey(1))
  rgb["params"]["frame_encoder"] = v["params"]["frame_encoder"]
  moving, still = video(), static_video()
  out = frames_fn(c)(v, moving)
  d = out.shape[-1] // 2
  np.testing.assert_allclose(out[..., :d], frames_fn(tiny(frame_input="rgb"))(rgb, moving), rtol=1e-5, atol=1e-6)
  # Motion half: a still clip's differences are zero, so every frame of every clip reads the same; so
  # does a moving clip's first frame; its later frames differ.
  quiet = np.asarray(frames_fn(c)(v, still)[..., d:]).reshape(-1, d)
  np.testing.assert_allclose(quiet, np.broadcast_to(quiet[:1], quiet.shape), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out[:, 0, d:], np.broadcast_to(quiet[:1], (B, d)), rtol=1e-5, atol=1e-6)
  assert np.abs(out[:, 1:, d:] - quiet[0]).max() > 1e-3
  remat = tiny(frame_input="two_stream", remat_frames="time")  # one frame step at a time: the same features
  np.testing.assert_allclose(frames_fn(remat)(v, moving), out, rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="two_stream.*model.actors"):
    validate(tiny(frame_input="two_stream", actors=True))


def test_two_towers_each_embed_their_own_pathway_and_infonce_scores_each_apart():
  c = tiny(frame_input="two_tower")
  v = init_variables(c, jax.random.PRNGKey(0))
  model = build_encoder(c)
  run = fast_jit(lambda v, x: model.apply(v, x))
  moving = video()
  out = run(v, moving)
  towers = np.asarray(out["tower_embeddings"])
  assert towers.shape == (B, 2, c.model.embed_dim // 2)
  np.testing.assert_allclose(np.linalg.norm(towers, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["embedding"], towers.reshape(B, -1) / np.sqrt(2), rtol=1e-5, atol=1e-6)
  d = out["pooled"].shape[-1] // 2
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out["pooled"]).reshape(B, 2, d), axis=-1), 1.0, rtol=1e-5)
  # Each tower reads its own pathway: moving the motion encoder's weights moves the motion tower only.
  for moved, kept in (("motion_encoder", "frame_encoder"), ("frame_encoder", "motion_encoder")):
    bumped = jax.tree_util.tree_map(lambda a: a, v)
    bumped["params"][moved] = jax.tree_util.tree_map(lambda a: a + 0.1, v["params"][moved])
    after = np.asarray(run(bumped, moving)["tower_embeddings"])
    i = 0 if kept == "frame_encoder" else 1
    np.testing.assert_allclose(after[:, i], towers[:, i], rtol=1e-5, atol=1e-6)
    assert np.abs(after[:, 1 - i] - towers[:, 1 - i]).max() > 1e-3
  # The RGB tower sees the frames; the motion tower each frame with its difference from the previous one.
  assert [v["params"][n]["conv0"]["kernel"].shape[2] for n in ("frame_encoder", "motion_encoder")] == [3, 6]
  # infonce: the sum of each tower's own InfoNCE, not the InfoNCE of the joint embedding.
  rng = np.random.default_rng(0)
  towers = rng.normal(size=(6, 2, 2, 4)).astype(np.float32)  # [B, V, tower, E']: tower 0's views agree
  towers[:, 1, 0] = towers[:, 0, 0] + 0.1 * towers[:, 1, 0]
  towers /= np.linalg.norm(towers, axis=-1, keepdims=True)
  views = {"tower_embeddings": jnp.asarray(towers), "embedding": jnp.asarray(towers.reshape(6, 2, 8) / np.sqrt(2))}
  loss, _ = objectives.compute_loss(c, views, {})
  apart = np.sum([float(objectives.infonce(views["tower_embeddings"][:, :, i], c.objective.temperature)[0])
                   for i in range(2)])
  assert float(loss) == pytest.approx(apart, rel=1e-5)
  assert abs(apart / 2 - float(objectives.infonce(views["embedding"], c.objective.temperature)[0])) > 0.1
  with pytest.raises(ConfigError, match="two_tower.*embed_dim=7"):
    validate(tiny(frame_input="two_tower", embed_dim=7))


@pytest.mark.parametrize("frame_encoder", ["seed_cnn", "resnet"])
def test_flatten_keeps_the_grid_whose_average_is_the_mean_pool(frame_encoder):
  mean_m, flat_m = (tiny(frame_encoder=frame_encoder, frame_pool=p).model for p in ("mean", "flatten"))
  images = jnp.asarray(video().reshape(B * T, S, S, 3), jnp.float32) / 255.0
  params = jax.jit(make_frame_encoder(mean_m, jnp.float32).init)(jax.random.PRNGKey(1), images)
  mean_f = jax.jit(make_frame_encoder(mean_m, jnp.float32).apply)(params, images)
  flat_f = jax.jit(make_frame_encoder(flat_m, jnp.float32).apply)(params, images)  # same parameters for both pools
  d = mean_f.shape[-1]
  grid = (S // 8) ** 2  # seed_cnn: three 2x pools; resnet (small stem): three stride-2 stages
  assert flat_f.shape == (B * T, grid * d)
  cells = flat_f.reshape(B * T, grid, d)
  np.testing.assert_allclose(cells.mean(axis=1), mean_f, rtol=1e-5, atol=1e-6)
  assert float(cells.std(axis=1).max()) > 1e-3  # the cells differ: where things are is kept


def test_flatten_feeds_the_temporal_model_the_whole_grid():
  c = tiny(frame_pool="flatten")
  out = build_encoder(c).apply(init_variables(c, jax.random.PRNGKey(0)), video())
  assert out["frames"].shape == (B, T, (S // 8) ** 2 * 32)  # width 0.125: 256 * 0.125 channels at the end


@pytest.mark.parametrize("field,value", [("frame_input", "diff"), ("frame_pool", "max")])
def test_bad_frame_options_name_the_field_and_the_choices(field, value):
  c = tiny()
  c.model[field] = value
  with pytest.raises(ConfigError, match=rf"config\.model\.{field}=.*{value}"):
    validate(c)


@pytest.mark.parametrize("frame_input", ["rgb", "rgb+diff", "two_tower"])
def test_time_reversal_embeds_the_clip_played_backwards(frame_input):
  c = tiny(frame_input=frame_input, time_reversal=True)
  v = init_variables(c, jax.random.PRNGKey(0))
  model = build_encoder(c)
  run = fast_jit(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}))
  moving = video()
  out, backwards = run(v, moving), run(v, np.ascontiguousarray(moving[:, ::-1]))
  # the last tower's embedding: two_tower reverses its motion tower's clips only
  key, pick = ("tower_embeddings", lambda e: e[:, 1]) if frame_input == "two_tower" else ("embedding", lambda e: e)
  np.testing.assert_allclose(out["reversed_embedding"], pick(backwards[key]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pick(out[key]), backwards["reversed_embedding"], rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(out["reversed_embedding"]) - np.asarray(pick(out[key]))).max() > 1e-3
  assert "reversed_embedding" not in model.apply(v, moving)  # inference: no reversed pass


def test_infonce_counts_each_reversed_clip_as_a_video_of_its_own():
  c = tiny(frame_input="rgb", time_reversal=True)
  rng = np.random.default_rng(0)
  emb, rev = (_unit(rng.normal(size=(5, 2, 4))) for _ in range(2))
  loss, _ = objectives.compute_loss(c, {"embedding": jnp.asarray(emb), "reversed_embedding": jnp.asarray(rev)}, {})
  both = _numpy_ntxent(np.concatenate([emb, rev]), c.objective.temperature)
  assert float(loss) == pytest.approx(both, rel=1e-5)
  assert abs(both - _numpy_ntxent(emb, c.objective.temperature)) > 0.1
  # two towers: the RGB tower's InfoNCE as it was, the motion tower's with its reversed clips
  towers = _unit(rng.normal(size=(5, 2, 2, 4)))
  views = {"tower_embeddings": jnp.asarray(towers), "embedding": jnp.asarray(towers.reshape(5, 2, 8) / np.sqrt(2)),
           "reversed_embedding": jnp.asarray(rev)}
  loss, _ = objectives.compute_loss(tiny(frame_input="two_tower", time_reversal=True), views, {})
  t = c.objective.temperature
  expected = _numpy_ntxent(towers[:, :, 0], t) + _numpy_ntxent(np.concatenate([towers[:, :, 1], rev]), t)
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  for bad in (dict(frame_input="two_stream"), dict(actors=True), dict(latent_predict=True)):
    with pytest.raises(ConfigError, match="time_reversal=True is built for frame_input rgb, rgb\\+diff and two_tower"):
      validate(tiny(time_reversal=True, **bad))
  sup = derive.supervised_baseline(c, 10)  # eval's baseline and fine-tuning: a classifier, no reversal
  assert not sup.model.time_reversal
  validate(sup)
  c.objective.name = "predictive"
  c.model.predict_steps = 2
  with pytest.raises(ConfigError, match="time_reversal.*infonce"):
    validate(c)


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
