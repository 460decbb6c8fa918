"""sora_jax.apps: embed videos into an on-disk index, search it, classify a file.

Names are imported lazily so `import sora_jax.apps` stays light (no jax until used).
"""

import importlib

_EXPORTS = {
    "Index": "sora_jax.apps.index",
    "embed_videos": "sora_jax.apps.embed",
    "list_videos": "sora_jax.apps.embed",
    "Embedder": "sora_jax.apps.embed",
    "predict_video": "sora_jax.apps.predict",
    "exact_search": "sora_jax.apps.search",
    "ExactSearch": "sora_jax.apps.search",
    "IVFIndex": "sora_jax.apps.search",
    "recall_at_k": "sora_jax.apps.search",
    "write_html": "sora_jax.apps.html",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'sora_jax.apps' has no attribute {name!r}")
