"""Test set-up: 8 simulated CPU devices (before JAX's first computation), quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _tf_cpu_only():
  """Keeps TensorFlow off any accelerator and to few threads, so it never fights JAX."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  yield


@pytest.fixture
def data_dir(tmp_path_factory):
  """A data dir shared by the whole session, so built-in datasets are generated once."""
  return str(tmp_path_factory.getbasetemp() / "sora_data")

