"""The train state: everything a step reads and writes, one pytree (checkpointed as is)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from sora_jax import objectives
from sora_jax.config import terms
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder_unchecked, efficientnet
from sora_jax.models.video_encoder import default_batch_shape
from sora_jax.training import ema, encoder_run


@flax.struct.dataclass
class TrainState:
  """step int32 []; params {'encoder': model params, 'objective': e.g. log_temperature};
  model_state: the model's other variable collections (e.g. batch_stats), usually {};
  opt_state: optax state of params; rng: uint32 [2] root key (per-step keys by fold_in(step));
  ema_params: the momentum teacher's encoder parameters (training.ema) when a term trains against
  it (moco, byol), else None (no leaves: checkpoints of other runs are unchanged)."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None

  def inference_variables(self) -> dict:
    """The encoder's variables: `build_encoder(config).apply(variables, video)`."""
    return {"params": self.params["encoder"], **self.model_state}


def pretrained_weights(config) -> dict:
  """Weights parts of the state start from, as numpy, loaded here outside any jit (pass them to
  `init_state` as an argument): {'objective': objectives.pretrained(config) (the text tower),
  'encoder': {'frame_encoder': ImageNet weights} with model.pretrained; with the generate term the
  whole encoder of generate.encoder_workdir, its 'model_state' and its run's objective parameters}."""
  if "generate" in terms(config.objective.name):
    variables, objective = encoder_run.load(config)
    return {"objective": objective, "encoder": variables.pop("params"), "model_state": variables}
  return {"objective": objectives.pretrained(config), "encoder": efficientnet.pretrained_params(config.model)}


def init_state(config, tx: optax.GradientTransformation, pretrained: dict | None = None) -> TrainState:
  """Pure: the initial state from config.seed (wrap in jit / eval_shape); `pretrained`:
  `pretrained_weights(config)`, passed as an argument of the jitted function."""
  pretrained = pretrained or {}
  root = jax.random.PRNGKey(config.seed)
  init_key, train_key = jax.random.split(root)
  dummy = jnp.zeros(default_batch_shape(config), jnp.uint8)
  variables = dict(build_encoder_unchecked(config).init(init_key, dummy, train=False))
  encoder = dict(variables.pop("params"))
  for name, tree in (pretrained.get("encoder") or {}).items():
    if jax.tree_util.tree_map(jnp.shape, tree) != jax.tree_util.tree_map(jnp.shape, encoder[name]):
      raise ConfigError(f"the pretrained weights of {name} do not fit this model's {name} (config.model changed?)")
    encoder[name] = tree
  variables.update(pretrained.get("model_state") or {})
  params = {"encoder": encoder,
            "objective": objectives.init_params(config, jax.random.fold_in(init_key, 1), pretrained.get("objective"))}
  ema_params = jax.tree_util.tree_map(jnp.copy, params["encoder"]) if ema.uses_teacher(config) else None
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                    opt_state=tx.init(params), rng=train_key, ema_params=ema_params)
