"""model.frame_encoder=vit: patches where they belong, pools, remat/scan that change nothing but memory and
compile time, its config rules, its sharding, and the pod config's attention kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder, init_variables
from sora_jax.models.kernels import attention_implementation
from sora_jax.models.vit import VIT_SIZES, ViT
from sora_jax.parallel import mesh as mesh_lib

TINY = ["model.frame_encoder=vit", "model.vit_size=Ti", "model.vit_depth=2", "model.vit_patch=8",
        "data.num_frames=4", "data.frame_size=32"]


def test_each_patch_lands_on_its_own_token():
  # no blocks: token (i, j) of the grid is LN(Dense(patch (i, j)) + position): changing the pixels of
  # patch (1, 2) changes that token and no other (a wrong patch split mixes rows, columns or channels)
  vit = ViT(width=16, depth=0, num_heads=2, patch=4, pool="none")
  x = jax.random.normal(jax.random.key(0), (2, 12, 16, 5))
  params = vit.init(jax.random.key(1), x)
  y = vit.apply(params, x)
  assert y.shape == (2, 3, 4, 16)
  y2 = vit.apply(params, x.at[:, 4:8, 8:12, :].add(1.0))
  changed = np.abs(np.asarray(y2 - y)).max(axis=(0, 3)) > 1e-6
  expected = np.zeros((3, 4), bool)
  expected[1, 2] = True
  np.testing.assert_array_equal(changed, expected)


@pytest.mark.parametrize("pool,shape", [("mean", (3, 16)), ("cls", (3, 16)), ("flatten", (3, 4 * 16)),
                                        ("none", (3, 2, 2, 16))])
def test_pools(pool, shape):
  vit = ViT(width=16, depth=1, num_heads=2, patch=4, pool=pool)
  x = jnp.ones((3, 8, 8, 3))
  params = vit.init(jax.random.key(0), x)
  assert vit.apply(params, x).shape == shape
  assert ("cls_token" in params["params"]) == (pool == "cls")
  if pool == "mean":  # the mean pool is the mean of the grid the map gives
    grid = ViT(width=16, depth=1, num_heads=2, patch=4, pool="none").apply(params, x)
    np.testing.assert_allclose(vit.apply(params, x), grid.mean(axis=(1, 2)), rtol=1e-6)


def test_video_encoder_with_vit_frames_remat_and_scan_give_the_same_numbers():
  config = validate(load_config("infonce", TINY))
  variables = init_variables(config, jax.random.key(0))
  width, _, heads = VIT_SIZES["Ti"]
  assert variables["params"]["frame_encoder"]["pos_embed"].shape == (16, width)  # (32 / 8)^2 patches
  video = jax.random.randint(jax.random.key(1), (2, 4, 32, 32, 3), 0, 256).astype(jnp.uint8)

  def loss_and_grads(cfg, params):
    model = build_encoder(cfg)
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(model.apply({"params": p}, video)["embedding"] ** 3)))(params)

  loss, grads = loss_and_grads(config, variables["params"])
  assert np.isfinite(float(loss)) and float(jnp.abs(grads["frame_encoder"]["patch_embed"]["kernel"]).max()) > 0
  for policy in ("nothing", "dots"):  # what the recomputed blocks keep changes no number
    remat = load_config("infonce", TINY + ["model.remat_frames=block", f"model.remat_policy={policy}"])
    loss_r, grads_r = loss_and_grads(remat, variables["params"])
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_r, grads)
  # scan_layers: the same blocks, their parameters stacked on a leading axis
  scan = load_config("infonce", TINY + ["model.scan_layers=True", "model.temporal=lstm"])
  params = jax.tree.map(lambda a: a, variables["params"])
  blocks = params["frame_encoder"]["transformer"]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), blocks.pop("layer0"), blocks.pop("layer1"))
  params["frame_encoder"]["transformer"]["layers"] = stacked
  assert jax.tree.structure(params) == jax.tree.structure(init_variables(scan, jax.random.key(0))["params"])
  loss_s, _ = loss_and_grads(scan, params)
  np.testing.assert_allclose(loss_s, loss, rtol=1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_remat_policy_dots_keeps_the_dense_layers_and_recomputes_only_the_rest(scan):
  # the backward pass as lowered (before XLA's own choices): each matmul recomputed is one more dot_general.
  # remat_frames=block with remat_policy=nothing recomputes every dense layer and attention's two batched
  # matmuls; dots keeps the dense layers' outputs, so it recomputes fewer, but still attention's.
  video = jax.ShapeDtypeStruct((2, 4, 32, 32, 3), jnp.uint8)

  def dots(overrides):
    config = validate(load_config("infonce", TINY + ["model.temporal=lstm", "model.attention=xla",
                                                     f"model.scan_layers={scan}"] + overrides))
    model = build_encoder(config)
    params = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))["params"]
    grad = jax.grad(lambda p, v: jnp.sum(model.apply({"params": p}, v)["embedding"] ** 2))
    return jax.jit(grad).lower(params, video).as_text().count("stablehlo.dot_general")

  kept = dots([])
  nothing = dots(["model.remat_frames=block"])
  saved = dots(["model.remat_frames=block", "model.remat_policy=dots"])
  assert kept < saved < nothing, (kept, saved, nothing)
  # (q.k, weights.v): attention's matmuls, and no dense layer, in each of 2 blocks (once in a scan's body)
  assert saved - kept == 2 * (1 if scan else 2)


@pytest.mark.parametrize("scan", [False, True])
def test_recomputed_blocks_are_fenced_from_cse_only_where_xla_could_merge_them(scan):
  # unrolled, one optimisation barrier per recomputed block keeps XLA from merging the recomputation back
  # into the forward pass; scanned, forward and backward are two loops, the barrier would only cost (on
  # GPUs above all, jax.checkpoint's docs), so there is none, and the recomputation still saves memory
  video = jax.ShapeDtypeStruct((2, 4, 32, 32, 3), jnp.uint8)

  def lowered(remat):
    config = validate(load_config("infonce", TINY + ["model.temporal=lstm", "model.attention=xla",
                                                     f"model.scan_layers={scan}", f"model.remat_frames={remat}"]))
    model = build_encoder(config)
    params = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))["params"]
    grad = jax.grad(lambda p, v: jnp.sum(model.apply({"params": p}, v)["embedding"] ** 2))
    return jax.jit(grad).lower(params, video)

  remat = lowered("block")
  assert remat.as_text().count("stablehlo.optimization_barrier") == (0 if scan else 2)
  if scan:
    temp = lambda low: low.compile().memory_analysis().temp_size_in_bytes
    assert temp(remat) < 0.75 * temp(lowered("none"))


@pytest.mark.parametrize("overrides,match", [
    (["model.frame_encoder=vit", "model.vit_patch=12"], "frame_size=32 does not split into .*vit_patch=12"),
    (["model.frame_pool=cls"], "frame_pool='cls' needs config.model.frame_encoder='vit'"),
    (["model.remat_frames=block"], "remat_frames='block' needs .*'resnet', 'vit' or 'tubelet'"),
    (["model.remat_policy=dots"], "remat_policy='dots' applies to recomputed Transformer blocks"),
    (TINY + ["model.remat_policy=dots"], "remat_policy='dots' applies to recomputed Transformer blocks"),
    (TINY + ["model.frame_pool=cls", "model.actors=True"], "CLS token has no place"),
])
def test_config_rules(overrides, match):
  with pytest.raises(ConfigError, match=match):
    validate(load_config("infonce", overrides))


def test_large_vit_shards_every_array_and_takes_cudnn_attention_on_gpus():
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  config = validate(load_config("large_vit"))
  width, depth, heads = VIT_SIZES[config.model.vit_size]
  tokens = (config.data.frame_size // config.model.vit_patch) ** 2
  # 196 patches, mean-pooled (no CLS: 197 would be odd), bf16, head size 64: cuDNN's fused kernel on a GPU
  assert attention_implementation(jnp.bfloat16, width // heads, tokens, backend="gpu") == "cudnn"
  assert config.model.dtype == "bfloat16" and config.model.frame_pool == "mean"
  config.mesh.data, config.mesh.fsdp = 4, 2
  mesh = mesh_lib.make_mesh(config)
  tx = build_optimizer(config)
  state = jax.eval_shape(lambda: init_state(config, tx))
  specs = mesh_lib.tree_shardings(state, mesh, 0)  # every array, however small, has a rule
  vit = specs.params["encoder"]["frame_encoder"]
  P = jax.sharding.PartitionSpec
  assert vit["pos_embed"].spec == P(None, "fsdp")
  assert vit["transformer"]["layers"]["mlp_in"]["kernel"].spec == P(None, None, "fsdp")  # scanned: [depth, in, out]
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
  assert 100e6 < n < 140e6  # ViT-B/16 (86M) + the temporal Transformer and heads
  # the whole pod-scale step, traced abstractly (nothing runs): the same outputs as the ResNet config's
  from sora_jax.training.step import abstract_batch, make_train_step
  batch = abstract_batch(config, 1024)  # the clips, and the colour draws the devices apply (data.augment.on)
  new_state, metrics = jax.eval_shape(make_train_step(config, build_encoder(config), tx), state, batch)
  assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(state)
  assert {"loss", "infonce_loss", "predictive_loss"} <= set(metrics)
