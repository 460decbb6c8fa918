"""sora_jax.apps"""
