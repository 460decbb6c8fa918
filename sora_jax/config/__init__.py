"""Run configs: one schema (every field, its default, check and doc), loading, overrides, validation.

    from sora_jax import config as cfg
    c = cfg.load_config("default", ["train.num_steps=100"])   # a named config or a file, plus overrides
    cfg.validate(c)                                    # once, where the config enters
"""

from sora_jax.config.load import apply_overrides, load_config, migrate, named_configs, set_value, to_dict, to_json
from sora_jax.config.schema import FIELDS, defaults, reference
from sora_jax.config.validate import batch_divisible, terms, validate

__all__ = ["FIELDS", "apply_overrides", "batch_divisible", "defaults", "load_config", "migrate", "named_configs",
           "reference", "set_value", "terms", "to_dict", "to_json", "validate"]
