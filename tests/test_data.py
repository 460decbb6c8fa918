"""Data pipeline on the built-in `moving_shapes/small`: determinism, consistency, hosts, resume."""

import dataclasses

import numpy as np
import pytest

from sora_jax.config import validate
from sora_jax.config.named import infonce as _default


def _aug(**changes):
  """The default config's augmentation (the schema's defaults) with `changes`."""
  from sora_jax.data import augment
  return dataclasses.replace(augment.AugmentConfig.from_config(_default.get_config()), **changes)
from sora_jax.errors import ConfigError


def small_config(data_dir, **data):
  c = _default.get_config()
  c.data.name = "moving_shapes/small"
  c.data.data_dir = data_dir
  c.data.num_frames = 4
  c.data.frame_size = 16
  c.data.stride = 2
  c.data.num_parallel_calls = 2
  c.train.batch_size = 16
  for k, v in data.items():
    c.data[k] = v
  return c


def take(it, n):
  return [next(it) for _ in range(n)]


def test_bad_config_raises_config_error():
  validate(_default.get_config())
  for field, value in [("name", "moving_squares"), ("num_frames", 0), ("view_gap", "gaussian"),
                       ("stride", 1.5), ("num_parallel_calls", 0), ("name", "tfrecord:")]:
    c = _default.get_config()
    with c.ignore_type():
      c.data[field] = value
    with pytest.raises(ConfigError, match=field if field != "name" else "name"):
      validate(c)
  c = _default.get_config()
  c.data.augment.crop_scale = (0.9, 0.2)
  with pytest.raises(ConfigError, match="crop_scale"):
    validate(c)
  c = _default.get_config()
  c.data.augment.flip_prob = 1.5
  with pytest.raises(ConfigError, match="flip_prob"):
    validate(c)
  for bad in ((0.2, 0.3), (0.2, 0.3, 0.8, 0.9), (0.2, -0.1, 0.8, 0.5)):
    c = _default.get_config()
    c.data.augment.color_jitter = bad
    with pytest.raises(ConfigError, match="color_jitter"):
      validate(c)


def test_color_jitter_magnitudes_override_the_strength():
  import tensorflow as tf

  from sora_jax.data import augment
  assert augment.jitter_magnitudes(_aug(color_jitter_strength=0.5, color_jitter=())) == (0.4, 0.4, 0.4, 0.1)
  hue_only = _aug(color_jitter_prob=1.0, color_jitter_strength=1.0, color_jitter=(0, 0, 0, 0.5),
                                   grayscale_prob=0.0, crop_scale=(1.0, 1.0), flip_prob=0.0)
  p = augment.draw_params(tf.constant([1, 2], tf.int64), 64, 1, hue_only)
  assert float(tf.reduce_max(tf.abs(p["brightness"]))) == 0 and float(tf.reduce_max(p["hue"])) > 0.4
  red = np.zeros((2, 16, 16, 3), np.uint8)
  red[..., 0] = 200
  outs = [augment.augment_clip(tf.constant(red), tf.constant([5, v], tf.int64), 16, hue_only).numpy() for v in range(8)]
  for o in outs:  # hue moves, brightness (max channel) stays
    assert abs(int(o.max()) - 200) <= 2
  assert len({tuple(o[0, 0, 0]) for o in outs}) > 4


def _op_types(fn, *args) -> set:
  """Op types of a tf.function's graph and of every function it calls (map_fn, cond branches)."""
  graph = fn.get_concrete_function(*args).graph.as_graph_def()
  return {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


@pytest.mark.parametrize("jitter,hue,colour_map", [((0.4, 0.4, 0.4, 0.0), False, True),
                                                    ((0.0, 0.0, 0.0, 0.3), True, False)])
def test_a_colour_jitter_op_whose_maxima_are_zero_is_not_run(jitter, hue, colour_map):
  import tensorflow as tf

  from sora_jax.data import augment
  cfg = _aug(color_jitter_prob=1.0, color_jitter=jitter, grayscale_prob=0.0)
  params = augment.draw_params(tf.constant([1, 2], tf.int64), 4, 2, cfg)
  video = tf.constant(np.random.default_rng(0).integers(0, 256, (4, 2, 8, 8, 3)).astype(np.uint8))
  ops = _op_types(tf.function(lambda v, p: augment.apply_batch(v, p, cfg)), video, params)
  assert ("AdjustHue" in ops) == hue and ("BatchMatMulV2" in ops) == colour_map
  full = dataclasses.replace(cfg, color_jitter=tuple(v or 1e-30 for v in jitter))  # every op runs (params as drawn)
  a = augment.apply_batch(video, params, cfg).numpy().astype(int)
  b = augment.apply_batch(video, params, full).numpy().astype(int)
  assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 1e-3


def test_synthetic_is_a_function_of_seed_and_index():
  from sora_jax.data import synthetic
  a = synthetic.render("moving_shapes", "train", 7)
  b = synthetic.render("moving_shapes", "train", 7)
  c = synthetic.render("moving_shapes", "train", 8)
  assert a["video"].tobytes() == b["video"].tobytes() and a["caption"] == b["caption"]
  assert a["video"].tobytes() != c["video"].tobytes()
  assert synthetic.SHAPES[a["label"]] in a["caption"] and synthetic.DIRECTIONS[a["motion_label"]] in a["caption"]
  d = synthetic.render("moving_digits", "test", 3)
  assert d["video"].shape == (16, 40, 40, 3) and f"digit {d['label']}" in d["caption"]


def test_only_the_object_persists_through_a_video():
  """Background and distractors come from one distribution for all videos, redrawn per frame: no
  video has its own background colour (a shortcut InfoNCE would match instead of the object)."""
  from sora_jax.data import synthetic
  means = []
  for i in range(8):
    full = synthetic.render("moving_shapes", "train", i)
    clean = synthetic.render("moving_shapes", "train", i, clean=True)
    assert full["caption"] == clean["caption"]  # the same object and motion without the clutter
    off = (clean["video"] == 0).all(-1)  # pixels off the object
    means.append(full["video"][off].astype(np.float64).mean(0))
  assert np.std(means, axis=0).max() < 2.0, means


def _centroids(video):
  """[T, S, S, 3] clean video -> (object mass per frame [T], centroid (y, x) per frame [T, 2])."""
  mass = video.astype(np.float64).sum(-1)
  yy, xx = np.mgrid[0:video.shape[1], 0:video.shape[2]]
  total = mass.sum((1, 2))
  return total, np.stack([(mass * yy).sum((1, 2)) / total, (mass * xx).sum((1, 2)) / total], -1)


def test_the_object_moves_whole_in_the_labelled_direction():
  """The object keeps all its pixels in every frame (never cut by an edge) and its centre moves along
  the labelled direction at the captioned speed."""
  from sora_jax.data import synthetic
  seen = set()
  for kind in ("moving_shapes", "moving_digits"):
    for i in range(12):
      ex = synthetic.render(kind, "validation", i, clean=True)
      d = ex["motion_label"]
      seen.add(d)
      mass, centre = _centroids(ex["video"])
      np.testing.assert_allclose(mass, mass[0], rtol=1e-6)  # whole in every frame
      along = {0: (0, -1), 1: (0, 1), 2: (-1, 0), 3: (1, 0)}[d]
      speed = 0.5 * (1 + ("quickly" in ex["caption"]))
      moved = centre[-1] - centre[0]
      np.testing.assert_allclose(moved, np.array(along) * speed * (len(mass) - 1), atol=1.01)
      assert np.all(np.diff(centre, axis=0) @ np.array(along) >= 0)  # never backwards
  assert seen == {0, 1, 2, 3}


def test_a_single_frame_does_not_tell_the_direction():
  """Where the object is in one frame has (about) the same distribution for every direction, so the
  motion label needs more than one frame."""
  from sora_jax.data import synthetic
  by_dir = {d: [] for d in range(4)}
  for i in range(800):
    ex = synthetic.render("moving_shapes", "train", i, clean=True, num_frames=8)
    by_dir[ex["motion_label"]].append(_centroids(ex["video"])[1])
  means = np.array([np.concatenate(c).mean(0) for c in by_dir.values()])  # [4, (y, x)]
  spreads = np.array([np.concatenate(c).std(0) for c in by_dir.values()])
  assert np.abs(means - 20).max() < 1.5, means  # 40 px frames: centred for every direction
  assert spreads.max() / spreads.min() < 1.15, spreads  # the still axis spreads like a moving one


def test_train_batches_are_deterministic_and_seeded(data_dir):
  from sora_jax.data import pipeline
  c = small_config(data_dir)
  a = take(pipeline.TrainInput(c), 2)
  b = take(pipeline.TrainInput(c), 2)
  assert a[0]["video"].shape == (16, 2, 4, 16, 16, 3) and a[0]["video"].dtype == np.uint8
  assert a[0]["label"].dtype == np.int32 and a[0]["video_id"].dtype == np.int64
  for x, y in zip(a, b):
    for k in x:
      assert x[k].tobytes() == y[k].tobytes(), k
  c.seed = 1
  other = take(pipeline.TrainInput(c), 1)[0]
  assert other["video"].tobytes() != a[0]["video"].tobytes()
  assert other["video_id"].tolist() != a[0]["video_id"].tolist()
  info = pipeline.dataset_info(c)
  assert info["num_classes"] == 5 and info["num_motion_classes"] == 4 and info["splits"]["train"] == 192


def test_views_differ_but_each_clip_is_consistent(data_dir):
  import tensorflow as tf

  from sora_jax.data import augment
  frame = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
  static = tf.constant(np.stack([frame] * 6))  # a still video: any per-frame difference is augmentation
  cfg = _aug(color_jitter_prob=1.0, grayscale_prob=0.0, blur_prob=1.0, solarize_prob=0.5)
  outs = [augment.augment_clip(static, tf.constant([3, v], tf.int64), 16, cfg).numpy() for v in range(3)]
  for o in outs:
    assert o.shape == (6, 16, 16, 3)
    assert (o == o[:1]).all()  # crop, flip, colour, blur shared by all frames
  assert not (outs[0] == outs[1]).all() and not (outs[1] == outs[2]).all()
  jit = augment.augment_clip(static, tf.constant([3, 0], tf.int64), 16,
                             _aug(color_jitter_prob=1.0, per_frame_jitter=True)).numpy()
  assert not (jit == jit[:1]).all()  # per-frame jitter: frames differ


def test_every_augmentation_parameter_is_drawn_independently_per_view():
  """Two views of one clip: every continuous parameter (crop box, jitter strengths, blur sigma)
  differs, for several keys (all equal only if the views shared one draw)."""
  import tensorflow as tf

  from sora_jax.data import augment
  cfg = _aug(crop_scale=(0.3, 1.0), color_jitter=(0.4, 0.4, 0.4, 0.1))
  for seed in range(5):
    p = augment.draw_params(tf.constant([seed, 11], tf.int64), 2, 4, cfg)
    for name in ("box", "brightness", "contrast", "saturation", "hue", "sigma"):
      v = p[name].numpy()
      assert not np.allclose(v[0], v[1]), (seed, name, v)


def test_view_gap_distributions():
  import tensorflow as tf

  from sora_jax.data import clips
  gaps = {}
  for mode in ("uniform", "decreasing"):
    g = []
    for i in range(300):
      idx = clips.train_indices(40, 4, 2, 2, tf.constant([i, 9], tf.int64), view_gap=mode).numpy()
      assert idx.min() >= 0 and idx.max() <= 39 and (np.diff(idx, axis=1) == 2).all()
      g.append(abs(idx[1, 0] - idx[0, 0]))
    gaps[mode] = np.mean(g)
  assert gaps["decreasing"] < 0.85 * gaps["uniform"]  # uniform mean ~16.5, decreasing ~11
  short = clips.train_indices(3, 4, 2, 2, tf.constant([1, 2], tf.int64)).numpy()
  assert short.max() == 2  # a video shorter than the clip repeats its last frame
  ev = clips.eval_indices(40, 4, 2, 3).numpy()
  assert ev[0, 0] == 0 and ev[-1, -1] == 39
  key = tf.constant([0, 0], tf.int64)
  uni = clips.train_indices(40, 4, 2, 3, key, sampling="uniform").numpy()
  np.testing.assert_array_equal(uni, ev)
  cen = clips.train_indices(40, 4, 2, 2, key, sampling="centred").numpy()
  assert (cen == clips.eval_indices(40, 4, 2, 1).numpy()).all() and cen[0, 0] == (40 - 7) // 2


def test_views_of_different_strides_each_stay_inside_the_video_and_cover_all_starts():
  """data.view_strides: view v steps data.view_strides[v] frames; each view's start covers every start
  that keeps it inside the video, from the key alone; centred puts each at its own centre."""
  import tensorflow as tf

  from sora_jax.data import clips
  starts = ([], [])
  for i in range(200):
    idx = clips.train_indices(16, 8, 1, 2, tf.constant([i, 3], tf.int64), view_strides=(2, 1)).numpy()
    assert (np.diff(idx[0]) == 2).all() and (np.diff(idx[1]) == 1).all() and idx.max() <= 15
    starts[0].append(idx[0, 0])
    starts[1].append(idx[1, 0])
  assert set(starts[0]) == {0, 1} and set(starts[1]) == set(range(9))
  again = clips.train_indices(16, 8, 1, 2, tf.constant([7, 3], tf.int64), view_strides=(2, 1)).numpy()
  assert again[1, 0] == starts[1][7]
  cen = clips.train_indices(20, 4, 1, 2, tf.constant([0, 0], tf.int64), sampling="centred", view_strides=(3, 1)).numpy()
  np.testing.assert_array_equal(cen[0], clips.eval_indices(20, 4, 3, 1).numpy()[0])
  np.testing.assert_array_equal(cen[1], clips.eval_indices(20, 4, 1, 1).numpy()[0])


def test_clips_from_frames_match_eval(data_dir):
  from sora_jax.data import pipeline, synthetic, video_io
  c = small_config(data_dir)
  b = next(pipeline.eval_batches(c, "test", batch_size=4, num_clips=2, num_crops=3))
  for j in range(2):
    vid = int(b["video_id"][j])
    raw = synthetic.render("moving_shapes", "test", vid - 2_000_000)["video"]
    clips = video_io.clips_from_frames(raw, num_frames=4, stride=2, frame_size=16, num_clips=2, num_crops=3)
    np.testing.assert_array_equal(clips, b["video"][j])


def test_augmenting_a_batch_gives_each_example_what_augmenting_it_alone_gives():
  """The pipeline augments whole batches (cheaper per clip); every clip must come out as if its
  example had been augmented alone, bit for bit, with every op drawn by some clips and not others."""
  import tensorflow as tf
  from sora_jax.data import augment
  c = _default.get_config()
  c.data.augment.blur_prob, c.data.augment.solarize_prob, c.data.augment.per_frame_jitter = 0.5, 0.3, True
  cfg = augment.AugmentConfig.from_config(c)
  views, n = 2, 64  # the default batch's shapes
  video = tf.constant(np.random.default_rng(0).integers(0, 256, (n * views, 8, 32, 32, 3), np.uint8))
  draws = [augment.draw_params(tf.constant([3, i], tf.int64), views, 8, cfg) for i in range(n)]
  for d in draws:
    d.pop("box")
  together = {k: tf.concat([d[k] for d in draws], 0) for k in draws[0]}
  assert 0 < float(tf.reduce_mean(together["blur"])) < 1 and 0 < float(tf.reduce_mean(together["jitter"])) < 1
  batched = augment.apply_batch(video, together, cfg).numpy()
  alone = np.concatenate([augment.apply_batch(video[i * views:(i + 1) * views], draws[i], cfg).numpy()
                          for i in range(n)])
  np.testing.assert_array_equal(batched, alone)
  assert (batched != video.numpy()).mean() > 0.5  # it augmented


def test_a_built_in_split_served_from_memory_gives_the_same_batches_as_from_its_files(data_dir, monkeypatch):
  from sora_jax.data import pipeline, sources
  config = small_config(data_dir)
  from_memory = take(pipeline.TrainInput(config), 2)
  assert sources._DECODED, "the split was not decoded into memory"
  monkeypatch.setattr(sources, "DECODED_CACHE_BYTES", 0)  # too big for memory: PNGs decoded per example
  from_files = take(pipeline.TrainInput(config), 2)
  for a, b in zip(from_memory, from_files):
    for key in ("video", "label", "motion_label", "video_id"):
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("per_frame", [False, True])
def test_hue_shift_is_hsv_rotation_by_each_clips_or_frames_own_delta(per_frame):
  import tensorflow as tf

  from sora_jax.data import augment
  rng = np.random.default_rng(5)
  x = rng.random((3, 4, 6, 6, 3)).astype(np.float32)
  delta = rng.uniform(-0.5, 0.5, (3, 4) if per_frame else (3, 1)).astype(np.float32)
  hsv = tf.image.rgb_to_hsv(x).numpy()
  hsv[..., 0] = np.mod(hsv[..., 0] + delta[:, :, None, None], 1.0)
  want = tf.image.hsv_to_rgb(hsv).numpy()
  got = augment._adjust_hue(tf.constant(x), tf.constant(delta), per_frame).numpy()
  np.testing.assert_allclose(got, want, atol=2e-6)
  assert np.abs(got - x).max() > 0.1  # it did shift


@pytest.mark.parametrize("per_frame", [False, True])
def test_brightness_contrast_saturation_map_is_simclrs_three_steps(per_frame):
  """The one affine colour map equals brightness, then contrast about the clip's (frame's) mean
  luma, then saturation about each pixel's luma, computed step by step in numpy."""
  import tensorflow as tf

  from sora_jax.data import augment
  rng = np.random.default_rng(6)
  x = rng.random((3, 4, 5, 5, 3)).astype(np.float64)
  shape = (3, 4 if per_frame else 1)
  b, c, s = rng.uniform(-0.4, 0.4, shape), rng.uniform(0.2, 1.8, shape), rng.uniform(0.2, 1.8, shape)
  luma = np.array([0.299, 0.587, 0.114])
  y = x + b[:, :, None, None, None]
  m = (y @ luma).mean(axis=(2, 3), keepdims=True)[..., None]  # [n, T, 1, 1, 1]
  if not per_frame:
    m = m.mean(axis=1, keepdims=True)
  y = (y - m) * c[:, :, None, None, None] + m
  g = (y @ luma)[..., None]
  want = g + (y - g) * s[:, :, None, None, None]
  params = {"brightness": tf.constant(b, tf.float32), "contrast": tf.constant(c, tf.float32),
            "saturation": tf.constant(s, tf.float32)}
  got = augment._brightness_contrast_saturation(tf.constant(x, tf.float32), params, per_frame).numpy()
  np.testing.assert_allclose(got, want, atol=3e-6)
  assert np.abs(want - x).max() > 0.3  # it did change the colours


def test_the_pipelines_trace_their_map_functions_as_written(data_dir, monkeypatch):
  """AutoGraph does not rewrite the map functions (`data/traced.py`): a Python `if` on a tensor in
  what they call fails when the pipeline is built (AutoGraph would make it a tf.cond), in the train
  pipeline's per-example and per-batch maps and in the eval pipeline's."""
  import tensorflow as tf

  from sora_jax.data import augment, clips, pipeline

  def branching(fn):
    def wrapped(*args, **kwargs):
      if tf.reduce_sum(tf.zeros([1])) > 0:  # a tensor as a Python bool
        return fn(*args, **kwargs)
      return fn(*args, **kwargs)
    return wrapped

  config = small_config(data_dir)
  builds = [(augment, "crop_views", lambda: pipeline.TrainInput(config).dataset()),
            (augment, "apply_batch", lambda: pipeline.TrainInput(config).dataset()),
            (clips, "eval_crops", lambda: pipeline.eval_batches(config, "test", batch_size=4))]
  for module, name, build in builds:
    build()  # as it is: builds
    with monkeypatch.context() as m:
      m.setattr(module, name, branching(getattr(module, name)))
      with pytest.raises(tf.errors.OperatorNotAllowedInGraphError):
        build()
