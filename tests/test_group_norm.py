"""The fused GroupNorm (+ residual + ReLU) against flax's module, and the per-platform choice of it."""

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.models import group_norm as gn, kernels
from sora_jax.models.frame_encoders import Norm


def _flax(x, scale, bias, residual, groups, relu):
  y = nn.GroupNorm(num_groups=groups, dtype=x.dtype).apply({"params": {"scale": scale, "bias": bias}}, x)
  if residual is not None:
    y = residual + y
  return nn.relu(y) if relu else y


def _inputs(shape, dtype, seed=0, residual=True):
  rng = np.random.default_rng(seed)
  c = shape[-1]
  x = jnp.asarray(rng.normal(size=shape) * 3 + 1.5, dtype)  # off-centre: the mean matters
  scale = jnp.asarray(1 + 0.3 * rng.normal(size=c), jnp.float32)
  bias = jnp.asarray(0.3 * rng.normal(size=c), jnp.float32)
  res = jnp.asarray(rng.normal(size=shape), dtype) if residual else None
  w = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return x, scale, bias, res, w


def _value_and_grads(fn, x, scale, bias, res, w):
  def loss(x, scale, bias, res):
    return jnp.sum(fn(x, scale, bias, res).astype(jnp.float32) * w)
  return jax.jit(jax.value_and_grad(loss, (0, 1, 2, 3)))(x, scale, bias, res)


@pytest.mark.parametrize("shape,groups,relu,residual", [
    ((3, 5, 6, 8), 4, False, False), ((3, 5, 6, 8), 4, True, False), ((3, 5, 6, 8), 4, False, True),
    ((3, 5, 6, 8), 4, True, True), ((2, 7, 3, 6), 6, True, True), ((2, 4, 4, 6), 1, True, True),
    ((4, 9), 3, False, True)])
def test_fused_values_and_gradients_equal_flax_group_norm_in_float32(shape, groups, relu, residual):
  args = _inputs(shape, jnp.float32, residual=residual)
  want = _value_and_grads(lambda *a: _flax(*a, groups, relu), *args)
  got = _value_and_grads(lambda *a: gn.fused(*a, groups, relu), *args)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)
  same_as_flax = _value_and_grads(lambda *a: gn.reference(*a, groups, relu), *args)
  chex.assert_trees_all_equal(same_as_flax, want)  # the other platforms' path is flax's, bit for bit


@pytest.mark.parametrize("relu", [False, True])
def test_fused_in_bfloat16_is_at_least_as_close_to_float32_as_flax(relu):
  x, scale, bias, res, w = _inputs((4, 6, 6, 16), jnp.float32)
  exact = _value_and_grads(lambda *a: _flax(*a, 4, relu), x, scale, bias, res, w)
  low = (x.astype(jnp.bfloat16), scale, bias, res.astype(jnp.bfloat16), w)
  fused = _value_and_grads(lambda *a: gn.fused(*a, 4, relu), *low)
  flax = _value_and_grads(lambda *a: _flax(*a, 4, relu), *low)
  assert fused[1][0].dtype == jnp.bfloat16 and fused[1][3].dtype == jnp.bfloat16  # gradients in x's dtype

  def err(got):
    return max(float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))
               for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(exact)))

  assert err(fused) < 1e-2
  assert err(fused) <= err(flax) * 1.05  # one rounding at the end instead of one per step


def test_relu_gradient_is_zero_where_the_pre_activation_is_exactly_zero_and_constant_groups_are_finite():
  # a constant group normalises to 0 (variance 0): with bias 0 the ReLU sits exactly at 0 there
  x = jnp.concatenate([jnp.full((2, 4, 4, 2), 5.0), jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 2)),
                                                                   jnp.float32)], axis=-1)
  scale, bias = jnp.ones(4), jnp.zeros(4)
  w = jnp.ones(x.shape)
  want = _value_and_grads(lambda x, s, b, r: _flax(x, s, b, r, 2, True), x, scale, bias, None, w)
  got = _value_and_grads(lambda x, s, b, r: gn.fused(x, s, b, r, 2, True), x, scale, bias, None, w)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(got))
  np.testing.assert_array_equal(got[1][0][..., :2], 0.0)  # no gradient through a ReLU at 0
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def _reduce_count(fn, *args, platform):
  text = jax.export.export(jax.jit(jax.grad(fn, (0, 1, 2))), platforms=(platform,))(*args).mlir_module()
  return len(re.findall(r"stablehlo\.reduce\b", text))


def test_cpu_lowers_the_fused_kernel_and_other_platforms_flax_unless_forced():
  x, scale, bias, res, w = _inputs((2, 4, 4, 8), jnp.float32)

  def loss(x, scale, bias):
    return jnp.sum(kernels.group_norm(x, scale, bias, 4, residual=res, relu=True) * w)

  counts = {p: _reduce_count(loss, x, scale, bias, platform=p) for p in ("cpu", "cuda", "tpu")}
  with kernels.forced(group_norm="fused"):
    fused = {p: _reduce_count(loss, x, scale, bias, platform=p) for p in ("cpu", "cuda")}
  with kernels.forced(group_norm="flax"):
    flax = {p: _reduce_count(loss, x, scale, bias, platform=p) for p in ("cpu", "cuda")}
  assert fused["cpu"] == fused["cuda"] != flax["cpu"] == flax["cuda"]
  assert counts == {"cpu": fused["cpu"], "cuda": flax["cuda"], "tpu": flax["cuda"]}
  # and the values the CPU computes are the fused kernel's
  got = _value_and_grads(lambda x, s, b, r: kernels.group_norm(x, s, b, 4, residual=r, relu=True), x, scale, bias, res, w)
  chex.assert_trees_all_equal(got, _value_and_grads(lambda *a: gn.fused(*a, 4, True), x, scale, bias, res, w))


def test_forced_refuses_unknown_kernels_and_restores_the_choice_after_its_block():
  with pytest.raises(ValueError, match="unknown kernel"):
    with kernels.forced(layer_norm="fused"):
      pass
  with pytest.raises(ValueError, match="choose one of fused, flax, pallas, pallas_wide"):
    with kernels.forced(group_norm="palas"):
      pass
  with kernels.forced(group_norm="flax"):
    with kernels.forced(stem_pool="xla"):
      assert kernels._FORCED == {"group_norm": "flax", "stem_pool": "xla"}
    assert kernels._FORCED == {"group_norm": "flax"}
  assert kernels._FORCED == {}


@pytest.mark.parametrize("kind", ["none", "group", "batch"])
def test_norm_module_adds_the_residual_before_the_relu_and_keeps_flax_parameter_names(kind):
  x, _, _, res, _ = _inputs((2, 4, 4, 8), jnp.float32)
  norm = Norm(kind)
  variables = norm.init(jax.random.key(0), x, True)
  if kind == "group":
    assert jax.tree.map(jnp.shape, variables["params"]) == {"GroupNorm_0": {"bias": (8,), "scale": (8,)}}
  if kind == "batch":
    assert set(variables["params"]) == {"BatchNorm_0"}
  mutable = ["batch_stats"] if kind == "batch" else False
  plain = norm.apply(variables, x, True, mutable=mutable)
  fused = norm.apply(variables, x, True, residual=res, relu=True, mutable=mutable)
  if kind == "batch":
    plain, fused = plain[0], fused[0]
  np.testing.assert_allclose(fused, np.maximum(np.asarray(plain) + np.asarray(res), 0), rtol=1e-5, atol=1e-5)
