"""configs/large_vit.py with one space-time ViT-B over each clip's 2 x 16 x 16 tubelets (VideoMAE's encoder)
instead of a ViT per frame: 8 x 14 x 14 = 1568 tokens a clip (an even count: cuDNN's fused attention takes
it), attention across time inside the encoder, so no temporal model after it (temporal=none, the clip's
embedding = the mean of its tubelets) and InfoNCE alone: the predictive term would predict frames the
encoder has already seen (config.validate refuses it). Half large_vit's tokens a clip, but each attends to
1568 rather than 196, so attention is a third of the dense layers' FLOPs (bench/roofline.py --config
large_tubelet gives its ceiling). Not yet measured on an accelerator: MODE=mfu bench/on_accelerator.sh.
"""

from sora_jax.config.named import large_vit


def get_config():
  c = large_vit.get_config()
  c.model.frame_encoder = "tubelet"
  c.model.tubelet_frames = 2
  c.model.temporal = "none"
  c.model.causal = False
  c.model.predict_steps = 0
  c.objective.name = "infonce"
  return c
