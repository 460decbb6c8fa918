"""model.norm=ws: weight-standardised convolutions and normalisation-free blocks keep the signal's variance
where the analysis says, start as the identity, and train."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder, init_variables
from sora_jax.models.nf_resnet import ALPHA, NFBlock, WSConv, next_beta, standardize


def test_standardized_kernels_have_zero_mean_and_variance_one_over_fan_in_per_output_channel():
  kernel = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (3, 3, 16, 8))
  gain = jnp.arange(1.0, 9.0)
  w = standardize(kernel, gain)
  np.testing.assert_allclose(w.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
  np.testing.assert_allclose(w.var(axis=(0, 1, 2)) * 3 * 3 * 16, np.asarray(gain) ** 2, rtol=1e-4)


def test_blocks_start_as_the_identity_and_keep_the_predicted_variance():
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 64))
  block = NFBlock(64, 1, beta=1.0)
  params = block.init(jax.random.key(1), x)
  np.testing.assert_array_equal(block.apply(params, x), x)  # skip_gain 0: the identity
  # as if trained to skip_gain 1: each block adds ALPHA^2 of variance; a projection restarts from 1
  beta, y = 1.0, x
  for i, (channels, strides) in enumerate([(64, 1), (64, 1), (128, 2), (128, 1), (128, 1)]):
    block = NFBlock(channels, strides, beta=beta)
    params = jax.tree.map(lambda a: a, block.init(jax.random.key(10 + i), y))
    params["params"]["skip_gain"] = jnp.ones(())
    projected = y.shape[-1] != channels or strides != 1
    y = block.apply(params, y)
    beta = next_beta(beta, projected)
    assert float(y.std()) == pytest.approx(beta, rel=0.15), (i, float(y.std()), beta)
  assert beta == pytest.approx(np.sqrt(1 + 3 * ALPHA ** 2))


def test_ws_convolution_strided_matches_its_definition():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  conv = WSConv(6, (3, 3), 2)
  params = conv.init(jax.random.key(1), x)
  p = params["params"]
  w = standardize(p["kernel"], p["gain"])
  expected = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(conv.apply(params, x), expected + p["bias"], rtol=1e-5, atol=1e-6)


def test_a_ws_resnet_video_encoder_trains_and_its_config_rule():
  config = validate(load_config("infonce", ["model.frame_encoder=resnet", "model.norm=ws", "data.num_frames=2",
                                            "data.frame_size=16", "model.width=0.125"]))
  params = init_variables(config, jax.random.key(0))["params"]
  assert set(params["frame_encoder"]["stage1_block0"]) >= {"shortcut", "Conv_0", "Conv_1", "skip_gain"}
  video = jax.random.randint(jax.random.key(1), (2, 2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  model = build_encoder(config)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, video)["embedding"][:, 0])))(params)
  block = grads["frame_encoder"]["stage0_block0"]
  # at skip_gain 0 only the gain itself learns in the branch; it does get a gradient
  assert float(jnp.abs(block["skip_gain"])) > 0 and float(jnp.abs(block["Conv_1"]["kernel"]).max()) == 0.0
  with pytest.raises(ConfigError, match="norm='ws' .* needs config.model.frame_encoder='resnet'"):
    validate(load_config("infonce", ["model.norm=ws"]))
