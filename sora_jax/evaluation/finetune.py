"""Fine-tuning: the pretrained encoder plus a new linear classifier, trained end to end with
supervised cross-entropy for config.eval.finetune_epochs epochs of the train split (one augmented
view per clip, the training input pipeline), then scored on the test split (clip-averaged
log-probabilities).

It runs on pretraining's machinery: the config's mesh and sharding rules, the same jitted and
donated step (`training.step.build_step`) with the `supervised` objective and its own
optimizer, fed by `training.feed.DeviceFeed`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from tqdm import tqdm

from sora_jax.config import derive
from sora_jax.data import pipeline
from sora_jax.evaluation import features
from sora_jax.models import init_variables
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel.inflight import wait_each_launch
from sora_jax.training.feed import DeviceFeed
from sora_jax.training.state import TrainState
from sora_jax.training.step import build_step


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
  def labels(tree):  # params = {'encoder': {..., 'classifier': ...}, 'objective': {}}
    return traverse_util.path_aware_map(lambda path, _: "head" if path[1:2] == ("classifier",) else "encoder", tree)

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
  cfg = derive.classifier(config, info["num_classes"])
  devices = mesh_lib.make_mesh(config).size  # the run's mesh (checks it fits the devices)
  cfg.train.batch_size = max(devices, cfg.train.batch_size // devices * devices)
  mesh = mesh_lib.make_mesh(cfg)
  fresh = init_variables(cfg, jax.random.PRNGKey(seed + 1))
  params = {"encoder": merge_params(jax.device_get(fresh["params"]), jax.device_get(variables["params"])),
            "objective": {}}
  others = {k: v for k, v in variables.items() if k != "params"}
  n_train = int(info["splits"].get(cfg.data.train_split, 0))
  steps = max(1, math.ceil(epochs * n_train / cfg.train.batch_size))
  head_learning_rate = 10 * learning_rate if head_learning_rate is None else head_learning_rate
  tx = optimizer(params, steps, learning_rate, head_learning_rate)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=others, opt_state=tx.init(params),
                     rng=jax.random.PRNGKey(seed + 2))
  state, train_acc = _tune(cfg, mesh, tx, state, steps, progress)
  # Replicated, so every process can read them (several processes: the arrays span hosts).
  tuned = jax.device_get(jax.jit(lambda t: t, out_shardings=mesh_lib.replicated(mesh))(state.inference_variables()))
  res = {"accuracy": _test_accuracy(cfg, tuned), "train_accuracy": train_acc, "steps": steps,
         "epochs": epochs, "learning_rate": learning_rate, "head_learning_rate": head_learning_rate}
  return {**res, "variables": tuned} if return_variables else res


def _tune(cfg, mesh, tx, state, steps: int, progress: bool):
  """`steps` of cross-entropy on the train split -> (tuned state, accuracy over the last 10 steps)."""
  built = build_step(cfg, mesh, tx=tx, abstract=jax.eval_shape(lambda: state))
  step_fn, state = built.step, jax.device_put(state, built.shardings)
  data = pipeline.TrainInput(cfg, process_index=jax.process_index(), process_count=jax.process_count())
  feed = DeviceFeed(data, mesh, cfg.data.device_prefetch, 0, steps, config=cfg)
  wait = wait_each_launch(mesh)
  accs = []
  try:
    for _ in tqdm(range(steps), desc="fine-tune", disable=not progress, leave=False):
      state, metrics = step_fn(state, feed.next())
      if wait:
        jax.block_until_ready(state)
      accs.append(metrics["supervised_accuracy"])
  finally:
    feed.close()
    data.close()
  return state, float(np.mean(jax.device_get(accs[-10:])))


def _test_accuracy(cfg, variables) -> float:
  """Accuracy of the classifier head on the eval split (clip-averaged log-probabilities); each
  process embeds its share, the rows are gathered."""
  correct = total = 0
  batches = pipeline.eval_batches(cfg, cfg.data.eval_split, batch_size=cfg.eval.batch_size,
                                  num_clips=cfg.eval.num_clips, num_crops=cfg.eval.num_crops,
                                  process_index=jax.process_index(), process_count=jax.process_count())
  for rows in features.embed_batches(cfg, variables, batches):
    known = rows["label"] >= 0
    correct += int((rows["logits"].argmax(-1)[known] == rows["label"][known]).sum())
    total += int(known.sum())
  return correct / max(total, 1)
