"""Device memory of a config's train step, from XLA's memory analysis of the compiled step (no run).

The step is compiled for one device holding `per_device_batch` clips (the data-parallel share of
one device of a pod), exactly as training jits it (state donated). The figures are the compiler's:
arguments (train state + batch), outputs not aliased to donated arguments, and temporaries (the
activations kept for the backward pass, gradients, workspace).

On CPU the step is compiled without LLVM optimisation (`xla_backend_optimization_level=0`): the
figures come from XLA's buffer assignment, before code generation, and are the same bytes (checked
by the tests and the bench) in less time: the pod example (`large`, remat_frames=time) 31.6 s ->
25.5 s, a tiny ResNet 10.9 s -> 9.0 s (2-core AMD EPYC, 2026-12-07, medians of 3:
`bench/suite_compile.py --memory --repeats 3`).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.config import validate
from sora_jax.errors import ConfigError
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.training.step import abstract_batch, build_step


def _nbytes(tree) -> int:
  return int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)))


def _options(device) -> dict | None:
  """Compile options for the analysis only (the program never runs): unoptimised code on CPU."""
  return {"xla_backend_optimization_level": 0} if device.platform == "cpu" else None


def step_memory(config, per_device_batch: int, device=None) -> dict:
  """Bytes per device of the train step at `per_device_batch` clips on `device` (default: the first).

  -> {"params", "opt_state" (of the state), "arguments", "outputs" (not aliased), "temp", "total",
  "platform", "per_device_batch"}; total = arguments + outputs + temp, the peak XLA plans for.
  """
  if per_device_batch < 1 or per_device_batch % config.train.grad_accum_steps:
    raise ConfigError(f"per-device batch {per_device_batch} must be >= 1 and a multiple of "
                      f"train.grad_accum_steps={config.train.grad_accum_steps}")
  cfg = copy.deepcopy(config)
  cfg.train.batch_size, cfg.mesh.data, cfg.mesh.fsdp = per_device_batch, 1, 1
  validate(cfg)
  device = device or jax.devices()[0]
  built = build_step(cfg, mesh_lib.make_mesh(cfg, devices=[device]))
  step, shardings, abstract = built.step, built.shardings, built.abstract
  state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  analysis = step.lower(state, abstract_batch(cfg, per_device_batch)).compile(_options(device)).memory_analysis()
  outputs = analysis.output_size_in_bytes - analysis.alias_size_in_bytes
  return {"params": _nbytes(abstract.params), "opt_state": _nbytes(abstract.opt_state),
          "arguments": int(analysis.argument_size_in_bytes), "outputs": int(outputs),
          "temp": int(analysis.temp_size_in_bytes),
          "total": int(analysis.argument_size_in_bytes + outputs + analysis.temp_size_in_bytes),
          "platform": device.platform, "per_device_batch": per_device_batch}


def describe(m: dict) -> str:
  """One line: 'train step memory per device (cpu, 8 clips): 40.3 GB = state ... + temporaries ...'."""
  gb = lambda b: f"{b / 1e9:.2f} GB"
  return (f"train step memory per device ({m['platform']}, {m['per_device_batch']} clips): {gb(m['total'])} = "
          f"arguments {gb(m['arguments'])} (params {gb(m['params'])}, optimizer {gb(m['opt_state'])}, batch) "
          f"+ temporaries {gb(m['temp'])} + outputs {gb(m['outputs'])}")
