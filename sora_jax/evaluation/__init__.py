"""sora_jax.evaluation"""
