"""Per-platform kernels: each implementation computes the same values and gradients, and a step
lowered for CUDA or TPU on this CPU machine holds the native convolution gradient."""

import collections
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sora_jax.config import load_config
from sora_jax.models import build_encoder_unchecked, kernels
from sora_jax.models.kernels import (
  attention_fn,
  attention_implementation,
  compiler_options,
  conv3x3,
  max_pool2x2,
  max_pool3x3s2,
)


def _native_conv(x, k):
  return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("platform", ["cpu", "cuda", None])
def test_conv_and_pool_values_and_gradients_match_flax_with_and_without_the_cpu_options(platform):
  rng = np.random.default_rng(8)
  x = jnp.asarray(rng.normal(size=(4, 12, 10, 3)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 3, 5)), jnp.float32)

  def ref(x, k):
    return jnp.sum(jnp.sin(nn.max_pool(_native_conv(x, k), (2, 2), strides=(2, 2))))

  def ours(x, k):
    return jnp.sum(jnp.sin(max_pool2x2(conv3x3(x, k), platform=platform)))

  want = jax.value_and_grad(ref, (0, 1))(x, k)
  for options in ({}, compiler_options("cpu")):
    got = jax.jit(jax.value_and_grad(ours, (0, 1)), compiler_options=options)(x, k)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 7, 5, 2), (1, 1, 4, 2)])
def test_max_pool_gradient_on_cpu_equals_the_reductions_gradient_with_ties_and_odd_sizes(shape):
  rng = np.random.default_rng(3)
  # few distinct values: most windows hold tied maxima, which share the gradient as jnp.max's do
  x = jnp.asarray(rng.integers(-2, 3, size=shape), jnp.float32)
  w = jnp.asarray(rng.normal(size=max_pool2x2(x).shape), jnp.float32)

  def loss(x, platform):
    return jnp.sum(max_pool2x2(x, platform=platform) * w)

  plain, masked = (jax.jit(jax.grad(loss), static_argnums=1)(x, p) for p in ("cuda", "cpu"))
  np.testing.assert_allclose(masked, plain, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(max_pool2x2(x, platform="cpu"), max_pool2x2(x, platform="cuda"))
  assert float(jnp.sum(masked)) == pytest.approx(float(jnp.sum(w)), rel=1e-5)  # each window passes its gradient once


@pytest.mark.parametrize("shape,dtype", [((2, 8, 8, 3), jnp.float32), ((2, 8, 8, 3), jnp.bfloat16),
                                         ((1, 7, 9, 2), jnp.float32), ((2, 1, 5, 2), jnp.float32),
                                         ((1, 2, 2, 1), jnp.bfloat16)])
def test_stem_max_pool_masked_gradient_equals_xlas_select_and_scatter_with_ties(shape, dtype):
  rng = np.random.default_rng(5)
  # integers: most windows hold tied maxima; the first in the window takes the gradient, as in XLA
  x = jnp.asarray(rng.integers(-2, 3, size=shape), dtype)
  want = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
  w = jnp.asarray(rng.normal(size=want.shape), dtype)

  def grad(choice):
    with kernels.forced(stem_pool=choice):
      return jax.jit(jax.grad(lambda x: jnp.sum((max_pool3x3s2(x) * w).astype(jnp.float32))))(x)

  for choice in ("masked", "xla"):
    with kernels.forced(stem_pool=choice):
      np.testing.assert_array_equal(max_pool3x3s2(x), want)
  masked, xla = grad("masked"), grad("xla")
  assert masked.dtype == dtype
  np.testing.assert_allclose(masked.astype(np.float32), xla.astype(np.float32), rtol=1e-2 if dtype == jnp.bfloat16 else 1e-6, atol=1e-6)
  reference = jax.grad(lambda x: jnp.sum((nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME") * w).astype(jnp.float32)))(x)
  np.testing.assert_array_equal(xla, reference)
  np.testing.assert_array_equal(masked != 0, reference != 0)  # the same element of each window, ties included


def test_stem_max_pool_lowers_its_masked_gradient_on_cpu_and_xlas_elsewhere():
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
  grad = jax.grad(lambda x: jnp.sum(max_pool3x3s2(x) ** 2))

  def scatters(platform):
    text = jax.export.export(jax.jit(grad), platforms=(platform,))(x).mlir_module()
    return len(re.findall(r"stablehlo\.select_and_scatter", text))

  assert {p: scatters(p) for p in ("cpu", "cuda", "tpu")} == {"cpu": 0, "cuda": 1, "tpu": 1}
  with kernels.forced(stem_pool="masked"):
    assert scatters("cuda") == 0


def _op_counts(fn, *args, platform):
  text = jax.export.export(jax.jit(fn), platforms=(platform,))(*args).mlir_module()
  return len(re.findall(r"stablehlo\.dot_general", text)), len(re.findall(r"stablehlo\.convolution", text))


def test_conv3x3_is_the_native_convolution_and_its_gradients_on_every_platform():
  x = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 4, 6), jnp.float32)
  grad = jax.grad(lambda x, k: jnp.sum(conv3x3(x, k) ** 2), (0, 1))
  for platform in ("cpu", "cuda", "tpu", "rocm"):
    assert _op_counts(grad, x, k, platform=platform) == (0, 3)  # forward, input and filter gradient


def _abstract_step(name: str, batch: int, frames: int):
  """(config, optimizer, abstract state, abstract batch) of config `name` at 64 px, two views."""
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  config = load_config(name, [f"train.batch_size={batch}", f"data.num_frames={frames}", "data.frame_size=64"])
  tx = build_optimizer(config)
  state = jax.eval_shape(lambda: init_state(config, tx))
  from sora_jax.training.step import abstract_batch
  return config, tx, state, abstract_batch(config, batch)


def test_large_config_train_step_lowered_for_gpu_and_tpu_uses_native_convolution_gradients():
  from sora_jax.training.step import make_train_step
  config, tx, state, batch = _abstract_step("large", 2, 4)
  step = make_train_step(config, build_encoder_unchecked(config), tx)
  layers = [p for p, a in jax.tree_util.tree_leaves_with_path(state.params)
            if "kernel" in jax.tree_util.keystr(p) and len(a.shape) == 4]
  assert len(layers) > 20
  for platform in ("cuda", "tpu", "cpu"):
    dots, convs = _op_counts(step, state, batch, platform=platform)
    # each conv layer: forward, filter gradient and input gradient (the first's input is the data)
    assert convs == 3 * len(layers) - 1, (platform, dots, convs, len(layers))


def _ynn_fusion_kinds(hlo: str) -> collections.Counter:
  """The root op of each computation XLA:CPU hands to YNNPACK."""
  bodies = dict(re.findall(r"^(%[\w.\-]+) .*?\{\n(.*?)\n\}", hlo, re.M | re.S))
  kinds = collections.Counter()
  for name in re.findall(r"calls=(%[\w.\-]+), [^\n]*__ynn_fusion", hlo):
    root = re.search(r"ROOT \S+ = \S+ ([\w-]+)\(", bodies.get(name, ""))
    kinds[root.group(1) if root else "?"] += 1
  return kinds


def test_cpu_options_keep_xla_cpu_defaults_but_convolutions_and_the_train_step_uses_them():
  from sora_jax.training.step import build_step, make_train_step
  config, tx, state, batch = _abstract_step("seed", 8, 2)
  built = build_step(config, tx=tx, abstract=state)
  step, shardings = built.step, built.shardings
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
  ours = _ynn_fusion_kinds(step.lower(state, batch).compile().as_text())
  default = _ynn_fusion_kinds(jax.jit(make_train_step(config, build_encoder_unchecked(config), tx)).lower(state, batch)
                              .compile().as_text())
  assert default["convolution"] == 3 * 3 - 1 and "convolution" not in ours, (default, ours)
  # jax 0.10.2's XLA:CPU hands YNNPACK single dots, reductions and convolutions (not elementwise
  # ops); the options keep all but convolutions
  x = jnp.ones((64, 32, 32, 64))
  ops = {"dot": lambda x: x.reshape(-1, 64) @ x[0, 0].T, "reduce": lambda x: x.sum((0, 1, 2)),
         "convolution": lambda x: conv3x3(x, x[0, :3, :3, :, None].repeat(8, -1)), "sin": jnp.sin}
  for name, fn in ops.items():
    default, ours = (_ynn_fusion_kinds(jax.jit(fn, compiler_options=o).lower(x).compile().as_text())
                     for o in ({}, compiler_options("cpu")))
    assert (sum(default.values()), sum(ours.values())) == {"dot": (1, 1), "reduce": (1, 1), "convolution": (1, 0),
                                                             "sin": (0, 0)}[name], (name, default, ours)
  assert compiler_options("gpu") == {} and compiler_options("tpu") == {}


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_flax_attention_with_a_causal_mask(causal):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
  ours = nn.MultiHeadDotProductAttention(num_heads=4, deterministic=True, attention_fn=attention_fn(causal, "xla"))
  ref = nn.MultiHeadDotProductAttention(num_heads=4, deterministic=True)
  mask = nn.make_causal_mask(jnp.ones(x.shape[:2], jnp.int32)) if causal else None
  params = ref.init(jax.random.key(0), x, x)

  def loss(module, params, x, mask=None):
    return jnp.sum(jnp.tanh(module.apply(params, x, x, mask=mask)))

  np.testing.assert_allclose(loss(ours, params, x), loss(ref, params, x, mask), rtol=1e-5)
  chex.assert_trees_all_close(jax.grad(lambda p, x: loss(ours, p, x), (0, 1))(params, x),
                              jax.grad(lambda p, x: loss(ref, p, x, mask), (0, 1))(params, x), rtol=1e-4, atol=1e-6)
  if causal:  # the last position changes nothing before it
    y = ours.apply(params, x, x)
    y2 = ours.apply(params, x, x.at[:, -1].set(0.0))
    np.testing.assert_array_equal(y[:, :-1], y2[:, :-1])
    assert not np.allclose(y[:, -1], y2[:, -1])


def test_attention_implementation_is_cudnn_only_where_its_kernel_applies():
  assert attention_implementation(jnp.bfloat16, 64, 16, backend="gpu") == "cudnn"
  assert attention_implementation(jnp.float16, 128, 8, backend="gpu") == "cudnn"
  assert attention_implementation(jnp.float32, 64, 16, backend="gpu") == "xla"  # cuDNN's flash kernel: half only
  assert attention_implementation(jnp.bfloat16, 12, 16, backend="gpu") == "xla"  # head size not a multiple of 8
  assert attention_implementation(jnp.bfloat16, 256, 16, backend="gpu") == "xla"
  assert attention_implementation(jnp.bfloat16, 64, 17, backend="gpu") == "xla"  # odd length (a CLS token)
  assert attention_implementation(jnp.bfloat16, 64, 16, backend="tpu") == "xla"
  assert attention_implementation(jnp.bfloat16, 64, 16) == "xla"  # this machine: CPU
  with pytest.raises(ValueError, match="causal=True"):
    attention_fn(True, "xla")(jnp.ones((1, 2, 1, 8)), jnp.ones((1, 2, 1, 8)), jnp.ones((1, 2, 1, 8)),
                              mask=jnp.ones((1, 1, 2, 2), bool))


def test_cpu_options_an_xla_that_refuses_them_runs_with_its_defaults_and_says_so(monkeypatch, caplog):
  from sora_jax.models import kernels
  monkeypatch.setattr(kernels, "_YNN_WITHOUT_CONVOLUTIONS", "LIBRARY_FUSION_TYPE_NO_SUCH_THING")
  kernels._cpu_options.cache_clear()
  try:
    with caplog.at_level("WARNING"):
      assert kernels.compiler_options("cpu") == {}
    assert "refused xla_cpu_experimental_ynn_fusion_type" in caplog.text
  finally:
    monkeypatch.undo()
    kernels._cpu_options.cache_clear()
  assert kernels.compiler_options("cpu") == {"xla_cpu_experimental_ynn_fusion_type":
                                             "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
