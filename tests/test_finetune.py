"""Fine-tuning protocol: a new head on the pretrained encoder, its own learning rate, end to end."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from test_eval_embed import tiny_config


def test_merge_keeps_the_new_head_and_takes_the_pretrained_encoder():
  from sora_jax.evaluation.finetune import merge_params
  fresh = {"encoder": {"w": np.zeros((2, 3))}, "projection": {"w": np.zeros(4)}, "classifier": {"w": np.zeros((3, 5))}}
  pretrained = {"encoder": {"w": np.ones((2, 3))}, "projection": {"w": np.ones(7)}}  # other shape: not taken
  merged = merge_params(fresh, pretrained)
  np.testing.assert_array_equal(merged["encoder"]["w"], 1.0)
  np.testing.assert_array_equal(merged["projection"]["w"], 0.0)
  np.testing.assert_array_equal(merged["classifier"]["w"], 0.0)


def test_the_new_head_has_its_own_learning_rate():
  from sora_jax.evaluation.finetune import optimizer
  params = {"frame_encoder": {"kernel": jnp.ones((3,))}, "classifier": {"kernel": jnp.ones((3,))}}
  tx = optimizer(params, steps=10, learning_rate=1e-3, head_learning_rate=1e-1)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  enc, head = float(jnp.abs(updates["frame_encoder"]["kernel"]).mean()), float(jnp.abs(updates["classifier"]["kernel"]).mean())
  assert 50 < head / enc < 150  # Adam's first step is about lr * sign(g) (+ weight decay)


def test_finetune_trains_the_encoder_end_to_end(data_dir):
  from sora_jax.data import pipeline
  from sora_jax.evaluation.finetune import finetune
  from sora_jax.models import init_variables
  c = tiny_config()
  c.data.data_dir = data_dir
  c.train.batch_size = 16
  info = pipeline.dataset_info(c)
  variables = init_variables(c, jax.random.PRNGKey(0))
  res = finetune(c, variables, info, epochs=1, learning_rate=1e-3, progress=False, return_variables=True)
  assert res["steps"] == math.ceil(info["splits"]["train"] / 16) and res["head_learning_rate"] == 1e-2
  assert 0.0 <= res["train_accuracy"] <= 1.0
  assert res["accuracy"] == _head_accuracy(c, info, res["variables"])  # the test figure is the tuned head's
  before, after = variables["params"], res["variables"]["params"]
  assert set(after) == set(before) | {"classifier"}  # a new head on the same encoder
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), before["frame_encoder"],
                       after["frame_encoder"])
  assert min(jax.tree.leaves(moved)) > 0  # the encoder is tuned too, not only the head
  assert res == {**finetune(c, variables, info, epochs=1, learning_rate=1e-3, progress=False, return_variables=True),
                 "variables": res["variables"]}  # seeded: the same figures again


def _head_accuracy(c, info, variables) -> float:
  """The tuned classifier on every test clip, written out: clip-averaged log-probabilities, argmax."""
  from sora_jax.data import pipeline
  from sora_jax.evaluation.finetune import classifier_config
  from sora_jax.models import build_encoder
  cfg = classifier_config(c, info["num_classes"])
  apply = jax.jit(lambda v, x: jax.nn.log_softmax(build_encoder(cfg).apply(v, x)["logits"]))
  correct = total = 0
  for batch in pipeline.eval_batches(cfg, cfg.data.eval_split, batch_size=8, num_clips=cfg.eval.num_clips,
                                     num_crops=cfg.eval.num_crops):
    video, labels, mask = np.asarray(batch["video"]), np.asarray(batch["label"]), np.asarray(batch["mask"], bool)
    logp = np.asarray(apply(variables, video.reshape((-1,) + video.shape[2:]))).reshape(len(video), video.shape[1], -1)
    keep = mask & (labels >= 0)
    correct += int((logp.mean(axis=1).argmax(-1)[keep] == labels[keep]).sum())
    total += int(keep.sum())
  return correct / total
