"""The device mesh ('data', 'fsdp') and every partitioning rule, in one place.

- Batch: rows sharded over ('data', 'fsdp') together (FSDP is data parallel too).
- Parameters and optimizer state: replicated when mesh.fsdp == 1. Otherwise each array takes the
  spec of the first rule in PARAM_RULES whose pattern matches its path and whose spec has its
  rank (a scanned stack of layers adds a leading axis: its spec gets a leading None). Arrays below
  mesh.fsdp_min_size elements, and arrays whose sharded dimension the fsdp size does not divide,
  stay replicated. A large array no rule covers is an error naming it: add a rule here.
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
# (regex on the '/'-joined path of a parameter or optimizer moment, spec); first match wins.
# Kernels are sharded on their output features (convolutions, dense layers, LSTM/GRU gates) or,
# for attention, on the model width, as MaxText and big_vision shard their weights.
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r"(.*/)?(bias|scale|gain|skip_gain|log_temperature|cls_token|step|rng|count)$", P()),  # vectors, counters, keys
    (r"(.*/)?attn/(query|key|value)/kernel$", P("fsdp", None, None)),  # [width, heads, head_dim]
    (r"(.*/)?attn/out/kernel$", P(None, None, "fsdp")),  # [heads, head_dim, width]
    (r"(.*/)?pos_embed$", P(None, "fsdp")),  # the ViT's positions [patches, width]
    (r".*/kernel$", P(None, None, None, "fsdp")),  # convolutions [kh, kw, in, out]
    (r".*/kernel$", P(None, "fsdp")),  # dense layers and recurrent gates [in, out]
)
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


def inference_mesh(config, devices=None) -> Mesh:
  """The mesh that embeds (evaluation, fine-tuning's test, embed, search, predict) on this
  process's devices (default: its local devices; with several processes each embeds its share and
  the rows are gathered): the axes of training, `config.mesh.fsdp` where it divides the devices
  (else 1, e.g. a run trained on 8 devices embedding on 1) and 'data' over the rest. No batch
  check: embedding batches are padded to the mesh size."""
  devices = list(jax.local_devices() if devices is None else devices)
  fsdp = int(config.mesh.fsdp)
  fsdp = fsdp if fsdp >= 1 and len(devices) % fsdp == 0 else 1
  return Mesh(np.array(devices).reshape(len(devices) // fsdp, fsdp), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'); other axes whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def platform(mesh: Mesh) -> str:
  """The platform of the mesh's devices: 'cpu', 'gpu', 'tpu'."""
  return mesh.devices.flat[0].platform


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(path: str, shape: tuple[int, ...], fsdp_size: int, min_size: int = 2 ** 14) -> P:
  """PartitionSpec of one parameter (or optimizer moment) from its path and shape (module docstring)."""
  if fsdp_size == 1 or len(shape) == 0 or int(np.prod(shape)) < min_size:
    return P()
  for pattern, spec in PARAM_RULES:
    if not re.fullmatch(pattern, path):
      continue
    if len(spec) == 0:
      return P()
    if len(spec) in (len(shape), len(shape) - 1):  # - 1: a scanned stack's leading layer axis
      spec = (None,) * (len(shape) - len(spec)) + tuple(spec)
      axis = spec.index("fsdp")
      return P(*spec) if shape[axis] % fsdp_size == 0 else P()
  raise ConfigError(f"no sharding rule for {path} {tuple(shape)} with config.mesh.fsdp={fsdp_size}; add one "
                    "to PARAM_RULES in sora_jax/parallel/mesh.py, or raise config.mesh.fsdp_min_size above "
                    f"{int(np.prod(shape))} to keep it replicated")


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


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = 2 ** 14) -> Any:
  """NamedSharding for every array leaf of `tree` (params, optimizer state, train state)."""
  fsdp_size = mesh.shape["fsdp"]

  def one(path, leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, param_spec(_path_str(path), shape, fsdp_size, min_size))

  return jax.tree_util.tree_map_with_path(one, tree)
