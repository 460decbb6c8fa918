"""sora-jax: self-supervised video representations in JAX/Flax."""

from sora_jax.errors import CheckpointError, ConfigError, DataError, SoraError

__version__ = "0.1.0"

__all__ = ["SoraError", "ConfigError", "DataError", "CheckpointError", "__version__"]
