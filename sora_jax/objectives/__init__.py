"""sora_jax.objectives"""
