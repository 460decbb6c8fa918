"""The pure train step and its one jit with explicit shardings over the mesh.

`train_step(state, batch) -> (state, metrics)`; batch = {'video': uint8 [B, V, T, H, W, 3],
'label': int32 [B]} as global arrays sharded over the batch axes (with data.augment.on='device' also
'augment' float32 [B, V, T, 9], the colour draws `data.device_augment` applies to the clips before
anything reads them). The view axis keeps one layout,
[B, V, ...], from the pipeline to the objectives: it is folded into the batch only for the encoder's
one call ([B*V, T, H, W, 3], video-major so each device keeps its own rows) and its outputs come
back as [B, V, ...], which the objective reads over the global batch. With a
teacher term the EMA teacher (state.ema_params) encodes the same views without gradient, and is
moved toward the updated encoder after the optimizer step (training.ema). With the generate term the
encoder is frozen (an encoder run's weights, inference mode, no gradient) and conditions the generator,
whose parameters are the objective's (params['objective']['generator']); their moving average
(generate.ema_decay) is updated after the optimizer step (training.ema.average_generator).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sora_jax import objectives
from sora_jax.config import terms
from sora_jax.data import device_augment
from sora_jax.models import build_encoder_unchecked, kernels
from sora_jax.objectives.latent import draw_mask
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.training import ema
from sora_jax.training.optim import build_optimizer, learning_rate_schedule
from sora_jax.training.state import TrainState, init_state, pretrained_weights


def _apply(model, encoder_params, model_state, flat, key, time_mask=None, boxes=None, train=True):
  """-> (outputs, model_state after the step) of the encoder (in training mode unless `train` is False)."""
  variables = {"params": encoder_params, **model_state}
  kwargs = dict(train=train, time_mask=time_mask, boxes=boxes, rngs={"dropout": key})
  if model_state:
    return model.apply(variables, flat, mutable=list(model_state), **kwargs)
  return model.apply(variables, flat, **kwargs), model_state


def _encode(config, model, encoder_params, model_state, batch, key, ema_params=None):
  """-> (the encoder's outputs [B, V, ...] (plus the teacher's `teacher` embedding and, with
  latent_mask, `teacher_sequence` and the `time_mask` drawn from `key`), model_state after the step)."""
  video = batch["video"]
  b, v = video.shape[:2]
  flat = video.reshape((b * v,) + video.shape[2:])
  boxes = batch.get("boxes")  # actor tracks [B, V, A, T, 4] for model.actors
  boxes = None if boxes is None else boxes.reshape((b * v,) + boxes.shape[2:])
  mask, names = None, terms(config.objective.name)
  if "generate" in names:  # the generator's condition: the frozen encoder in inference mode, no gradient
    out, _ = _apply(model, jax.lax.stop_gradient(encoder_params), model_state, flat, key, train=False)
    out = jax.tree_util.tree_map(jax.lax.stop_gradient, out)
    return jax.tree_util.tree_map(lambda x: x.reshape((b, v) + x.shape[1:]), out), model_state
  if "latent_mask" in names:
    o = config.objective
    mask = draw_mask(jax.random.fold_in(key, 2), b * v, video.shape[2], o.mask_ratio, o.mask_blocks)
  if mask is not None and len(names) > 1 and not config.objective.mask_every_term:
    # The other terms see the whole clips; a second online pass sees the masked ones and predicts.
    out, new_state = _apply(model, encoder_params, model_state, flat, key, boxes=boxes)
    masked, _ = _apply(model, encoder_params, model_state, flat, key, mask)
    out = dict(out, latent_predictions=masked["latent_predictions"])
  else:
    out, new_state = _apply(model, encoder_params, model_state, flat, key, mask, boxes)
  if mask is not None:
    out = dict(out, time_mask=mask.astype(jnp.float32))
  if ema_params is not None:  # the momentum teacher on the whole views: no gradient, its state changes dropped
    teacher, _ = _apply(model, jax.lax.stop_gradient(ema_params), model_state, flat, jax.random.fold_in(key, 1))
    out = dict(out, teacher=jax.lax.stop_gradient(teacher["embedding"]))
    if mask is not None:
      out["teacher_sequence"] = jax.lax.stop_gradient(teacher["sequence"])
  return jax.tree_util.tree_map(lambda x: x.reshape((b, v) + x.shape[1:]), out), new_state


def _loss_fn(config, model, params, model_state, batch, key, ema_params=None):
  outputs, new_state = _encode(config, model, params["encoder"], model_state, batch, key, ema_params)
  loss, metrics = objectives.compute_loss(config, outputs, batch, params["objective"], key)
  return loss, (metrics, new_state)


def _split(x, accum: int):
  """[B, ...] -> [accum, B / accum, ...]: row r goes to micro-batch r % accum (no row changes device)."""
  return jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1)


def _unsplit(x):
  """The inverse of `_split`: [accum, B / accum, ...] -> [B, ...] in the batch's own order."""
  return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _grad_cache(config, model, state: TrainState, batch, key, accum: int):
  """Gradient accumulation whose loss sees the whole batch (GradCache, Gao et al. 2021): every
  micro-batch is encoded without gradients, the loss and its gradient with respect to the outputs
  are computed over the full batch (all negatives), then each micro-batch's forward is redone and
  backpropagated with its slice of that gradient. Same loss and gradients as one big batch, at the
  activation memory of one micro-batch plus the outputs of all (a second forward per micro-batch).
  -> (loss, metrics, model_state, grads)."""
  micro = jax.tree_util.tree_map(lambda x: _split(x, accum), batch)
  steps = jnp.arange(accum)
  encoder = state.params["encoder"]

  def forward(ms, inputs):
    i, mb = inputs
    outputs, ms = _encode(config, model, encoder, ms, mb, jax.random.fold_in(key, i), state.ema_params)
    return ms, outputs

  model_state, outputs = jax.lax.scan(forward, state.model_state, (steps, micro))
  outputs = jax.tree_util.tree_map(_unsplit, outputs)
  (loss, metrics), (d_outputs, d_objective) = jax.value_and_grad(
      lambda o, p: objectives.compute_loss(config, o, batch, p, key), argnums=(0, 1), has_aux=True)(
          outputs, state.params["objective"])
  d_micro = jax.tree_util.tree_map(lambda x: _split(x, accum), d_outputs)

  def backward(grads_sum, inputs):
    i, mb, d = inputs
    online = lambda p: _encode(config, model, p, state.model_state, mb, jax.random.fold_in(key, i))[0]
    _, vjp = jax.vjp(online, encoder)
    d = {k: g for k, g in d.items() if not k.startswith("teacher")}  # the teacher takes none
    return jax.tree_util.tree_map(jnp.add, grads_sum, vjp(d)[0]), None

  grads, _ = jax.lax.scan(backward, jax.tree_util.tree_map(jnp.zeros_like, encoder), (steps, micro, d_micro))
  return loss, metrics, model_state, {"encoder": grads, "objective": d_objective}


def make_train_step(config, model, tx: optax.GradientTransformation) -> Callable:
  """Pure step; with train.grad_accum_steps = k > 1 the batch is split in k micro-batches (row i
  goes to micro-batch i % k) and the gradient accumulated with `_grad_cache`, so contrastive terms
  still see the whole global batch."""
  accum = config.train.grad_accum_steps
  schedule = learning_rate_schedule(config)
  grad_fn = jax.value_and_grad(lambda *a: _loss_fn(config, model, *a), has_aux=True)
  augment = device_augment.AugmentConfig.from_config(config) if config.data.augment.on == "device" else None

  def train_step(state: TrainState, batch):
    if augment is not None:  # the colour augmentations the host left to the devices (data.augment.on)
      batch = dict(batch, video=device_augment.apply(batch["video"], batch["augment"], augment))
    key = jax.random.fold_in(state.rng, state.step)
    if accum == 1:
      (loss, (metrics, model_state)), grads = grad_fn(state.params, state.model_state, batch, key, state.ema_params)
    else:
      loss, metrics, model_state, grads = _grad_cache(config, model, state, batch, key, accum)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if objectives.GENERATOR_EMA in params["objective"]:
      params = ema.average_generator(config, params, state.step)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, learning_rate=schedule(state.step),
                   finite=jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    ema_params = state.ema_params
    if ema_params is not None:
      momentum = ema.momentum(config, state.step)
      ema_params = ema.update(ema_params, params["encoder"], momentum)
      metrics["ema_momentum"] = momentum
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state,
                              ema_params=ema_params)
    return new_state, metrics

  return train_step


def abstract_batch(config, batch_size: int) -> dict:
  """Shapes of a train batch of `batch_size` clips (jax.ShapeDtypeStruct): video and label, and the colour
  draws with data.augment.on='device' (for compiling, memory and FLOP counts; nothing is allocated)."""
  d = config.data
  batch = {"video": jax.ShapeDtypeStruct((batch_size, d.num_views, d.num_frames, d.frame_size, d.frame_size, 3),
                                         jnp.uint8),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  if d.augment.on == "device":
    batch["augment"] = jax.ShapeDtypeStruct((batch_size, d.num_views, d.num_frames, len(device_augment.PACKED)),
                                            jnp.float32)
  return batch


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


@dataclasses.dataclass(frozen=True)
class BuiltStep:
  """Everything a config's training step is made of, built once by `build_step`."""
  config: Any
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  pretrained: dict  # `pretrained_weights(config)`: an argument of init, never a constant in it
  abstract: TrainState  # the state's shapes and dtypes
  step: Callable  # jitted (state, batch) -> (state, metrics); the state is donated
  shardings: TrainState  # of the state, by the rules in parallel.mesh

  def init(self) -> TrainState:
    """The initial state (config.seed, the pretrained weights), placed by `shardings`. It runs once:
    compiled without LLVM optimisation (a fraction of the compile time; deterministic, and within
    float rounding of an optimised compile's values: 6e-8 apart on some kernels of the moco test's
    model), the same init for every caller."""
    init = jax.jit(lambda p: init_state(self.config, self.tx, p), out_shardings=self.shardings)
    return init.lower(self.pretrained).compile(compiler_options={"xla_backend_optimization_level": 0})(self.pretrained)


def build_step(config, mesh=None, *, tx=None, abstract=None) -> BuiltStep:
  """The one way to build the train step (the loop, fine-tuning, the memory report, the benches):
  mesh (default `make_mesh(config)`) -> optimizer (default `build_optimizer(config)`) -> the
  abstract state (default: `init_state`'s, with the pretrained weights; given, `init` is not for
  it) -> `jit_train_step`."""
  mesh = mesh or mesh_lib.make_mesh(config)  # ConfigError here, before anything compiles
  tx = tx or build_optimizer(config)
  pretrained = pretrained_weights(config) if abstract is None else {}  # (a given state is the caller's)
  if abstract is None:
    abstract = jax.eval_shape(lambda p: init_state(config, tx, p), pretrained)
  step, shardings = jit_train_step(config, build_encoder_unchecked(config), tx, abstract, mesh)
  return BuiltStep(config, mesh, tx, pretrained, abstract, step, shardings)
