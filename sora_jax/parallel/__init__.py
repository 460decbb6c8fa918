"""sora_jax.parallel"""
