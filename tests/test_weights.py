"""Weights in and out: the reference PyTorch model imported with parity, nothing run from a pickle, exports
that round-trip bitwise. Fixtures: tests/fixtures/make_reference_torch.py (PyTorch, run once)."""

import io
import pathlib
import pickle
import zipfile

import jax
import ml_dtypes
import numpy as np
import pytest

from sora_jax import cli, torch_pickle
from sora_jax.config import load_config
from sora_jax.errors import CheckpointError, ConfigError
from sora_jax.models import build_encoder
from sora_jax.training import checkpoint as ckpt
from sora_jax.weights import transfer

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SMALL = ["data.frame_size=24", "data.num_frames=5"]


def _config(name="seed", *more):
  return load_config(name, [*SMALL, *more])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """The reduced-width reference LSTM imported through the CLI."""
  workdir = tmp_path_factory.mktemp("weights") / "imported"
  overrides = [f"--config.{o}" for o in SMALL]
  assert cli.main(["import-torch", str(FIXTURES / "reference_lstm.pth"), "--workdir", str(workdir), *overrides]) == 0
  return workdir


def _params(workdir):
  return jax.device_get(ckpt.load_for_inference(workdir)[1]["params"])


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_imported_model_gives_the_reference_models_embeddings(rnn, imported, tmp_path):
  ref = np.load(FIXTURES / "reference_outputs.npz")
  workdir = imported if rnn == "lstm" else tmp_path / rnn
  if rnn == "gru":
    transfer.import_torch(FIXTURES / "reference_gru.pth", _config(), workdir)
  config, variables, step = ckpt.load_for_inference(workdir)
  assert step == 0 and config.model.temporal == rnn and config.model.pooling == "last_step"
  assert (config.model.width, config.model.hidden_size, config.model.embed_dim) == (0.25, 16, 10)
  ours = np.asarray(build_encoder(config).apply(variables, ref["video"])["embedding"])
  np.testing.assert_allclose(ours, ref[f"embedding_{rnn}"], atol=1e-4)
  assert np.abs(ours[0] - ours[1]).max() > 1e-3  # the clips differ by far more than the tolerance


def test_an_imported_checkpoint_restores_as_a_train_state_as_resuming_does(imported):
  """`train` on the imported workdir restores checkpoint 0 onto the state it would initialise (the
  optimizer's moments included) and continues from its data position: the same call here."""
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state, pretrained_weights
  config = ckpt.load_for_inference(imported)[0]
  tx = build_optimizer(config)
  abstract = jax.eval_shape(lambda p: init_state(config, tx, p), pretrained_weights(config))
  manager = ckpt.make_manager(imported, async_save=False)
  state, data, step = ckpt.restore(manager, abstract)
  manager.close()
  assert step == 0 and int(state.step) == 0 and (data["epoch"], data["step"]) == (0, 0)
  for a, b in zip(*map(jax.tree_util.tree_leaves, (state.params["encoder"], _params(imported)))):
    assert np.array_equal(a, b)
  assert all(not np.asarray(m).any() for m in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(m) > 0)


def test_export_then_import_gives_the_same_parameters_bitwise(imported, tmp_path):
  from sora_jax.weights import reference
  files = {fmt: tmp_path / f"model.{fmt}" for fmt in ("safetensors", "torch")}
  for fmt, out in files.items():
    assert cli.main(["export", "--workdir", str(imported), "--format", fmt, "--out", str(out)]) == 0
  a = _params(imported)
  transfer.import_torch(files["safetensors"], _config(), tmp_path / "again")  # the whole way once
  b = _params(tmp_path / "again")
  arrays, meta = transfer.read_weights(files["torch"])  # the torch file through the same mapping
  assert meta == {} and transfer.read_weights(files["safetensors"])[1]["layout"] == "reference"
  c = reference.to_params(arrays, reference.infer(arrays, "x"))
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) == jax.tree_util.tree_structure(c)
  for x, y, z in zip(*map(jax.tree_util.tree_leaves, (a, b, c))):
    assert x.dtype == y.dtype == z.dtype and x.tobytes() == y.tobytes() == z.tobytes()


def test_flax_layout_exports_every_variable_as_stored(imported, tmp_path):
  path = transfer.export(imported, "safetensors", tmp_path / "f.safetensors", layout="flax")
  arrays, meta = transfer.read_weights(path)
  flat = {"/".join(k.key for k in p): v
          for p, v in jax.tree_util.tree_flatten_with_path({"params": _params(imported)})[0]}
  assert meta["layout"] == "flax" and sorted(arrays) == sorted(flat)
  assert all(arrays[k].tobytes() == np.asarray(v).tobytes() for k, v in flat.items())


def test_reference_layout_refuses_a_model_it_cannot_express(imported, tmp_path):
  from sora_jax.training.optim import build_optimizer
  from sora_jax.training.state import init_state
  config = _config("infonce", "model.width=0.25", "model.hidden_size=8")  # frames + their differences: 6 channels
  tx = build_optimizer(config)
  state = jax.jit(lambda: init_state(config, tx))()
  manager = ckpt.make_manager(tmp_path / "default", async_save=False)
  ckpt.save(manager, 3, state, {"epoch": 0, "step": 3}, config, force=True)
  manager.close()
  with pytest.raises(CheckpointError, match="model.frame_input='rgb\\+diff'.*--layout flax"):
    transfer.export(tmp_path / "default", "safetensors", tmp_path / "x.safetensors", layout="reference")
  path = transfer.export(tmp_path / "default", "torch", layout="auto")  # falls back to the flax layout
  assert path.endswith("export/model-3.pth") and "params/frame_encoder/conv0/kernel" in torch_pickle.load(path)


class _TouchesAFile:
  def __init__(self, target):
    self.target = target

  def __reduce__(self):
    return (open, (self.target, "w"))


def _zip_with_pickle(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/byteorder", "little")


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
  target = tmp_path / "touched"
  payload = pickle.dumps({"fc.weight": _TouchesAFile(str(target))}, protocol=2)
  pickle.loads(pickle.dumps(_TouchesAFile(str(tmp_path / "proof")), protocol=2)).close()
  assert (tmp_path / "proof").exists()  # the payload does touch a file when a plain unpickler loads it
  _zip_with_pickle(tmp_path / "evil.pth", payload)
  with pytest.raises(CheckpointError, match="refused: its pickle asks for .*open.*nothing from the file was run"):
    torch_pickle.load(tmp_path / "evil.pth")
  (tmp_path / "evil_legacy.pth").write_bytes(payload)  # the pre-1.6 format: a stream of protocol-2 pickles
  with pytest.raises(CheckpointError, match="refused: its pickle asks for .*open"):
    torch_pickle.load(tmp_path / "evil_legacy.pth")
  assert cli.main(["import-torch", str(tmp_path / "evil.pth"), "--workdir", str(tmp_path / "run")]) == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("sora-jax: error:") and "refused" in err and "\n" not in err
  assert not target.exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_files_that_are_not_state_dicts_get_one_line(tmp_path):
  (tmp_path / "pickle.pkl").write_bytes(pickle.dumps({"a": 1}))  # a bare pickle (protocol 5)
  (tmp_path / "pickle2.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=2))  # no torch.save magic number
  noise = np.random.default_rng(0).bytes(64)  # seeded: os.urandom's byte 8 was '{' (a safetensors header) 1 time in 256
  assert noise[8:9] != b"{"
  (tmp_path / "random.bin").write_bytes(noise)
  _zip_with_pickle(tmp_path / "list.pth", pickle.dumps([1, 2], protocol=2))
  cases = {"pickle.pkl": "is not a PyTorch checkpoint", "pickle2.pkl": "is a pickle, not a PyTorch checkpoint",
           "random.bin": "is not a PyTorch checkpoint", "list.pth": "does not hold a state_dict",
           "absent.pth": "cannot read"}
  for name, message in cases.items():
    with pytest.raises(CheckpointError, match=message):
      transfer.read_weights(tmp_path / name)


def test_missing_extra_and_misshaped_keys_are_listed_in_one_line(tmp_path):
  sd = torch_pickle.load(FIXTURES / "reference_lstm.pth")
  del sd["fc.bias"]
  sd["head.weight"] = np.zeros(3, np.float32)
  sd["rnn.weight_hh_l1"] = np.zeros((64, 15), np.float32)
  torch_pickle.save(tmp_path / "bad.pth", sd)
  with pytest.raises(CheckpointError) as e:
    transfer.import_torch(tmp_path / "bad.pth", _config(), tmp_path / "run")
  msg = str(e.value)
  assert "\n" not in msg and "missing: fc.bias" in msg and "unexpected: head.weight" in msg
  assert "mis-shaped: rnn.weight_hh_l1 (64, 15) (expected (64, 16))" in msg
  with pytest.raises(CheckpointError, match="no 'cnn.0.weight': not the reference model"):
    torch_pickle.save(tmp_path / "other.pth", {"w": np.zeros(2, np.float32)})
    transfer.import_torch(tmp_path / "other.pth", _config(), tmp_path / "run")


def test_import_refuses_a_workdir_with_checkpoints(imported):
  with pytest.raises(ConfigError, match="already has checkpoints"):
    transfer.import_torch(FIXTURES / "reference_lstm.pth", _config(), imported)


def test_torch_format_round_trips_dtypes_shapes_and_training_checkpoints(tmp_path):
  arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3).T, "f16": np.ones((2, 2), np.float16),
            "bf16": np.full(3, 1.5, ml_dtypes.bfloat16), "i64": np.array(7, np.int64), "b": np.array([True, False]),
            "empty": np.zeros((0, 4), np.float32), "u8": np.arange(5, dtype=np.uint8)}
  torch_pickle.save(tmp_path / "a.pth", arrays)
  back = torch_pickle.load(tmp_path / "a.pth")
  assert list(back) == list(arrays)
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k
  # A training checkpoint's dict ({'model': state_dict, 'epoch': 3}), keys from DataParallel ('module.').
  inner = torch_pickle._state_dict({"model": {f"module.{k}": v for k, v in arrays.items()}, "epoch": 3}, "x")
  assert list(inner) == list(arrays)
  with pytest.raises(CheckpointError, match="not a state_dict of tensors"):
    torch_pickle._state_dict({"epoch": 3, "lr": 0.1}, "x")
  try:
    import torch
  except ImportError:
    return  # PyTorch is not a dependency; where it is installed, it reads our file too
  loaded = torch.load(io.BytesIO((tmp_path / "a.pth").read_bytes()), weights_only=True)
  assert np.array_equal(loaded["f32"].numpy(), arrays["f32"])
