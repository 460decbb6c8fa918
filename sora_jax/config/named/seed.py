"""The reference design: seed CNN (64/128/256) on every frame + 2-layer bidirectional LSTM (hidden 128)
+ one linear layer to the embedding, V = FC(s_T), at clips [16, 64, 64, 3].

Unlike the reference PyTorch snippet (which reshaped one image's CNN feature map into a time axis),
this runs the CNN on each frame of a [B, T, H, W, 3] video, as the design's prose intends.
"""

from sora_jax.config import defaults


def get_config():
  c = defaults()
  c.data.num_frames = 16
  c.data.frame_size = 64
  c.model.frame_encoder = "seed_cnn"
  c.model.frame_input = "rgb"  # h_t = CNN(I_t), as designed (the schema's defaults, `infonce`, add frame differences)
  c.model.width = 1.0
  c.model.norm = "none"
  c.model.temporal = "lstm"
  c.model.hidden_size = 128
  c.model.num_layers = 2
  c.model.bidirectional = True
  c.model.causal = False
  c.model.pooling = "last"  # forward's last state with backward's first
  c.model.head_layers = 1  # the final linear layer
  c.model.embed_dim = 128
  return c
