"""sora-jax: self-supervised video representations in JAX/Flax."""

from sora_jax.errors import CheckpointError, ConfigError, DataError, SoraError

__version__ = "0.1.0"

_APPS_EXPORTS = ("embed_videos", "embed_actor_rows", "Index", "search_index", "predict_video", "predict_actors", "ExactSearch",
                 "IVFIndex", "generate_videos", "Generator")

__all__ = ["SoraError", "ConfigError", "DataError", "CheckpointError", "__version__", *_APPS_EXPORTS]


def __getattr__(name):  # lazy: `import sora_jax` stays light (no jax or tensorflow)
  if name in _APPS_EXPORTS:
    import sora_jax.apps
    return getattr(sora_jax.apps, name)
  raise AttributeError(f"module 'sora_jax' has no attribute {name!r}")
