"""Test set-up: 8 simulated CPU devices (before JAX's first computation), TensorFlow as the commands
import it (quiet, without Keras), faster XLA:CPU compiles, and one persistent XLA cache for the run."""

import os
import shutil
import tempfile

from sora_jax.cli import set_environment

set_environment()
os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# XLA:CPU's older loop emitters for fused code, and LLVM at -O1 instead of -O2: the suite's time is
# mostly XLA compiling many small programs once each. With both, a tiny CNN train step compiles in
# 0.62x the time of XLA's defaults and a plainly jitted ResNet init (threefry draws in conv kernels'
# shapes, which -O2 is slowest on) in 0.19x; losses agree after one update and differ by amplified
# rounding after more (`bench/suite_compile.py`); the suite took 0.61x the wall time (docs/tests.md).
# For the suite's CPU runs only (the commands keep XLA's defaults; jits with their own compiler_options
# keep them: inits at -O0). The tests that give a subprocess its own XLA_FLAGS (a device count: gs://,
# survival, multi-process) add $SORA_TEST_XLA_CODEGEN, so every process of a test compiles alike.
os.environ.setdefault("SORA_TEST_XLA_CODEGEN", "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1")
for _flag in os.environ["SORA_TEST_XLA_CODEGEN"].split():
  if _flag.split("=")[0] not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + _flag

# One persistent XLA cache for the whole run, its worker processes and the subprocesses the tests
# start (they inherit the environment): the many tests that train the same tiny configuration, in
# process or as `train.py`, compile its step once. Programs that compile in under a second are not
# stored; a size limit turns on JAX's file lock, so the processes' reads and writes never interleave.
# The controller (the first process to import this) makes it and removes it at the end.
if "SORA_TEST_XLA_CACHE" not in os.environ:
  os.environ["SORA_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="sora-jax-xla-cache-")
  _OWN_CACHE = True
else:
  _OWN_CACHE = False
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SORA_TEST_XLA_CACHE"]
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["SORA_TEST_XLA_CACHE"], ignore_errors=True)


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

