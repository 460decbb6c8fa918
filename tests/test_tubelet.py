"""model.frame_encoder=tubelet: tubelets where they belong, attention across time, parameters free of T,
remat/scan that change no number, the backwards clip encoded again, its config rules, and the pod config's
sharding and attention kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder, init_variables
from sora_jax.models.kernels import attention_implementation
from sora_jax.models.temporal import sinusoidal
from sora_jax.models.tubelet import TubeletViT
from sora_jax.models.vit import VIT_SIZES
from sora_jax.parallel import mesh as mesh_lib

TINY = ["model.frame_encoder=tubelet", "model.vit_size=Ti", "model.vit_depth=2", "model.vit_patch=8",
        "data.num_frames=4", "data.frame_size=32"]


def test_no_blocks_is_each_tubelets_mean_of_its_normalised_embeddings():
  # depth 0 leaves the embedding, the positions and the final LayerNorm: written out here in numpy, with the
  # tubelet's pixels in (frame, row, column, channel) order; each of its frames gets the same vector
  enc = TubeletViT(width=8, depth=0, num_heads=2, patch=2, frames=2)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 6, 3))
  params = enc.init(jax.random.key(1), x)
  p = jax.tree.map(np.asarray, params["params"])
  p["pos_embed"] = np.random.default_rng(0).normal(size=p["pos_embed"].shape).astype(np.float32)
  y = np.asarray(enc.apply({"params": p}, x))
  assert y.shape == (2, 4, 8)
  xs = np.asarray(x)
  want = np.zeros((2, 2, 8), np.float32)
  for b in range(2):
    for t in range(2):
      tokens = []
      for i in range(2):
        for j in range(3):
          tube = xs[b, 2 * t:2 * t + 2, 2 * i:2 * i + 2, 2 * j:2 * j + 2, :].reshape(-1)
          tokens.append(tube @ p["patch_embed"]["kernel"] + p["patch_embed"]["bias"] + p["pos_embed"][i * 3 + j]
                        + sinusoidal(2, 8)[t])
      tokens = np.stack(tokens)
      z = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-6)
      want[b, t] = (z * p["transformer"]["ln_final"]["scale"] + p["transformer"]["ln_final"]["bias"]).mean(0)
  np.testing.assert_allclose(y, np.repeat(want, 2, axis=1), rtol=1e-4, atol=1e-5)


def test_attention_reaches_across_time_and_time_positions_tell_tubelets_apart():
  enc = TubeletViT(width=16, depth=1, num_heads=2, patch=4, frames=2)
  x = jax.random.normal(jax.random.key(0), (1, 6, 8, 8, 3))
  params = enc.init(jax.random.key(1), x)
  y = enc.apply(params, x)
  changed = np.abs(np.asarray(enc.apply(params, x.at[:, 5].add(1.0)) - y)).max(axis=(0, 2))
  assert (changed > 1e-4).all(), changed  # the last frame moved every frame's vector, not only its tubelet's
  still = enc.apply(params, jnp.broadcast_to(x[:, :1], x.shape))  # one frame, held: tubelets alike but for time
  assert float(jnp.abs(still[:, 0] - still[:, 2]).max()) > 1e-3
  # fixed time positions: the same parameters take a clip of another length
  longer = jnp.concatenate([x, x], axis=1)
  assert jax.tree.map(jnp.shape, enc.init(jax.random.key(1), longer)) == jax.tree.map(jnp.shape, params)
  assert enc.apply(params, longer).shape == (1, 12, 16)
  with pytest.raises(ValueError, match="do not split into tubelets of 2 frames"):
    enc.apply(params, x[:, :5])
  with pytest.raises(ValueError, match="pools each tubelet by its mean"):  # the ViT's other pools do not apply
    TubeletViT(width=16, depth=1, num_heads=2, patch=4, frames=2, pool="cls").init(jax.random.key(1), x)


def test_video_encoder_with_tubelets_remat_and_scan_give_the_same_numbers():
  config = validate(load_config("infonce", TINY))
  variables = init_variables(config, jax.random.key(0))
  enc = variables["params"]["frame_encoder"]
  # 2 frames x 8 x 8 px x 6 channels (rgb+diff) per tubelet, 16 positions in the frame
  assert enc["patch_embed"]["kernel"].shape == (2 * 8 * 8 * 6, VIT_SIZES["Ti"][0])
  assert enc["pos_embed"].shape == (16, VIT_SIZES["Ti"][0])
  video = jax.random.randint(jax.random.key(1), (2, 4, 32, 32, 3), 0, 256).astype(jnp.uint8)

  def loss_and_grads(cfg, params):
    model = build_encoder(cfg)
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(model.apply({"params": p}, video)["embedding"] ** 3)))(params)

  loss, grads = loss_and_grads(config, variables["params"])
  assert float(jnp.abs(grads["frame_encoder"]["pos_embed"]).max()) > 0
  remat = load_config("infonce", TINY + ["model.remat_frames=block", "model.remat_policy=dots"])
  loss_r, grads_r = loss_and_grads(remat, variables["params"])
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  scan = load_config("infonce", TINY + ["model.scan_layers=True", "model.temporal=lstm"])
  params = jax.tree.map(lambda a: a, variables["params"])
  blocks = params["frame_encoder"]["transformer"]
  params["frame_encoder"]["transformer"]["layers"] = jax.tree.map(lambda *a: jnp.stack(a), blocks.pop("layer0"),
                                                                  blocks.pop("layer1"))
  np.testing.assert_allclose(loss_and_grads(scan, params)[0], loss, rtol=1e-5)


def test_the_backwards_clip_is_encoded_again():
  # per-frame encoders reverse their features; a tubelet's features depend on the order of its frames (and
  # every other frame), so time_reversal must run the encoder on the reversed clip
  config = validate(load_config("infonce", TINY + ["model.frame_input=rgb", "model.time_reversal=True",
                                                   "model.temporal=none"]))
  model = build_encoder(config)
  variables = init_variables(config, jax.random.key(0))
  video = jax.random.randint(jax.random.key(1), (2, 4, 32, 32, 3), 0, 256).astype(jnp.uint8)
  out = model.apply(variables, video, train=True)
  backwards = model.apply(variables, video[:, ::-1], train=True)["embedding"]
  np.testing.assert_allclose(out["reversed_embedding"], backwards, atol=1e-5)
  assert float(jnp.abs(out["reversed_embedding"] - out["embedding"]).max()) > 1e-3


@pytest.mark.parametrize("overrides,match", [
    (["data.num_frames=5"], "num_frames=5 does not split into .*tubelet_frames=2 .*num_frames=4"),
    (["model.frame_pool=flatten"], "needs model.frame_pool='mean'"),
    (["model.remat_frames=time"], "remat_frames 'none' or 'block'"),
    (["objective.name=infonce+appearance"], "attends across the whole clip"),
    (["objective.name=predictive", "model.predict_steps=1", "model.temporal=lstm", "model.causal=True"],
     "attends across the whole clip"),
])
def test_config_rules(overrides, match):
  with pytest.raises(ConfigError, match=match):
    validate(load_config("infonce", TINY + overrides))


def test_large_tubelet_shards_every_array_and_takes_cudnn_attention_on_gpus():
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  from sora_jax.training.step import abstract_batch, make_train_step
  config = validate(load_config("large_tubelet"))
  m = config.model
  width, _, heads = VIT_SIZES[m.vit_size]
  tokens = config.data.num_frames // m.tubelet_frames * (config.data.frame_size // m.vit_patch) ** 2
  assert tokens == 1568 and attention_implementation(jnp.bfloat16, width // heads, tokens, backend="gpu") == "cudnn"
  config.mesh.data, config.mesh.fsdp = 4, 2
  tx = build_optimizer(config)
  state = jax.eval_shape(lambda: init_state(config, tx))
  specs = mesh_lib.tree_shardings(state, mesh_lib.make_mesh(config), 0)
  enc = specs.params["encoder"]["frame_encoder"]
  P = jax.sharding.PartitionSpec
  assert enc["pos_embed"].spec == P(None, "fsdp")
  assert enc["transformer"]["layers"]["mlp_in"]["kernel"].spec == P(None, None, "fsdp")
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
  assert 85e6 < n < 100e6  # ViT-B/16 with a 2-frame embedding (86M + 0.6M) and the heads; no temporal model
  new_state, metrics = jax.eval_shape(make_train_step(config, build_encoder(config), tx), state,
                                      abstract_batch(config, 1024))
  assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
  assert "infonce_loss" in metrics

