"""sora_jax.data"""
