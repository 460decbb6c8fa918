"""Fine-tuning protocol: a new head on the pretrained encoder, its own learning rate, end to end."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from test_eval_features import tiny_config


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
  params = {"encoder": {"frame_encoder": {"kernel": jnp.ones((3,))}, "classifier": {"kernel": jnp.ones((3,))}},
            "objective": {}}  # the train state's layout: fine-tuning runs on pretraining's step
  tx = optimizer(params, steps=10, learning_rate=1e-3, head_learning_rate=1e-1)
  grads = jax.tree.map(jnp.ones_like, params)
  updates = tx.update(grads, tx.init(params), params)[0]["encoder"]
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
  from sora_jax.config import derive
  from sora_jax.data import pipeline
  from sora_jax.models import build_encoder
  cfg = derive.classifier(c, info["num_classes"])
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


def test_finetune_and_embedding_run_on_the_configs_fsdp_mesh(data_dir):
  """mesh.fsdp=2 x data=4: the fine-tuning step and the embedding place the variables by the
  training's sharding rules (kernels really sharded) and give what data parallelism gives."""
  from sora_jax.data import pipeline
  from sora_jax.evaluation import features
  from sora_jax.evaluation.finetune import finetune
  from sora_jax.models import init_variables
  from sora_jax.parallel import mesh as mesh_lib
  results = {}
  for fsdp in (1, 2):
    c = tiny_config()
    c.data.data_dir = data_dir
    c.train.batch_size = 16
    c.mesh.data, c.mesh.fsdp, c.mesh.fsdp_min_size = 8 // fsdp, fsdp, 0
    info = pipeline.dataset_info(c)
    variables = init_variables(c, jax.random.PRNGKey(0))
    mesh = mesh_lib.inference_mesh(c)
    assert dict(mesh.shape) == {"data": 8 // fsdp, "fsdp": fsdp}
    placed = features.place_variables(c, variables, mesh)
    specs = [x.sharding.spec for x in jax.tree.leaves(placed) if x.ndim >= 2]
    assert all(("fsdp" in s) == (fsdp == 2) for s in specs), specs  # every kernel sharded under FSDP only
    batches = pipeline.eval_batches(c, "test", batch_size=16, num_clips=1, num_crops=1)
    rows = list(features.embed_batches(c, variables, batches, mesh=mesh))
    results[fsdp] = (np.concatenate([r["embedding"] for r in rows]),
                     finetune(c, variables, info, epochs=1, learning_rate=1e-3, progress=False, return_variables=True))
  np.testing.assert_allclose(results[2][0], results[1][0], atol=1e-5)
  tuned = [jax.tree.leaves(results[f][1]["variables"]["params"]) for f in (1, 2)]
  for a, b in zip(*tuned):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
