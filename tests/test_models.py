"""Video encoder family: shapes of every combination, jit == no jit, causality, T-independence."""

import functools
import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pathlib

from sora_jax.config import load_config
from sora_jax.models import build_encoder, init_variables
from sora_jax.config.schema import POOLING, TEMPORAL

B, T, S = 2, 4, 16
# Compile time dominates these tiny tests; LLVM optimisation does not change what they check.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def tiny(**model):
  c = load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "infonce.py")
  c.data.num_frames, c.data.frame_size = T, S
  c.model.width = 0.125
  c.model.hidden_size = 8
  c.model.num_heads = 2
  c.model.head_hidden = 16
  c.model.embed_dim = 8
  for k, v in model.items():
    c.model[k] = v
  return c


def video(seed=0, t=T, b=B):
  return np.random.default_rng(seed).integers(0, 256, (b, t, S, S, 3), dtype=np.uint8)


def expected_width(c):
  if c.model.temporal == "none":
    return {"seed_cnn": 32, "resnet": 64}[c.model.frame_encoder]
  return c.model.hidden_size * (2 if c.model.bidirectional else 1)


COMBOS = [(f, t, p) for f, t, p in itertools.product(("seed_cnn", "resnet"), TEMPORAL, POOLING)
          if not (p == "cls" and t == "none")]


def combo_config(frame_encoder, temporal, pooling):
  return tiny(frame_encoder=frame_encoder, temporal=temporal, pooling=pooling,
              bidirectional=temporal in ("lstm", "gru") and pooling == "last",
              num_classes=3 if pooling != "mean" else 0, predict_steps=2 if pooling == "mean" else 0)


def check_outputs(c, out):
  """The documented output dict: shapes, unit norms, optional heads."""
  d = {"seed_cnn": 32, "resnet": 64}[c.model.frame_encoder]
  dp = expected_width(c)
  chex.assert_shape(out["frames"], (B, T, d))
  chex.assert_shape(out["sequence"], (B, T, dp))
  chex.assert_shape(out["pooled"], (B, dp))
  chex.assert_shape(out["embedding"], (B, 8))
  assert ("logits" in out) == (c.model.num_classes > 0)
  if c.model.num_classes:
    chex.assert_shape(out["logits"], (B, 3))
  assert ("predictions" in out) == ("targets" in out) == (c.model.predict_steps > 0)
  if c.model.predict_steps:
    chex.assert_shape(out["targets"], (B, T, 8))
    chex.assert_shape(out["predictions"], (B, T, c.model.predict_steps, 8))
  if not isinstance(out["embedding"], jax.ShapeDtypeStruct):
    chex.assert_tree_all_finite(out)
    for k in ("embedding", "targets", "predictions"):
      if k in out:
        np.testing.assert_allclose(np.linalg.norm(out[k], axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("frame_encoder,temporal,pooling", COMBOS)
def test_every_combination_gives_documented_shapes(frame_encoder, temporal, pooling):
  c = combo_config(frame_encoder, temporal, pooling)
  model = build_encoder(c)
  out = jax.eval_shape(lambda r, v: model.apply(init_variables(c, r), v), jax.random.key(0), video())
  check_outputs(c, out)


@pytest.mark.parametrize("frame_encoder,temporal,pooling",
                         [x for x in COMBOS if x[0] == "seed_cnn"] + [("resnet", "transformer", "cls")])
def test_every_temporal_and_pooling_gives_unit_norm_embeddings(frame_encoder, temporal, pooling):
  c = combo_config(frame_encoder, temporal, pooling)
  check_outputs(c, fast_jit(build_encoder(c).apply)(init_variables(c, jax.random.key(0)), video()))


@pytest.mark.parametrize("temporal,frame_encoder", [("lstm", "seed_cnn"), ("gru", "resnet"),
                                                    ("transformer", "seed_cnn")])
def test_jit_and_no_jit_agree(temporal, frame_encoder):
  c = tiny(temporal=temporal, frame_encoder=frame_encoder, norm="group", pooling="cls", predict_steps=1)
  model = build_encoder(c)
  variables = init_variables(c, jax.random.key(1))
  v = video(1)
  jitted = jax.jit(model.apply)(variables, v)
  with jax.disable_jit():
    eager = model.apply(variables, v)
  chex.assert_trees_all_close(jitted, eager, atol=2e-5, rtol=2e-5)
  check_outputs(c, jitted)


def _sequence_fn(c):
  model = build_encoder(c)
  variables = init_variables(c, jax.random.key(2))
  return fast_jit(lambda v: model.apply(variables, v)["sequence"])


@pytest.mark.parametrize("temporal,extra", [("lstm", {}), ("gru", {"num_layers": 2}),
                                            ("transformer", {"causal": True, "num_layers": 2})])
def test_causal_output_at_t_ignores_later_frames(temporal, extra):
  f = _sequence_fn(tiny(temporal=temporal, **extra))
  a = video(3)
  b = a.copy()
  b[:, 2:] = video(4)[:, 2:]  # frames after t=1 change
  sa, sb = f(a), f(b)
  np.testing.assert_allclose(sa[:, :2], sb[:, :2], atol=1e-6)
  assert np.abs(sa[:, 2:] - sb[:, 2:]).max() > 1e-4


@pytest.mark.parametrize("temporal,extra", [("lstm", {"bidirectional": True}), ("gru", {"bidirectional": True}),
                                            ("transformer", {"causal": False})])
def test_bidirectional_output_at_t_depends_on_later_frames(temporal, extra):
  f = _sequence_fn(tiny(temporal=temporal, **extra))
  a = video(3)
  b = a.copy()
  b[:, -1] = video(4)[:, -1]  # only the last frame changes
  assert np.abs(f(a)[:, 0] - f(b)[:, 0]).max() > 1e-5


def _numpy_lstm(x, p, reverse):
  """One LSTM direction in float64 numpy, from the layer's parameters: x [B, T, F] -> h [B, T, H],
  the backward direction reading t = T-1 .. 0 and writing its state at t."""
  wi, bi = np.asarray(p["input"]["kernel"], np.float64), np.asarray(p["input"]["bias"], np.float64)
  wh = np.asarray(p["cell"]["hidden"]["kernel"], np.float64)
  b, t, _ = x.shape
  h = c = np.zeros((b, wh.shape[0]))
  out = np.zeros((b, t, wh.shape[0]))
  sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
  for s in (range(t - 1, -1, -1) if reverse else range(t)):
    i, f, u, o = np.split(x[:, s] @ wi + bi + h @ wh, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(u)
    h = sig(o) * np.tanh(c)
    out[:, s] = h
  return out


def test_bidirectional_last_pooling_is_each_direction_final_state_computed_independently():
  """A 2-layer bidirectional LSTM written out in numpy from the model's parameters: the sequence
  matches, and 'last' pooling is the forward direction's state after frame T-1 joined with the
  backward direction's state after reading back to frame 0 (each direction's final state)."""
  c = tiny(temporal="lstm", bidirectional=True, num_layers=2, pooling="last")
  variables = init_variables(c, jax.random.key(0))
  out = fast_jit(build_encoder(c).apply)(variables, video())
  rnn = variables["params"]["temporal"]["rnn"]
  x = np.asarray(out["frames"], np.float64)
  for layer in range(2):
    fwd = _numpy_lstm(x, rnn[f"layer{layer}_fwd"], reverse=False)
    bwd = _numpy_lstm(x, rnn[f"layer{layer}_bwd"], reverse=True)
    x = np.concatenate([fwd, bwd], axis=-1)
  np.testing.assert_allclose(out["sequence"], x, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["pooled"], np.concatenate([fwd[:, -1], bwd[:, 0]], axis=-1), rtol=1e-4, atol=1e-5)
  assert not np.allclose(bwd[:, 0], bwd[:, -1], atol=1e-3)  # the two ends of the backward pass differ


@pytest.mark.parametrize("temporal,bidirectional", [("lstm", True), ("gru", False)])
def test_recurrent_handles_t1_and_t64_with_the_same_parameter_tree(temporal, bidirectional):
  c = tiny(temporal=temporal, bidirectional=bidirectional, num_layers=2, width=0.0625)
  model = build_encoder(c)
  shapes = {t: jax.eval_shape(lambda r, t=t: init_variables(c, r, (1, t, S, S, 3)), jax.random.key(0))
            for t in (1, 64)}
  assert shapes[1] == shapes[64]
  variables = init_variables(c, jax.random.key(0), (1, T, S, S, 3))
  apply = fast_jit(model.apply)
  for t in (1, 64):
    out = apply(variables, video(5, t=t, b=1))
    chex.assert_shape(out["sequence"], (1, t, 16 if bidirectional else 8))
    chex.assert_tree_all_finite(out)


def test_uint8_and_float_frames_are_normalised_the_same_inside_the_model():
  c = tiny(temporal="gru")
  model = build_encoder(c)
  variables = init_variables(c, jax.random.key(0))
  v = video(6)
  apply = fast_jit(model.apply)
  a = apply(variables, v)["embedding"]
  b = apply(variables, v.astype(np.float32) / 255.0)["embedding"]
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_unit_embeddings():
  c = tiny(temporal="transformer", dtype="bfloat16", predict_steps=1)
  variables = init_variables(c, jax.random.key(0))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out = fast_jit(build_encoder(c).apply)(variables, video())
  assert out["embedding"].dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=-1), 1.0, atol=1e-3)


def test_batch_norm_is_opt_in_and_mutable():
  assert "batch_stats" not in init_variables(tiny(norm="group"), jax.random.key(0))
  c = tiny(norm="batch", temporal="none")
  variables = init_variables(c, jax.random.key(0))
  train_apply = fast_jit(functools.partial(build_encoder(c).apply, train=True, mutable=["batch_stats"]))
  _, updates = train_apply(variables, video())
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updates["batch_stats"])
  assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def test_transformer_scan_and_remat_keep_outputs_and_stack_parameters():
  base = tiny(temporal="transformer", num_layers=2, remat=True)
  scanned = tiny(temporal="transformer", num_layers=2, scan_layers=True)
  vs = init_variables(scanned, jax.random.key(0))
  stacked = vs["params"]["temporal"]["transformer"]["layers"]["mlp_in"]["kernel"]
  assert stacked.shape[0] == 2
  # unstack the scanned parameters into per-layer ones: same function either way
  p = jax.tree.map(lambda x: x, vs["params"])
  layers = p["temporal"]["transformer"].pop("layers")
  for i in range(2):
    p["temporal"]["transformer"][f"layer{i}"] = jax.tree.map(lambda x, i=i: x[i], layers)
  v = video(7)
  a = fast_jit(build_encoder(scanned).apply)(vs, v)["embedding"]
  b = fast_jit(build_encoder(base).apply)({"params": p}, v)["embedding"]
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_seed_config_matches_the_reference_parameter_count():
  from sora_jax.config import load_config
  c = load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "seed.py")
  shapes = jax.eval_shape(lambda r: init_variables(c, r), jax.random.key(0))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
  cnn = (3 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 256 * 9 + 256)
  lstm_dir = 256 * 512 + 512 + 128 * 512  # input kernel + bias, hidden kernel (both layers see 256 inputs)
  head = 256 * 128 + 128
  assert n == cnn + 4 * lstm_dir + head
