"""Weights in and out of a workdir: `import_torch` (a reference PyTorch state_dict -> a step-0 checkpoint
that eval, embed, search, predict, load_for_inference and a resumed `train` read like a trained
run's) and `export` (a run's encoder -> safetensors or a PyTorch state_dict file).

Files from outside are untrusted: a `.pth` is read by `torch_pickle.load` (no code from it runs), a
`.safetensors` file by the safetensors library (tensors and a JSON header only).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np

from sora_jax import storage, torch_pickle
from sora_jax.config import to_json, validate
from sora_jax.errors import CheckpointError, ConfigError, SoraError
from sora_jax.training import checkpoint as ckpt
from sora_jax.training.lock import WorkdirLock
from sora_jax.training.optim import build_optimizer
from sora_jax.training.state import init_state, pretrained_weights
from sora_jax.weights import reference

FORMATS = {"safetensors": ".safetensors", "torch": ".pth"}
_SAFETENSORS = "saving and reading .safetensors files needs safetensors: pip install 'sora-jax[weights]'"


def _safetensors():
  try:
    import safetensors.numpy
  except ImportError as e:
    raise SoraError(_SAFETENSORS) from e
  return safetensors.numpy


def read_weights(path) -> tuple[dict[str, np.ndarray], dict]:
  """A `.pth` (PyTorch zip) or `.safetensors` file -> ({name: array}, safetensors metadata or {})."""
  where = str(path)
  data = torch_pickle.read_bytes(path)
  if data[8:9] != b"{":  # a safetensors file: an 8-byte header length, then its JSON header
    return torch_pickle.loads(data, where), {}
  try:
    arrays = _safetensors().load(data)
    meta = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
  except SoraError:
    raise
  except Exception as e:  # noqa: BLE001 - a damaged header raises many kinds; the caller gets one
    raise CheckpointError(f"{where}: damaged safetensors file ({type(e).__name__}: {str(e)[:160]})") from e
  return arrays, meta


def import_torch(path, config, workdir, *, say=print) -> dict:
  """Writes the reference model's weights in `path` as checkpoint 0 of `workdir` (which must hold no
  checkpoint). The model's sizes come from the file; `config`'s other fields (data, objective,
  seed...) are kept. Parameters the reference has no counterpart for (other heads) are initialised
  from config.seed and named. -> {'config', 'architecture', 'initialised'}."""
  sd, _ = read_weights(path)
  arch = reference.infer(sd, str(path))
  reference.check(sd, arch, str(path))
  config = config.copy_and_resolve_references()
  changed = [f"{k}={v!r}" for k, v in arch.config_fields().items() if config.model[k] != v]
  config.model.update(arch.config_fields())
  config = validate(config)
  workdir = storage.path(workdir)
  _refuse_trained(workdir)
  tx = build_optimizer(config)
  state = jax.jit(lambda p: init_state(config, tx, p), backend="cpu")(pretrained_weights(config))
  imported = reference.to_params(sd, arch)
  params = jax.device_get(state.params)
  initialised = sorted(set(params["encoder"]) - set(imported))
  for name, tree in imported.items():
    mine = jax.tree_util.tree_map(np.shape, params["encoder"][name])
    if jax.tree_util.tree_map(np.shape, tree) != mine:
      raise CheckpointError(f"{path}: {name} maps to shapes {jax.tree_util.tree_map(np.shape, tree)}, the model has "
                            f"{mine}")  # a mapping bug, not a user error: reference.check ran first
    params["encoder"][name] = tree
  teacher = None if state.ema_params is None else jax.tree_util.tree_map(np.copy, params["encoder"])
  state = state.replace(params=params, opt_state=tx.init(params), ema_params=teacher)
  workdir.mkdir(parents=True, exist_ok=True)
  with WorkdirLock(workdir, say):
    _refuse_trained(workdir)  # again, under the lock
    manager = ckpt.make_manager(workdir, async_save=False)
    ckpt.save(manager, 0, state, {"epoch": 0, "step": 0}, config, force=True)
    manager.wait_until_finished()
    manager.close()
    storage.write_text(workdir / "config.json", to_json(config))
  say(f"imported {path} into {workdir} (checkpoint 0): {arch}" + (f"; set {', '.join(changed)}" if changed else "")
      + (f"; not in the file, initialised from seed {config.seed}: {', '.join(initialised)}" if initialised else ""))
  return {"config": config, "architecture": arch, "initialised": initialised}


def _refuse_trained(workdir) -> None:
  d = ckpt.checkpoint_dir(workdir)
  if d.is_dir() and any(d.iterdir()):
    raise ConfigError(f"{workdir} already has checkpoints; import into a new --workdir")


def _flax_layout(variables) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(variables))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.ascontiguousarray(v) for path, v in flat}


def export(workdir, fmt: str = "safetensors", out=None, *, layout: str = "auto", step: int | None = None,
           say=print) -> str:
  """Writes a run's encoder weights -> the file written. `layout`: 'reference' (the PyTorch reference
  model's names and layouts: `ReferenceModel.load_state_dict` takes them), 'flax' (every variable
  under its flax path, e.g. params/frame_encoder/conv0/kernel, as stored) or 'auto' (reference when
  the run's model is the reference architecture)."""
  if fmt not in FORMATS:
    raise ConfigError(f"unknown export format {fmt!r}; choose {' or '.join(FORMATS)}")
  if layout not in ("auto", "reference", "flax"):
    raise ConfigError(f"unknown layout {layout!r}; choose auto, reference or flax")
  config, variables, step = ckpt.load_for_inference(workdir, step)
  m = config.model
  arch = None
  if layout != "flax":
    try:
      arch = reference.of_config(m)
    except CheckpointError:
      if layout == "reference":
        raise
  if arch is not None:
    arrays = reference.to_state_dict(variables["params"], arch)
    left_out = sorted(set(variables["params"]) - {"frame_encoder", "temporal", "projection"})
    meta = {"layout": "reference", "architecture": json.dumps(dataclasses.asdict(arch)), "pooling": m.pooling}
  else:
    arrays, left_out = _flax_layout(variables), []
    meta = {"layout": "flax"}
  meta.update(config=to_json(config), step=str(step), format="pt")
  out = storage.path(out) if out else storage.path(workdir) / "export" / f"model-{step}{FORMATS[fmt]}"
  if out.is_dir():
    raise ConfigError(f"--out {out} is a folder; give a file name")
  out.parent.mkdir(parents=True, exist_ok=True)
  if fmt == "safetensors":
    storage.write_bytes(out, _safetensors().save(arrays, metadata=meta))
  else:
    torch_pickle.save(out, arrays)
  note = ""
  if arch is not None and m.pooling != "last_step":
    note = (f"; this run pools {m.pooling!r} (each direction's final state): the reference's forward takes out[:, -1], "
            "so build it with pooling='last' (bench/torch_reference.py) to reproduce the run's embeddings")
  say(f"wrote {out}: {len(arrays)} tensors, {meta['layout']} layout, checkpoint {step}"
      + (f"; left out (not in the reference model): {', '.join(left_out)}" if left_out else "") + note)
  return str(out)
