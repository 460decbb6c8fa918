"""sora_jax.models: the video encoder family (frame CNN -> temporal model -> heads)."""

from sora_jax.models.video_encoder import VideoEncoder, build_encoder, build_encoder_unchecked, init_variables

__all__ = ["VideoEncoder", "build_encoder", "build_encoder_unchecked", "init_variables"]
