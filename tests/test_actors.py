"""Per-actor recognition: the moving_actors data, tracks through the pipeline's crops, RoIAlign, the
actor-level InfoNCE and DPC, and the model's per-actor outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax import objectives
from sora_jax.config import load_config
from sora_jax.config.validate import validate
from sora_jax.data import actors, augment, clips, tracks
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder
from sora_jax.models.roi import roi_align
from sora_jax.models.video_encoder import init_variables
from sora_jax.objectives.actors import actor_infonce, actor_predictive


def test_each_actor_does_its_action_whole_inside_the_frame_and_its_boxes_cover_it():
  seen = set()
  for i in range(40):
    ex = actors.render("train", i, clean=True)
    n = ex["num_actors"]
    assert 2 <= n <= actors.MAX_ACTORS and (ex["actor_label"][n:] == -1).all() and (ex["actor_label"][:n] >= 0).all()
    boxes = ex["boxes"][:n]
    assert boxes.min() >= 0 and boxes[..., 2:].max() <= 40  # whole inside the 40 px frame
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [A, T, 2] (x, y)
    step = np.diff(centre, axis=1)
    for a in range(n):
      motion, speed = int(ex["actor_motion"][a]), np.abs(step[a]).sum(-1)
      seen.add(motion)
      if motion in (0, 1):  # walks / runs: one direction throughout, 0.6 / 1.5 px per frame on average
        assert abs(speed.mean() - (actors.WALK, actors.RUN)[motion]) < 0.1
        assert (np.abs(step[a, :, 0]) < 1e-6).all() or (np.abs(step[a, :, 1]) < 1e-6).all()
      elif motion == 2:  # stops: moves, then never again from a frame in CHANGE_FRAMES
        assert speed[:5].sum() > 0 and (speed[actors.CHANGE_FRAMES[1]:] == 0).all()
      else:  # turns: moves along one axis first and along the other at the end
        axis_start, axis_end = np.argmax(np.abs(centre[a, 5] - centre[a, 0])), np.argmax(np.abs(centre[a, 15] - centre[a, 11]))
        assert axis_start != axis_end
    covered = np.zeros((16, 40, 40), bool)
    for a in range(n):
      for t in range(16):
        x0, y0, x1, y1 = boxes[a, t].astype(int)
        covered[t, y0:y1, x0:x1] = True
    assert not ((ex["video"].max(-1) > 0) & ~covered).any()  # every drawn pixel lies in a box
    assert ex["caption"].count("the ") == n
  assert seen == {0, 1, 2, 3}
  a, b = actors.render("test", 7), actors.render("test", 7)
  np.testing.assert_array_equal(a["video"], b["video"])
  assert not np.array_equal(a["video"], actors.render("validation", 7)["video"])


def _rectangle_frames(height, width, box, frames=3):
  video = np.zeros((frames, height, width, 3), np.uint8)
  x0, y0, x1, y1 = box
  video[:, y0:y1, x0:x1] = 255
  return video


def _extent(image):
  """(x0, y0, x1, y1) of the pixels above half intensity, normalised."""
  ys, xs = np.nonzero(image[..., 0] > 127)
  s = image.shape[0]
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / s


@pytest.mark.parametrize("flip", [False, True])
def test_train_boxes_follow_each_views_crop_and_mirror(flip):
  video = _rectangle_frames(40, 48, (10, 12, 22, 30))
  boxes = np.tile(np.array([10, 12, 22, 30], np.float32), (1, 3, 1))  # [A=1, L=3, 4]
  crop = np.array([[0.1, 0.05, 0.9, 0.8], [0.2, 0.0, 1.0, 0.6]], np.float32)  # [V, 4] (y0, x_a, y1, x_b)
  if flip:
    crop = crop[:, [0, 3, 2, 1]]
  frame_idx = np.array([[0, 1], [1, 2]], np.int32)
  out = augment.crop_views(tf.constant(video[frame_idx.reshape(-1)]), tf.constant(crop), 2, 32).numpy()
  got = tracks.train_boxes(tf.constant(boxes), tf.constant(frame_idx), tf.constant(crop), 40, 48, 32).numpy()
  assert got.shape == (2, 1, 2, 4)
  for v in range(2):
    np.testing.assert_allclose(got[v, 0, 0], _extent(out[v, 0]), atol=1.5 / 32)


@pytest.mark.parametrize("num_crops", [1, 3])
def test_eval_boxes_follow_the_resize_and_each_crop(num_crops):
  video = _rectangle_frames(48, 80, (50, 10, 70, 30), frames=4)
  boxes = np.tile(np.array([50, 10, 70, 30], np.float32), (1, 4, 1))
  idx = tf.constant([0, 1, 2, 3], tf.int32)  # 2 clips of 2 frames
  crops = clips.eval_crops(tf.constant(video), 32, num_crops).numpy()  # [K, 4, 32, 32, 3]
  got = tracks.eval_boxes(tf.constant(boxes), idx, 48, 80, 32, 2, num_crops).numpy()
  assert got.shape == (2 * num_crops, 1, 2, 4)
  for k in range(num_crops):
    if (crops[k, 0, ..., 0] > 127).any():
      np.testing.assert_allclose(got[k, 0, 0], _extent(crops[k, 0]), atol=1.5 / 32)  # clip 0, crop k
    else:  # the rectangle lies outside this crop: its box is clipped to a border line
      assert got[k, 0, 0, 0] == got[k, 0, 0, 2] or got[k, 0, 0, 1] == got[k, 0, 0, 3]


def _bilinear(f, y, x):
  h, w, _ = f.shape
  if y < -1 or y > h or x < -1 or x > w:
    return np.zeros(f.shape[-1])
  y, x = min(max(y, 0), h - 1), min(max(x, 0), w - 1)
  y0, x0 = int(y), int(x)
  y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
  ly, lx = y - y0, x - x0
  return f[y0, x0] * (1 - ly) * (1 - lx) + f[y0, x1] * (1 - ly) * lx + f[y1, x0] * ly * (1 - lx) + f[y1, x1] * ly * lx


def _numpy_roi_align(f, box, size, samples):
  """Detectron2's RoIAlign (aligned=True), one bilinear sample at a time."""
  h, w, _ = f.shape
  x0, y0, x1, y1 = box[0] * w - 0.5, box[1] * h - 0.5, box[2] * w - 0.5, box[3] * h - 0.5
  out = np.zeros((size, size, f.shape[-1]))
  for i in range(size):
    for j in range(size):
      points = [(y0 + (i + (a + 0.5) / samples) * (y1 - y0) / size, x0 + (j + (b + 0.5) / samples) * (x1 - x0) / size)
                for a in range(samples) for b in range(samples)]
      out[i, j] = np.mean([_bilinear(f, y, x) for y, x in points], axis=0)
  return out


def test_roi_align_equals_sampling_one_point_at_a_time():
  rs = np.random.RandomState(0)
  f = rs.normal(size=(2, 5, 6, 3)).astype(np.float32)
  boxes = np.array([[[0.1, 0.2, 0.5, 0.9], [0, 0, 1, 1], [-0.3, 0.7, 0.2, 1.3]],  # the last: partly outside
                    [[0.9, 0.1, 1.0, 0.3], [0.4, 0.4, 0.4, 0.4], [0.5, 0, 1, 1]]], np.float32)
  got = np.asarray(roi_align(jnp.asarray(f), jnp.asarray(boxes), 3, 2))
  want = np.stack([np.stack([_numpy_roi_align(f[n], boxes[n, k], 3, 2) for k in range(3)]) for n in range(2)])
  np.testing.assert_allclose(got, want, atol=1e-5)


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("views", [2, 3])
def test_actor_infonce_is_ntxent_over_the_present_actors(views):
  rs = np.random.RandomState(views)
  emb = _unit(rs.normal(size=(3, views, 4, 8)))
  flat = np.swapaxes(emb, 1, 2).reshape(-1, 8)  # actor-major
  labels = np.repeat(np.arange(12), views)
  full, _ = actor_infonce(jnp.asarray(emb), jnp.ones((3, 4), bool), 0.1)
  np.testing.assert_allclose(float(full), float(optax.losses.ntxent(flat, labels, 0.1)), rtol=1e-5)
  mask = np.ones((3, 4), bool)
  mask[0, 2:], mask[2, 3] = False, False
  keep = np.repeat(mask.reshape(-1), views)
  masked, m = actor_infonce(jnp.asarray(emb), jnp.asarray(mask), 0.1)
  np.testing.assert_allclose(float(masked), float(optax.losses.ntxent(flat[keep], labels[keep], 0.1)), rtol=1e-5)
  emb = np.where(mask[:, None, :, None], emb, rs.normal(size=emb.shape))  # absent slots: any numbers
  again, _ = actor_infonce(jnp.asarray(_unit(emb)), jnp.asarray(mask), 0.1)
  np.testing.assert_allclose(float(again), float(masked), rtol=1e-6)
  assert 0.0 <= float(m["actor_contrastive_accuracy"]) <= 1.0


def test_actor_infonce_is_the_same_on_any_device_count():
  rs = np.random.RandomState(1)
  emb, mask = _unit(rs.normal(size=(8, 2, 3, 8))), rs.uniform(size=(8, 3)) < 0.7
  one = actor_infonce(jnp.asarray(emb), jnp.asarray(mask), 0.2)[0]
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  four = jax.jit(lambda e, m: actor_infonce(e, m, 0.2)[0])(put(emb), put(mask))
  np.testing.assert_allclose(float(four), float(one), rtol=1e-5)


def test_each_actors_embedding_reads_its_own_track_and_the_clip_path_ignores_the_tracks():
  config = load_config("actors", ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16",
                                  "data.num_frames=4", "data.frame_size=16"])
  model = build_encoder(config)
  variables = init_variables(config, jax.random.PRNGKey(0))
  video = np.random.RandomState(0).randint(0, 255, (2, 4, 16, 16, 3)).astype(np.uint8)
  boxes = np.tile(np.array([0.1, 0.1, 0.6, 0.6], np.float32), (2, 3, 4, 1))
  boxes[:, 1] = [0.4, 0.3, 0.9, 1.0]
  out = model.apply(variables, video, boxes=jnp.asarray(boxes))
  assert out["actor_embedding"].shape == (2, 3, config.model.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(out["actor_embedding"], axis=-1), 1.0, rtol=1e-5)
  moved = boxes.copy()
  moved[:, 2] = [0.0, 0.5, 0.5, 1.0]  # actor 2 elsewhere: only its own embedding changes
  again = model.apply(variables, video, boxes=jnp.asarray(moved))
  np.testing.assert_allclose(again["actor_embedding"][:, :2], out["actor_embedding"][:, :2], atol=1e-6)
  assert not np.allclose(again["actor_embedding"][:, 2], out["actor_embedding"][:, 2], atol=1e-4)
  np.testing.assert_allclose(out["actor_embedding"][:, 0], out["actor_embedding"][:, 0])
  clip = model.apply(variables, video)  # no tracks: the clip's outputs only, the same numbers
  assert "actor_embedding" not in clip
  np.testing.assert_array_equal(clip["embedding"], out["embedding"])


def test_the_clip_path_of_an_actors_model_is_the_same_network():
  """model.actors reads the seed CNN's map before its last max-pool and pools it for the clip: the
  clip's outputs are those of the same parameters without model.actors, to the bit."""
  over = ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16", "data.num_frames=4", "data.frame_size=16"]
  with_actors = load_config("actors", over)
  without = load_config("actors", over + ["model.actors=false", "objective.name=infonce"])
  variables = init_variables(with_actors, jax.random.PRNGKey(0))
  clip_params = {k: v for k, v in variables["params"].items() if k != "actors"}
  video = np.random.RandomState(1).randint(0, 255, (2, 4, 16, 16, 3)).astype(np.uint8)
  boxes = jnp.asarray(np.tile(np.array([0.1, 0.1, 0.6, 0.6], np.float32), (2, 2, 4, 1)))
  a = build_encoder(with_actors).apply(variables, video, boxes=boxes)
  b = build_encoder(without).apply({"params": clip_params}, video)
  for key in b:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_box_dropout_drops_whole_tracks_box_features_in_training_only():
  over = ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16", "data.num_frames=4", "data.frame_size=16",
          "model.actor_box_dropout=0.5"]
  config = load_config("actors", over)
  model = build_encoder(config)
  variables = init_variables(config, jax.random.PRNGKey(0))
  rs = np.random.RandomState(2)
  video = rs.randint(0, 255, (2, 4, 16, 16, 3)).astype(np.uint8)
  boxes = jnp.asarray(np.sort(rs.uniform(size=(2, 16, 4, 2, 2)), axis=-2).reshape(2, 16, 4, 4).astype(np.float32))
  run = lambda v, train: model.apply(v, video, boxes=boxes, train=train, rngs={"dropout": jax.random.PRNGKey(5)})
  no_boxes = jax.tree_util.tree_map(np.asarray, variables)
  embed = no_boxes["params"]["actors"]["box_embed"]
  embed["kernel"], embed["bias"] = np.zeros_like(embed["kernel"]), np.zeros_like(embed["bias"])
  dropped = np.all(np.isclose(run(variables, True)["actor_embedding"], run(no_boxes, True)["actor_embedding"],
                              atol=1e-6), axis=-1)  # [2, 16]: the tracks whose box features were dropped
  assert 6 <= dropped.sum() <= 26  # about half of 32
  plain = load_config("actors", over[:-1])
  np.testing.assert_array_equal(run(variables, False)["actor_embedding"],
                                build_encoder(plain).apply(variables, video, boxes=boxes)["actor_embedding"])


def test_actor_predictive_scores_each_present_tracks_future_against_every_present_tracks_steps():
  rs = np.random.RandomState(0)
  b, a, t, k_max, e = 3, 2, 5, 2, 4
  pred, targ = rs.normal(size=(b, a, t, k_max, e)), rs.normal(size=(b, a, t, e))
  mask = np.array([[1, 1], [1, 0], [0, 1]], bool)
  losses, accs = [], []
  for k in range(1, k_max + 1):  # direct: every (present track, t) query against every present (track, t') key
    slots = [(i, j, s) for i in range(b) for j in range(a) for s in range(t - k) if mask[i, j]]
    scores = np.array([[pred[i, j, s, k - 1] @ targ[i2, j2, s2 + k] / 0.5 for i2, j2, s2 in slots]
                       for i, j, s in slots])
    own = np.arange(len(slots))
    losses.append(np.mean(np.log(np.exp(scores).sum(1)) - scores[own, own]))
    accs.append(np.mean(scores.argmax(1) == own))
  loss, m = actor_predictive(jnp.asarray(pred), jnp.asarray(targ), jnp.asarray(mask), 0.5)
  np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(float(m["actor_predictive_accuracy"]), np.mean(accs), rtol=1e-6)
  absent = ~mask[:, :, None, None]
  again, _ = actor_predictive(jnp.asarray(np.where(absent[..., None], 9.0, pred)), jnp.asarray(np.where(absent, 9.0, targ)),
                              jnp.asarray(mask), 0.5)
  np.testing.assert_allclose(float(again), float(loss), rtol=1e-6)  # absent slots' numbers do not count


def _tiny_actors_model(overrides, seed):
  """-> (config, model, variables, video [2, 4, 16, 16, 3], boxes [2, 3, 4, 4], the model's outputs)."""
  config = validate(load_config("actors", overrides))
  model = build_encoder(config)
  variables = init_variables(config, jax.random.PRNGKey(0))
  rs = np.random.RandomState(seed)
  video = rs.randint(0, 255, (2, 4, 16, 16, 3)).astype(np.uint8)
  boxes = np.sort(rs.uniform(size=(2, 3, 4, 2, 2)), axis=-2).reshape(2, 3, 4, 4).astype(np.float32)
  return config, model, variables, video, boxes, model.apply(variables, video, boxes=jnp.asarray(boxes))


def test_each_tracks_prediction_at_t_reads_its_past_only_and_trains_through_the_objective():
  over = ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16", "data.num_frames=4", "data.frame_size=16",
          "objective.name=actor_infonce+actor_predictive", "model.actor_predict_steps=2"]
  config, model, variables, video, boxes, out = _tiny_actors_model(over, 3)
  rs = np.random.RandomState(3)
  assert out["actor_predictions"].shape == (2, 3, 4, 2, config.model.embed_dim)
  assert out["actor_targets"].shape == (2, 3, 4, config.model.embed_dim)
  later = boxes.copy()
  later[:, :, 2:] = np.sort(rs.uniform(size=(2, 3, 2, 2, 2)), axis=-2).reshape(2, 3, 2, 4)  # frames 2, 3 move
  moved = model.apply(variables, video, boxes=jnp.asarray(later))
  np.testing.assert_allclose(moved["actor_predictions"][:, :, :2], out["actor_predictions"][:, :, :2], atol=1e-6)
  assert not np.allclose(moved["actor_predictions"][:, :, 2:], out["actor_predictions"][:, :, 2:], atol=1e-4)
  assert not np.allclose(moved["actor_targets"][:, :, 2:], out["actor_targets"][:, :, 2:], atol=1e-4)  # motion
  other_video = model.apply(variables, 255 - video, boxes=jnp.asarray(boxes))  # the targets are the boxes' alone
  np.testing.assert_allclose(other_video["actor_targets"], out["actor_targets"], atol=1e-6)
  views = jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y], 1), out, moved)
  mask = jnp.asarray([[True, True, False], [True, False, True]])
  loss, metrics = objectives.compute_loss(config, views, {"actor_mask": mask})
  direct = np.mean([actor_predictive(views["actor_predictions"][:, v], views["actor_targets"][:, v], mask, 0.1)[0]
                    for v in range(2)])
  np.testing.assert_allclose(float(metrics["actor_predictive_loss"]), direct, rtol=1e-5)
  weight = config.objective.actor_predictive_weight
  np.testing.assert_allclose(float(loss), float(metrics["actor_infonce_loss"] + weight * metrics["actor_predictive_loss"]),
                             rtol=1e-5)
  with pytest.raises(ConfigError, match="actor_predict_steps=2"):
    validate(load_config("actors", over[:-1] + ["model.actor_predict_steps=0"]))
  with pytest.raises(ConfigError, match="actor_predict_steps=4 must be < data.num_frames=4"):
    validate(load_config("actors", over[:-1] + ["model.actor_predict_steps=4"]))
  with pytest.raises(ConfigError, match="must not see frames after t"):
    validate(load_config("actors", over + ["model.bidirectional=true"]))


def test_appearance_is_the_tracks_contents_over_time_beside_the_pooled_features_and_trains_through_its_term():
  over = ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16", "data.num_frames=4", "data.frame_size=16",
          "model.frame_input=rgb"]  # rgb+diff: each frame's difference from the previous one has a time order
  term = ["model.actor_appearance=true", "objective.name=actor_infonce+actor_appearance",
          "objective.actor_appearance_weight=0.5"]
  config, model, variables, video, boxes, out = _tiny_actors_model(over + term, 4)
  assert out["actor_appearance"].shape == (2, 3, config.model.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(out["actor_appearance"], axis=-1), 1.0, rtol=1e-5)
  # actor_pooled: the track's temporal features (those of the same parameters without appearance), then its look
  actor_params = {k: v for k, v in variables["params"]["actors"].items() if not k.startswith("appearance")}
  plain = build_encoder(load_config("actors", over + ["model.actor_appearance=false"])).apply(
      {**variables, "params": {**variables["params"], "actors": actor_params}}, video, boxes=jnp.asarray(boxes))
  width = plain["actor_pooled"].shape[-1]
  pooled = np.asarray(out["actor_pooled"])
  np.testing.assert_allclose(pooled[..., :width], plain["actor_pooled"] / np.linalg.norm(plain["actor_pooled"], axis=-1,
                                                                                        keepdims=True), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(pooled[..., width:], axis=-1), 1.0, rtol=1e-5)  # each part at unit norm
  # how it looks over the clip, not when: frames and boxes reversed leave it, not the track's embedding
  back = model.apply(variables, video[:, ::-1], boxes=jnp.asarray(boxes[:, :, ::-1]))
  np.testing.assert_allclose(back["actor_appearance"], out["actor_appearance"], atol=1e-5)
  assert not np.allclose(back["actor_embedding"], out["actor_embedding"], atol=1e-4)
  # each half of the track's look: that of a clip of those frames alone
  for half, frames in enumerate((slice(0, 2), slice(2, 4))):
    alone = model.apply(variables, video[:, frames], boxes=jnp.asarray(boxes[:, :, frames]))
    np.testing.assert_allclose(out["actor_appearance_halves"][:, :, half], alone["actor_appearance"], atol=1e-5)
  mask = jnp.asarray([[True, True, False], [True, False, True]])

  def loss(params):
    outs = [model.apply({**variables, "params": params}, v, boxes=jnp.asarray(b))
            for v, b in ((video, boxes), (255 - video, boxes))]
    views = jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y], 1), *outs)
    return objectives.compute_loss(config, views, {"actor_mask": mask})[1]["actor_appearance_loss"], views

  (value, views), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  first_against_second = jnp.stack([views["actor_appearance_halves"][:, 0, :, 0],
                                    views["actor_appearance_halves"][:, 1, :, 1]], 1)
  np.testing.assert_allclose(float(value), float(actor_infonce(first_against_second, mask, 0.1)[0]), rtol=1e-6)
  norm = lambda tree: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(tree)))
  assert norm(grads["actors"]["appearance_proj"]) > 0 and norm(grads["actors"]["actor_temporal"]) == 0
  assert norm({k: v for k, v in grads.items() if k != "actors"}) > 0  # and the frame encoder under the RoIs
  with pytest.raises(ConfigError, match="actor_appearance=True"):
    validate(load_config("actors", over + term[1:] + ["model.actor_appearance=false"]))
