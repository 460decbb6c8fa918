"""Caption features for the video_text term, and sentences -> vectors in a run's video-text space.

With text.tower=minilm a caption's feature is the frozen tower's embedding, computed once per set of
captions and cached on disk; with bag_of_words it is the caption's token ids (the step embeds them).

The cache file is named by a fingerprint of the tower (weights and tokenizer) and of the caption
strings, under `<data_dir>/text_cache/`; a different tower or another set of captions never
reads a stale file. The encoding is the same on every process; process 0 writes the file.
"""

from __future__ import annotations

import hashlib
import io
import logging

import jax
import numpy as np

from sora_jax import storage
from sora_jax.errors import SoraError
from sora_jax.objectives import project_text, text_features
from sora_jax.objectives.video_text import tokens_in
from sora_jax.config.datasets import data_dir
from sora_jax.models.text_encoder import load_text_tower

log = logging.getLogger("sora_jax.text")


def cache_dir(config):
  return storage.path(data_dir(config)) / "text_cache"


def encode_cached(texts: list[str], folder, tower=None) -> np.ndarray:
  """float32 [len(texts), D]: the tower's sentence embeddings, read from `folder` when cached."""
  tower = tower or load_text_tower()
  digest = hashlib.sha256(tower.fingerprint.encode())
  for t in texts:
    digest.update(t.encode("utf-8", errors="replace") + b"\0")
  path = storage.path(folder) / f"{digest.hexdigest()[:24]}.npy"
  if path.exists():
    try:
      vectors = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
      if vectors.shape == (len(texts), tower.dim):
        return vectors
    except ValueError:
      pass
    log.warning("text cache %s is damaged; computing it again", path)
  log.info("embedding %d captions with the text tower (once; cached in %s)", len(texts), folder)
  vectors = tower.encode(texts, progress=jax.process_index() == 0)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    staged = storage.Staged(path, suffix=".npy")
    with open(staged.name, "wb") as f:
      f.write(buf.getvalue())
    staged.commit()
  return vectors


def token_ids(texts: list[str], tower=None) -> np.ndarray:
  """int32 [N, L]: the tokenizer's ids, 0-padded to the longest (a power of two, at most 256)."""
  for t in texts:
    if not str(t).strip():
      raise SoraError("empty text: give a sentence that describes the video, e.g. 'a red square moves left'")
  return (tower or load_text_tower()).tokenize(list(texts))[0]


def caption_features(config, cache: bool = True):
  """`features(texts) -> [N, ...]` for the pipeline's CaptionTable (see data.pipeline): the sentence
  embeddings [N, 384] (frozen minilm; cached on disk unless `cache` is False) or the token ids
  [N, L] (bag_of_words, or minilm with text.train_layers > 0)."""
  if tokens_in(config):
    return lambda texts: token_ids(list(texts))
  if not cache:
    return lambda texts: load_text_tower().encode(list(texts))
  return lambda texts: encode_cached(list(texts), cache_dir(config))


def text_vectors(config, objective_params, texts, cache: bool = True) -> np.ndarray:
  """Sentences -> float32 [N, E] unit vectors in the run's video-text space (eval's fixed sets of
  captions: `cache`d; search and zero-shot queries: not)."""
  raw = caption_features(config, cache)(list(texts))
  return np.asarray(project_text(objective_params, text_features(config, objective_params, raw)))
