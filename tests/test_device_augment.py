"""data.augment.on=device: the step applies the colour draws the host made as the host would (to a pixel
level), each clip on its own, and a training run so fed gives the host-fed run's numbers."""

import json
import pathlib

import jax
import numpy as np
import pytest
from test_data import small_config, take
from test_training import tiny_config

from sora_jax.config import load_config
from sora_jax.data import augment, device_augment


def _draws(cfg, n, views, frames):
  import tensorflow as tf
  draws = [augment.draw_params(tf.constant([3, i], tf.int64), views, frames, cfg) for i in range(n)]
  for d in draws:
    d.pop("box")
  return draws


@pytest.mark.parametrize("per_frame", [False, True])
def test_the_device_applies_each_draw_as_the_host_does(per_frame):
  # every op drawn by some clips and not others, jitter per clip or per frame; 32 px frames (blur radius 2)
  import tensorflow as tf
  c = load_config("default")
  a = c.data.augment
  a.grayscale_prob, a.blur_prob, a.solarize_prob, a.per_frame_jitter = 0.3, 0.5, 0.3, per_frame
  cfg = augment.AugmentConfig.from_config(c)
  views, n, frames = 2, 16, 4
  video = np.random.default_rng(0).integers(0, 256, (n * views, frames, 32, 32, 3), np.uint8)
  draws = _draws(cfg, n, views, frames)
  together = {k: tf.concat([d[k] for d in draws], 0) for k in draws[0]}
  for name in ("jitter", "gray", "blur", "solarize"):
    assert 0 < float(tf.reduce_mean(together[name])) < 1, name
  host = augment.apply_batch(tf.constant(video), together, cfg).numpy().astype(int)
  packed = np.concatenate([augment.pack_params(d, views, frames).numpy() for d in draws])
  assert packed.shape == (n * views, frames, len(device_augment.PACKED))
  apply = jax.jit(lambda v, p: device_augment.apply(v, p, cfg))
  device = np.asarray(apply(video, packed)).astype(int)
  assert (host != video).mean() > 0.5  # it augmented
  diff = np.abs(host - device)
  assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (diff.max(), (diff > 0).mean())
  # per clip: a clip comes out the same whatever else is in the batch (any process count, any batch)
  alone = np.concatenate([apply(video[i * views:(i + 1) * views], packed[i * views:(i + 1) * views])
                          for i in range(n)])
  np.testing.assert_array_equal(alone, device)


def test_no_matmul_runs_on_the_accelerators():
  # a float32 matmul runs at TF32 on GPUs and in bfloat16 passes on TPUs by default: pixels would move by
  # several levels there and by none on this CPU, so the ops are multiply-adds (checked as lowered for each)
  cfg = augment.AugmentConfig.from_config(load_config("large"))
  video = jax.ShapeDtypeStruct((2, 2, 4, 32, 32, 3), np.uint8)
  draws = jax.ShapeDtypeStruct((2, 2, 4, 9), np.float32)
  for platform in ("cuda", "tpu"):
    exported = jax.export.export(jax.jit(lambda v, p: device_augment.apply(v, p, cfg)), platforms=(platform,))
    text = exported(video, draws).mlir_module()
    assert "stablehlo.add" in text and "dot_general" not in text and "convolution" not in text, platform


def test_the_pipeline_leaves_the_colour_to_the_step_and_sends_its_draws(data_dir):
  host = take(augment_pipeline(data_dir, "host"), 2)
  sent = take(augment_pipeline(data_dir, "device"), 2)
  cfg = augment.AugmentConfig.from_config(small_config(data_dir))
  for h, d in zip(host, sent):
    assert "augment" not in h and d["augment"].shape == (16, 2, 4, 9) and d["augment"].dtype == np.float32
    assert d["video"].dtype == np.uint8 and d["video"].shape == h["video"].shape
    np.testing.assert_array_equal(d["video_id"], h["video_id"])  # the same examples, crops and draws
    assert (d["video"] != h["video"]).mean() > 0.3  # not yet coloured
    applied = np.asarray(device_augment.apply(d["video"], d["augment"], cfg)).astype(int)
    assert np.abs(applied - h["video"]).max() <= 1


def augment_pipeline(data_dir, on):
  from sora_jax.data import pipeline
  c = small_config(data_dir)
  c.data.augment.on = on
  c.data.augment.grayscale_prob = 0.5
  return pipeline.TrainInput(c)


def test_training_with_the_colour_on_the_devices_gives_the_host_fed_numbers(data_dir, tmp_path):
  from sora_jax.training.loop import train
  losses = {}
  for on in ("host", "device"):
    c = tiny_config(data_dir)
    c.data.augment.on = on
    train(c, str(tmp_path / on))
    rows = [json.loads(line) for line in open(pathlib.Path(tmp_path / on) / "metrics.jsonl")]
    losses[on] = [r["loss"] for r in rows if "loss" in r]
  assert len(losses["host"]) == 4
  np.testing.assert_allclose(losses["device"], losses["host"], rtol=1e-4)


def test_every_op_drawn_draws_every_op():
  packed = device_augment.every_op_drawn((2, 3, 4))
  assert packed.shape == (2, 3, 4, 9)
  for name in ("jitter", "gray", "blur", "solarize"):
    assert (packed[..., device_augment.PACKED.index(name)] == 1).all()
