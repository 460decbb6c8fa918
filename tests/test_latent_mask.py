"""latent_mask (V-JEPA for our architecture): the block masks, the loss against numpy on any device
count, the mask token hiding the frames from the temporal model, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax.config import load_config, validate
from sora_jax.errors import ConfigError
from sora_jax.models import build_encoder
from sora_jax.models.video_encoder import init_variables
from sora_jax.objectives.latent import draw_mask, latent_mask


def test_masks_are_contiguous_blocks_of_the_ratio_drawn_from_the_key():
  m = np.asarray(draw_mask(jax.random.PRNGKey(0), 64, 8, 0.5, 1))
  assert np.all(m.sum(1) == 4)
  for row in m:  # one run of True
    assert np.count_nonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])) == 1) == 1
  assert len({tuple(r) for r in m}) > 1  # placed at random
  np.testing.assert_array_equal(m, np.asarray(draw_mask(jax.random.PRNGKey(0), 64, 8, 0.5, 1)))
  two = np.asarray(draw_mask(jax.random.PRNGKey(1), 64, 16, 0.5, 2))
  assert np.all((two.sum(1) >= 4) & (two.sum(1) <= 8))  # two blocks of 4, possibly overlapping


def _numpy_latent(pred, teacher, mask):
  t = (teacher - teacher.mean(-1, keepdims=True)) / np.sqrt(teacher.var(-1, keepdims=True) + 1e-6)
  d = np.abs(pred.astype(np.float64) - t)
  huber = np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean(-1)
  return float((huber * mask).sum() / mask.sum())


@pytest.mark.parametrize("n_devices", [1, 8])
def test_latent_mask_matches_numpy_on_any_device_count(n_devices):
  rs = np.random.RandomState(0)
  pred, teacher = (rs.normal(size=(16, 6, 5)).astype(np.float32) * 2 for _ in range(2))
  mask = rs.rand(16, 6) < 0.5
  mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  loss, _ = jax.jit(latent_mask)(put(pred), put(teacher), put(mask))
  np.testing.assert_allclose(float(loss), _numpy_latent(pred, teacher, mask), rtol=1e-5)
  grad = jax.grad(lambda t: latent_mask(jnp.asarray(pred), t, jnp.asarray(mask))[0])(jnp.asarray(teacher))
  assert not np.any(np.asarray(grad))  # the teacher's side is a fixed target


@pytest.mark.parametrize("temporal", ["lstm", "transformer"])
def test_hidden_steps_reach_the_temporal_model_only_as_the_mask_token(temporal):
  config = load_config("jepa", ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16",
                                f"model.temporal={temporal}", f"model.bidirectional={temporal == 'lstm'}",
                                "data.num_frames=6", "data.frame_size=16"])
  model = build_encoder(config)
  variables = init_variables(config, jax.random.PRNGKey(0))
  rs = np.random.RandomState(0)
  video = rs.randint(0, 255, (2, 6, 16, 16, 3)).astype(np.uint8)
  other = video.copy()
  other[:, 2:4] = rs.randint(0, 255, (2, 2, 16, 16, 3))  # new content at the hidden steps 2 and 3
  mask = jnp.asarray(np.tile(np.arange(6) // 2 == 1, (2, 1)))
  run = lambda v, m: model.apply(variables, v, train=False, time_mask=m)
  a, b = run(video, mask), run(other, mask)
  np.testing.assert_allclose(np.asarray(a["latent_predictions"]), np.asarray(b["latent_predictions"]), atol=1e-6)
  assert not np.allclose(np.asarray(a["frames"]), np.asarray(b["frames"]))  # the frames themselves did change
  # rgb+diff: the visible step after the hidden block does not see its difference to a hidden frame
  np.testing.assert_allclose(np.asarray(a["frames"][:, 4]), np.asarray(b["frames"][:, 4]), atol=1e-6)
  unmasked = run(video, None), run(other, None)
  assert not np.allclose(np.asarray(unmasked[0]["sequence"]), np.asarray(unmasked[1]["sequence"]), atol=1e-4)


def test_latent_mask_config_errors_are_one_line():
  with pytest.raises(ConfigError, match="latent_predict"):
    validate(load_config("jepa", ["model.latent_predict=False"]))
  with pytest.raises(ConfigError, match="leave one visible"):
    validate(load_config("jepa", ["objective.mask_ratio=1.0"]))
  with pytest.raises(ConfigError, match="hide at least one"):
    validate(load_config("jepa", ["objective.mask_ratio=0.01"]))


@pytest.mark.parametrize("mask_every_term", [False, True])
def test_other_terms_see_the_whole_clips_unless_every_term_is_masked(mask_every_term):
  """infonce + latent_mask: InfoNCE's embedding comes from an unmasked online pass (the hidden steps
  and their frame differences stay visible to it) while the predictions come from the masked pass;
  with objective.mask_every_term both come from the one masked pass."""
  from sora_jax.training.step import _encode
  config = load_config("jepa", ["model.width=0.125", "model.hidden_size=16", "model.head_hidden=16",
                                "data.num_frames=6", "data.frame_size=16",
                                f"objective.mask_every_term={mask_every_term}"])
  model = build_encoder(config)
  variables = init_variables(config, jax.random.PRNGKey(0))
  video = np.random.RandomState(0).randint(0, 255, (4, 2, 6, 16, 16, 3)).astype(np.uint8)
  key = jax.random.PRNGKey(3)
  outputs, _ = _encode(config, model, variables["params"], {}, {"video": video}, key)  # [B, V, ...]
  flat = video.reshape((8,) + video.shape[2:])
  mask = np.asarray(outputs["time_mask"]).reshape(8, 6) > 0
  assert mask.any() and not mask.all()
  run = lambda m: model.apply(variables, flat, train=True, time_mask=m, rngs={"dropout": key})
  whole, masked = run(None), run(jnp.asarray(mask))
  got = lambda k: np.asarray(outputs[k]).reshape((8,) + outputs[k].shape[2:])
  np.testing.assert_allclose(got("latent_predictions"), np.asarray(masked["latent_predictions"]), atol=1e-5)
  expected = masked if mask_every_term else whole
  np.testing.assert_allclose(got("embedding"), np.asarray(expected["embedding"]), atol=1e-5)
  assert not np.allclose(np.asarray(whole["embedding"]), np.asarray(masked["embedding"]), atol=1e-4)
