"""Sampling a generator run's clips on a mesh: the one sampler `sora-jax generate` and the eval use.

`Sampler(config, generator_params, mesh).sample(cond [N, E], num=, seed=)` -> uint8 [N * num, T, S, S, 3].
The samples are split over the mesh's batch axes (padded to a multiple of its size); one jitted
solver step (generate.solver, or the call's) per sampling step (the flow and the step are
objectives/generate.py's), so a progress bar can follow them. Sample r of a condition is drawn from fold_in(PRNGKey(seed), r): it does not depend
on how many are drawn with it, nor on the device count.
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sora_jax.errors import DataError
from sora_jax.models.generator import build_generator
from sora_jax.objectives import generate as flow
from sora_jax.parallel import mesh as mesh_lib


class Sampler:
  """A generator's parameters placed on `mesh` (replicated) with its jitted sampling steps."""

  def __init__(self, config, params, mesh):
    self.config, self.mesh = config, mesh
    self.params = jax.device_put(params, mesh_lib.replicated(mesh))
    d = config.data
    self.clip_shape = (d.num_frames, d.frame_size, d.frame_size, 3)

  @functools.cached_property
  def _jitted(self):
    model, shape = build_generator(self.config), self.clip_shape
    apply = lambda params: (lambda *a: model.apply({"params": params}, *a))
    rows = mesh_lib.batch_sharding(self.mesh)

    def noise(key, row_ids):
      return jax.vmap(lambda r: flow.initial_noise(jax.random.fold_in(key, r), (1,) + shape)[0])(row_ids)

    def step(params, x, i, cond, guidance, solver, num_steps):
      return flow.SOLVERS[solver](apply(params), x, i, num_steps, cond, guidance)

    def decode(params, cond):  # the MSE baseline: one output per condition
      return flow.sample("mse", apply(params), cond, None, (cond.shape[0],) + shape, num_steps=1, guidance=1.0)

    return (jax.jit(noise, out_shardings=rows), jax.jit(step, static_argnums=(4, 5, 6), out_shardings=rows),
            jax.jit(lambda p, c: flow.to_uint8(decode(p, c)), out_shardings=rows),
            jax.jit(flow.to_uint8, out_shardings=rows))

  def sample(self, cond: np.ndarray, *, num: int = 1, seed: int = 0, guidance: float | None = None,
             solver: str | None = None, sample_steps: int | None = None, progress: bool = False) -> np.ndarray:
    """cond [N, E] -> uint8 clips [N * num, T, S, S, 3]: `num` samples of each condition (condition-
    major), sample r drawn from (seed, r); guidance, solver, sample_steps: default the run's
    generate.guidance, generate.solver, generate.sample_steps."""
    if num < 1:
      raise DataError(f"--num {num}: ask for at least one clip per condition")
    g = self.config.generate
    guidance = float(g.guidance if guidance is None else guidance)
    if guidance < 0:
      raise DataError(f"--guidance {guidance} must be >= 0 (1 = the condition alone, 0 = unconditional)")
    solver = g.solver if solver is None else solver
    if solver not in flow.SOLVERS:
      raise DataError(f"--solver {solver!r}: choose one of {', '.join(flow.SOLVERS)}")
    sample_steps = int(g.sample_steps if sample_steps is None else sample_steps)
    if sample_steps < 1:
      raise DataError(f"--sample-steps {sample_steps}: take at least one sampling step")
    cond = np.repeat(np.asarray(cond, np.float32), num, axis=0)
    n = len(cond)
    padded = -(-n // self.mesh.size) * self.mesh.size
    cond = jax.device_put(np.concatenate([cond, np.repeat(cond[-1:], padded - n, 0)]),
                          mesh_lib.batch_sharding(self.mesh))
    noise, step, decode, to_uint8 = self._jitted
    if g.method == "mse":
      return np.asarray(jax.device_get(decode(self.params, cond)))[:n]
    rows = np.concatenate([np.tile(np.arange(num), n // num), np.arange(n, padded)]).astype(np.int32)
    x = noise(jax.random.PRNGKey(seed), rows)
    for i in tqdm(range(sample_steps), desc="sample", unit="step", disable=not progress, file=sys.stderr):
      x = step(self.params, x, jnp.int32(i), cond, guidance, solver, sample_steps)
    return np.asarray(jax.device_get(to_uint8(x)))[:n]
