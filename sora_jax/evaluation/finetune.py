"""Fine-tuning: the pretrained encoder plus a new linear classifier, trained end to end with
supervised cross-entropy for config.eval.finetune_epochs epochs of the train split (one augmented
view per clip, the training input pipeline), then scored on the test split (clip-averaged
log-probabilities).
"""

from __future__ import annotations

import copy
import math

import jax
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from sora_jax.data import pipeline
from sora_jax.evaluation import embed
from sora_jax.models import encoder, init_variables
from sora_jax.objectives.supervised import supervised
from sora_jax.parallel import inflight


def classifier_config(config, num_classes: int):
  """The run's config with a classifier head of num_classes and one view per example."""
  cfg = copy.deepcopy(config)
  cfg.model.num_classes = int(num_classes)
  cfg.data.num_views = 1
  return cfg


def merge_params(target, source):
  """Every leaf of `target` that `source` has with the same shape is taken from `source` (the rest, e.g. a new head, stays)."""
  flat_t = traverse_util.flatten_dict(target)
  flat_s = traverse_util.flatten_dict(source)
  merged = {k: (flat_s[k] if k in flat_s and np.shape(flat_s[k]) == np.shape(v) else v) for k, v in flat_t.items()}
  return traverse_util.unflatten_dict(merged)


def optimizer(params, steps: int, learning_rate: float, head_learning_rate: float):
  """AdamW with a cosine schedule; the new classifier head gets its own (larger) rate: at the
  encoder's rate it barely moves in an epoch or two, and its random logits push the pretrained
  features around instead (1 epoch on moving_shapes: 63.5% at one rate, 67.8% with the head at 10x)."""
  def labels(tree):
    return traverse_util.path_aware_map(lambda path, _: "head" if path[0] == "classifier" else "encoder", tree)

  def adamw(lr):
    return optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=1e-4)

  return optax.multi_transform({"encoder": adamw(learning_rate), "head": adamw(head_learning_rate)}, labels(params))


def finetune(config, variables, info: dict, *, epochs: int, learning_rate: float = 1e-3,
             head_learning_rate: float | None = None, progress: bool = True, seed: int | None = None,
             return_variables: bool = False) -> dict:
  """-> {"accuracy" (test), "train_accuracy" (last steps), "steps", "epochs", "learning_rate",
  "head_learning_rate"} (+ "variables", the tuned ones, if return_variables). head_learning_rate
  defaults to 10x learning_rate."""
  seed = config.seed if seed is None else seed
  cfg = classifier_config(config, info["num_classes"])
  mesh = embed.data_mesh()
  fresh = init_variables(cfg, jax.random.PRNGKey(seed + 1))
  params = merge_params(jax.device_get(fresh["params"]), jax.device_get(variables["params"]))
  others = {k: v for k, v in variables.items() if k != "params"}
  n_train = int(info["splits"].get(cfg.data.train_split, 0))
  batch_size = max(mesh.size, cfg.train.batch_size // mesh.size * mesh.size)
  steps = max(1, math.ceil(epochs * n_train / batch_size))
  head_learning_rate = 10 * learning_rate if head_learning_rate is None else head_learning_rate
  tx = optimizer(params, steps, learning_rate, head_learning_rate)
  cfg.train.batch_size = batch_size
  params, train_acc = _tune(cfg, mesh, tx, params, others, steps, progress)
  tuned = {"params": params, **others}
  res = {"accuracy": _test_accuracy(cfg, tuned, mesh), "train_accuracy": train_acc, "steps": steps,
         "epochs": epochs, "learning_rate": learning_rate, "head_learning_rate": head_learning_rate}
  return {**res, "variables": jax.device_get(tuned)} if return_variables else res


def _tune(cfg, mesh, tx, params, others, steps: int, progress: bool):
  """`steps` of cross-entropy on the train split -> (tuned params, accuracy over the last 10 steps)."""
  model = encoder(cfg)
  rep, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def loss_fn(p, video, label):
    out = model.apply({"params": p, **others}, video, train=False)
    return supervised(out["logits"], label)

  @jax.jit
  def step(p, opt, video, label):
    (loss, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(p, video, label)
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt, loss, metrics["supervised_accuracy"]

  data = pipeline.TrainInput(cfg)
  params = jax.device_put(params, rep)
  opt = jax.device_put(tx.init(params), rep)
  accs = []
  wait = inflight.wait_each_launch(mesh)
  for _ in tqdm(range(steps), desc="fine-tune", disable=not progress, leave=False):
    batch = next(data)
    video = jax.device_put(np.asarray(batch["video"])[:, 0], shard)
    label = jax.device_put(np.asarray(batch["label"], np.int32), shard)
    params, opt, loss, acc = step(params, opt, video, label)
    if wait:
      jax.block_until_ready(params)
    accs.append(acc)
  return params, float(np.mean(jax.device_get(accs[-10:])))


def _test_accuracy(cfg, variables, mesh) -> float:
  """Accuracy of the classifier head on the eval split (clip-averaged log-probabilities)."""
  correct = total = 0
  batches = pipeline.eval_batches(cfg, cfg.data.eval_split, batch_size=cfg.eval.batch_size,
                                  num_clips=cfg.eval.num_clips, num_crops=cfg.eval.num_crops)
  for rows in embed.embed_batches(cfg, variables, batches, mesh=mesh):
    known = rows["label"] >= 0
    correct += int((rows["logits"].argmax(-1)[known] == rows["label"][known]).sum())
    total += int(known.sum())
  return correct / max(total, 1)
