"""The pure train step and its one jit with explicit shardings over the mesh.

`train_step(state, batch) -> (state, metrics)`; batch = {'video': uint8 [B, V, T, H, W, 3],
'label': int32 [B]} as global arrays sharded over the batch axes. The V views are folded into the
batch ([B*V, T, H, W, 3], video-major so each device keeps its own rows) and encoded in one call;
outputs are unfolded to V dicts of [B, ...] for the objective, which sees the global batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from sora_jax import objectives
from sora_jax.models import kernels
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.training.optim import learning_rate_schedule
from sora_jax.training.state import TrainState



def _loss_fn(config, model, params, model_state, batch, key):
  video = batch["video"]
  b, v = video.shape[:2]
  flat = video.reshape((b * v,) + video.shape[2:])
  variables = {"params": params["encoder"], **model_state}
  rngs = {"dropout": key}
  if model_state:
    out, new_state = model.apply(variables, flat, train=True, rngs=rngs, mutable=list(model_state))
  else:
    out, new_state = model.apply(variables, flat, train=True, rngs=rngs), model_state
  views = [jax.tree_util.tree_map(lambda x, i=i: x.reshape((b, v) + x.shape[1:])[:, i], out) for i in range(v)]
  loss, metrics = objectives.compute_loss(config, views, batch, params["objective"], key)
  return loss, (metrics, new_state)


def make_train_step(config, model, tx: optax.GradientTransformation) -> Callable:
  """Pure step; with train.grad_accum_steps = k > 1 the batch is split in k micro-batches
  (row i goes to micro-batch i % k, so no row changes device) and their gradients averaged."""
  accum = config.train.grad_accum_steps
  schedule = learning_rate_schedule(config)
  grad_fn = jax.value_and_grad(lambda *a: _loss_fn(config, model, *a), has_aux=True)

  def train_step(state: TrainState, batch):
    key = jax.random.fold_in(state.rng, state.step)
    if accum == 1:
      (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, key)
    else:
      micro = jax.tree_util.tree_map(
          lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1), batch)

      def body(carry, inputs):
        grads_sum, loss_sum, ms = carry
        i, mb = inputs
        (l, (m, ms)), g = grad_fn(state.params, ms, mb, jax.random.fold_in(key, i))
        return (jax.tree_util.tree_map(jnp.add, grads_sum, g), loss_sum + l, ms), m

      zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
      (grads, loss, model_state), ms = jax.lax.scan(
          body, (zeros, jnp.zeros((), jnp.float32), state.model_state), (jnp.arange(accum), micro))
      grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
      loss = loss / accum
      metrics = jax.tree_util.tree_map(lambda m: m.mean(), ms)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step),
                   finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state)
    return new_state, metrics

  return train_step


def device_batch(batch: dict, config) -> dict:
  """The host batch's entries that the step reads (`objectives.batch_keys`)."""
  return {k: batch[k] for k in objectives.batch_keys(config)}


def jit_train_step(config, model, tx, abstract_state, mesh):
  """jit once: state sharded by the rules in parallel.mesh (donated), batch over the batch axes,
  metrics replicated. Returns (jitted_step, state_shardings)."""
  state_shardings = mesh_lib.tree_shardings(abstract_state, mesh, config.mesh.fsdp_min_size)
  batch_shardings = {k: mesh_lib.batch_sharding(mesh) for k in objectives.batch_keys(config)}
  step = jax.jit(make_train_step(config, model, tx), in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, mesh_lib.replicated(mesh)), donate_argnums=0,
                 compiler_options=kernels.compiler_options(mesh_lib.platform(mesh)))
  return step, state_shardings
