"""The device mesh ('data', 'fsdp') and every partitioning rule, in one place.

- Batch: rows sharded over ('data', 'fsdp') together (FSDP is data parallel too).
- Parameters and optimizer state: replicated when mesh.fsdp == 1; otherwise each array matched by
  PARAM_RULES gets that spec, and other large arrays are sharded over 'fsdp' on their largest
  dimension divisible by the fsdp size (small ones stay replicated).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sora_jax.config import batch_divisible
from sora_jax.errors import ConfigError

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")
# (regex on the '/'-joined parameter path, spec); first match wins. Biases/scales: replicate.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r".*(bias|scale|log_temperature)$", P()),
)
FSDP_MIN_SIZE = 2 ** 14  # arrays smaller than this are not worth sharding


def make_mesh(config, devices=None) -> Mesh:
  """Mesh of shape (mesh.data, mesh.fsdp) over `devices` (default: all); -1 = the rest.

  Raises ConfigError (before anything compiles) when the shape does not fit the devices or the
  global batch does not split over the batch axes.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = int(config.mesh.fsdp)
  data = int(config.mesh.data)
  if data == -1:
    if n % fsdp:
      raise ConfigError(f"config.mesh.fsdp={fsdp} does not divide the {n} devices; use a divisor of {n}")
    data = n // fsdp
  if data * fsdp > n:
    raise ConfigError(f"config.mesh.data*mesh.fsdp={data}*{fsdp} needs {data * fsdp} devices but only {n} "
                      "exist; use --config.mesh.data=-1")
  batch_divisible(config.train.batch_size, config.train.grad_accum_steps, data * fsdp,
                        f"mesh data*fsdp={data}*{fsdp} on {n} devices")
  if jax.process_count() > 1 and config.train.batch_size % jax.process_count():
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} is not divisible by the "
                      f"{jax.process_count()} processes")
  if data * fsdp == n:
    try:
      from jax.experimental import mesh_utils
      grid = mesh_utils.create_device_mesh((data, fsdp), devices=devices)
    except Exception:  # noqa: BLE001 - fall back to the plain order (e.g. a subset of devices)
      grid = np.array(devices).reshape(data, fsdp)
  else:
    grid = np.array(devices[: data * fsdp]).reshape(data, fsdp)
  return Mesh(grid, AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'); other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(path: str, shape: tuple[int, ...], fsdp_size: int) -> P:
  """PartitionSpec of one parameter (or optimizer moment) from its path and shape."""
  if fsdp_size == 1 or len(shape) == 0:
    return P()
  for pattern, spec in PARAM_RULES:
    if re.fullmatch(pattern, path):
      return spec
  if int(np.prod(shape)) < FSDP_MIN_SIZE:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def _path_str(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
  """NamedSharding for every array leaf of `tree` (params, optimizer state, train state)."""
  fsdp_size = mesh.shape["fsdp"]

  def one(path, leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, param_spec(_path_str(path), shape, fsdp_size))

  return jax.tree_util.tree_map_with_path(one, tree)
