"""Bad model configs and bad inputs fail early with a message naming the field and the allowed values."""

import pathlib

import jax
import numpy as np
import pytest

from sora_jax.config import load_config
from sora_jax.errors import ConfigError, DataError
from sora_jax.models import build_encoder, init_variables
from sora_jax.config import validate

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def config(**model):
  c = load_config(CONFIGS / "infonce.py")
  with c.model.ignore_type():
    for k, v in model.items():
      c.model[k] = v
  return c


@pytest.mark.parametrize("field,value,words", [
    ("frame_encoder", "vgg", ["model.frame_encoder", "'vgg'", "'seed_cnn'", "'resnet'"]),
    ("temporal", "mamba", ["model.temporal", "'lstm'", "'gru'", "'transformer'", "'none'"]),
    ("pooling", "max", ["model.pooling", "'last'", "'mean'", "'cls'"]),
    ("norm", "layer", ["model.norm", "'group'", "'batch'"]),
    ("width", -0.5, ["model.width", "> 0"]),
    ("hidden_size", 0, ["model.hidden_size", ">= 1"]),
    ("num_layers", 0, ["model.num_layers", ">= 1"]),
    ("embed_dim", 2.5, ["model.embed_dim", "integer"]),
    ("resnet_depth", 50, ["model.resnet_depth", "18", "34"]),
    ("dtype", "float16", ["model.dtype", "'float32'", "'bfloat16'"]),
    ("input_std", (0.5, 0.0, 0.5), ["model.input_std", "positive"]),
    ("input_mean", (0.5,), ["model.input_mean", "3"]),
    ("bidirectional", "yes", ["model.bidirectional", "True, False"]),
])
def test_bad_model_value_names_field_and_allowed_values(field, value, words):
  with pytest.raises(ConfigError) as e:
    validate(config(**{field: value}))
  for w in words:
    assert w in str(e.value), (w, str(e.value))
  with pytest.raises(ConfigError):
    build_encoder(config(**{field: value}))


@pytest.mark.parametrize("model,words", [
    ({"pooling": "cls", "temporal": "none"}, ["model.pooling='cls'", "'last'", "'mean'"]),
    ({"temporal": "transformer", "bidirectional": True}, ["model.bidirectional", "'lstm'", "'gru'"]),
    ({"temporal": "transformer", "hidden_size": 30, "num_heads": 4}, ["model.hidden_size=30", "num_heads=4"]),
    ({"temporal": "lstm", "bidirectional": True, "causal": True}, ["model.causal", "bidirectional"]),
])
def test_contradictory_model_fields_are_rejected(model, words):
  with pytest.raises(ConfigError) as e:
    validate(config(**model))
  for w in words:
    assert w in str(e.value)


def test_default_and_seed_configs_validate():
  validate(load_config(CONFIGS / "infonce.py"))
  validate(load_config(CONFIGS / "seed.py"))


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (1, 2, 4, 16, 16, 3), (2, 4, 16, 16, 1), (2, 4, 16, 16)])
def test_frames_not_btwh3_raise_a_clear_error(shape):
  c = config(width=0.125, hidden_size=8)
  model = build_encoder(c)
  variables = init_variables(c, jax.random.key(0), (1, 2, 16, 16, 3))
  with pytest.raises(DataError, match=r"\[B, T, H, W, 3\]"):
    model.apply(variables, np.zeros(shape, np.uint8))


def test_model_summary_lists_modules_and_totals_on_the_last_line(capsys):
  from sora_jax.cli import main
  overrides = ["model.width=0.125", "model.hidden_size=8", "model.embed_dim=8", "data.frame_size=16",
               "data.num_frames=4"]
  assert main(["model-summary", "--config", str(CONFIGS / "infonce.py"), "--no-module-flops",
               *(f"--config.{o}" for o in overrides)]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert any(line.startswith("frame_encoder/conv1") for line in lines)
  total = lines[-1].split()
  assert total[0] == "total"
  c = load_config(CONFIGS / "infonce.py", overrides)
  n = sum(x.size for x in jax.tree.leaves(init_variables(c, jax.random.key(0))))
  assert int(total[-2].replace(",", "")) == n
  # the three 3x3 SAME convs (XLA counts only in-image taps: 3n-2 per axis), 4 frames
  convs = 2 * 4 * sum((3 * n - 2) ** 2 * ci * co for n, ci, co in ((16, 3, 8), (8, 8, 16), (4, 16, 32)))
  assert convs <= float(total[-1].replace(",", "")) * 1e6 <= 2 * convs
