"""sora_jax.models"""
