"""Named configs, importable from the installed package: `sora-jax train --config NAME`.

Each module's `get_config()` starts from the schema's defaults (sora_jax.config.defaults()) and
sets only what differs. The repository's top-level `configs/` is this folder.
"""
