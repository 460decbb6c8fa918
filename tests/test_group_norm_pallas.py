"""The Pallas GroupNorm kernels (Pallas's interpreter on CPU) against the fused form, and what a GPU
would run with them (Triton custom calls in the step lowered for CUDA)."""

import chex
import jax
import jax.numpy as jnp
import pytest
from test_group_norm import _inputs, _value_and_grads

from sora_jax.models import group_norm as gn, group_norm_pallas as gp, kernels

TRITON = "__gpu$xla.gpu.triton"


@pytest.mark.parametrize("shape,groups,relu,residual,per_program", [
    ((2, 5, 6, 8), 4, True, True, 1), ((2, 5, 6, 8), 4, True, False, 1), ((2, 5, 6, 8), 4, False, True, 1),
    ((2, 5, 6, 8), 2, False, False, 1), ((2, 7, 3, 12), 4, True, True, 1),  # 3 channels a group, 21 rows: padded
    ((3, 9), 3, True, True, 1), ((2, 5, 6, 16), 8, True, True, 2), ((2, 7, 3, 12), 4, True, True, "wide"),
    ((2, 5, 6, 16), 8, False, True, "wide")])
def test_pallas_values_and_gradients_equal_the_fused_form(shape, groups, relu, residual, per_program):
  args = _inputs(shape, jnp.float32, residual=residual)
  want = _value_and_grads(lambda *a: gn.fused(*a, groups, relu), *args)
  got = _value_and_grads(lambda *a: gp.pallas(*a, groups, relu, True, per_program), *args)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)


def test_wide_programs_take_the_fewest_groups_that_make_32_byte_rows():
  assert gp.groups_per_program(32, 64, 2, "wide") == 8  # 2 bfloat16 channels a group: 8 groups, 16 channels
  assert gp.groups_per_program(32, 512, 2, "wide") == 1  # 16 channels a group already
  assert gp.groups_per_program(32, 128, 4, "wide") == 2  # float32
  assert gp.groups_per_program(6, 18, 2, "wide") == 6  # 3 channels: no divisor of 6 below 6 reaches 32 bytes
  assert gp.groups_per_program(32, 64, 2, 1) == 1
  with pytest.raises(ValueError, match="does not divide the 32 groups"):
    gp.groups_per_program(32, 64, 2, 3)


def test_groups_read_in_row_blocks_give_the_same_values_and_gradients(monkeypatch):
  args = _inputs((2, 9, 7, 8), jnp.float32)  # 63 rows x 2 channels a group
  want = _value_and_grads(lambda *a: gp.pallas(*a, 4, True, True), *args)
  monkeypatch.setattr(gp, "MAX_BLOCK", 32)  # 16-row blocks: 4 of them, the last one padded
  assert gp._tiling(63, 2) == (16, 2, 4)
  got = _value_and_grads(lambda *a: gp.pallas(*a, 4, True, True), *args)
  chex.assert_trees_all_close(got, want, rtol=2e-5, atol=2e-5)
  two = _value_and_grads(lambda *a: gp.pallas(*a, 4, True, True, 2), *args)  # 8-row blocks of 2 groups
  chex.assert_trees_all_close(two, want, rtol=2e-5, atol=2e-5)
  chex.assert_trees_all_close(got, _value_and_grads(lambda *a: gn.fused(*a, 4, True), *args), rtol=2e-5, atol=2e-5)


def test_bfloat16_keeps_dtypes_and_the_relu_gradient_is_zero_on_constant_groups():
  x, scale, bias, res, w = _inputs((2, 4, 4, 8), jnp.bfloat16)
  value, grads = _value_and_grads(lambda *a: gp.pallas(*a, 4, True, True), x, scale, bias, res, w)
  assert grads[0].dtype == grads[3].dtype == jnp.bfloat16 and grads[1].dtype == jnp.float32
  want = _value_and_grads(lambda *a: gn.fused(*a, 4, True), x, scale, bias, res, w)
  chex.assert_trees_all_close((value, grads), want, rtol=2e-2, atol=2e-2)
  x = x.at[..., :2].set(5.0)  # a constant group: variance 0, output exactly its bias, 0 here: the ReLU at 0
  bias = bias.at[:2].set(0.0)
  _, grads = _value_and_grads(lambda *a: gp.pallas(*a, 4, True, True), x, scale, bias, None, w)
  assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in grads[:3])
  assert float(jnp.abs(grads[0][..., :2]).max()) == 0.0 and float(jnp.abs(grads[0][..., 2:]).max()) > 0


def _lowered(fn, *args, platform):
  return jax.export.export(jax.jit(fn), platforms=(platform,), disabled_checks=[
      jax.export.DisabledSafetyCheck.custom_call(TRITON)])(*args).mlir_module()


def test_forced_pallas_lowers_two_triton_kernels_for_cuda_and_none_by_default_or_elsewhere():
  x, scale, bias, res, w = _inputs((2, 8, 8, 16), jnp.bfloat16)

  def step(x, scale, bias):
    f = lambda x, s, b: jnp.sum(kernels.group_norm(x, s, b, 4, residual=res, relu=True).astype(jnp.float32) * w)  # noqa: E731
    return jax.value_and_grad(f, (0, 1, 2))(x, scale, bias)

  with kernels.forced(group_norm="pallas_wide"):
    assert _lowered(step, x, scale, bias, platform="cuda").count(TRITON) == 2
  with kernels.forced(group_norm="pallas"):
    cuda = _lowered(step, x, scale, bias, platform="cuda")
    assert cuda.count(TRITON) == 2  # forward and backward, nothing else in between
    assert TRITON not in _lowered(step, x, scale, bias, platform="cpu")  # the interpreter: plain HLO
    assert TRITON not in _lowered(step, x, scale, bias, platform="tpu")  # the fused form
    got = jax.jit(step)(x, scale, bias)
  assert TRITON not in _lowered(step, x, scale, bias, platform="cuda")  # not chosen unless forced
  chex.assert_trees_all_close(got, jax.jit(step)(x, scale, bias), rtol=2e-2, atol=2e-2)


def test_the_large_configs_groups_fit_one_tile_but_the_stems_is_read_in_blocks():
  # configs/large.py at 224 px: the stem's 112x112 GroupNorm and stage 1 at 56x56 (64 channels, 32 groups)
  assert gp._tiling(112 * 112, 2)[2] > 1
  assert [gp._tiling(s * s, c // 32)[2] for s, c in ((56, 64), (28, 128), (14, 256), (7, 512))] == [1, 1, 1, 1]
