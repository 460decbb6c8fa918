"""Tubelet encoder: a clip [B, T, H, W, C] -> t x p x p tubelets -> one Dense (the tubelet embedding) ->
learned positions in the frame + fixed sinusoidal positions in time -> one space-time Transformer over
every token of the clip -> [B, T, D] (VideoMAE's and ViViT's encoder).

Unlike the per-frame encoders, attention here reaches across time: every output has seen the whole clip.
Its output keeps the frame encoders' contract, one vector per frame: the mean over a tubelet's patches,
given to each of its t frames, so the temporal models, heads, objectives and eval take it unchanged
(objectives that read one frame's own features, predictive, latent_mask and appearance, are refused by
config.validate: the future or the hidden frame would already be in them). The blocks are the ViT's
(`temporal.Transformer`: scan over layers, remat per block, cuDNN's fused attention where it takes the
shapes), and so are the parameter names FSDP's rules shard. The time positions are fixed, so the
parameters do not depend on T.
"""

from __future__ import annotations

import einops
import flax.linen as nn
import jax.numpy as jnp

from sora_jax.models.temporal import sinusoidal
from sora_jax.models.vit import ViT, make_vit


class TubeletViT(ViT):
  """[B, T, H, W, C] -> [B, T, width]: T a multiple of `frames`, H and W of `patch`. The ViT's fields (`pool`
  must be 'mean': a frame's vector is its tubelet's mean over its patches) and blocks."""
  frames: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, t, h, w, _ = x.shape
    if self.pool != "mean":
      raise ValueError(f"a tubelet encoder pools each tubelet by its mean; got pool={self.pool!r}")
    if t % self.frames or h % self.patch or w % self.patch:
      raise ValueError(f"clips of {t} frames of {h}x{w} px do not split into tubelets of {self.frames} frames x "
                       f"{self.patch}x{self.patch} px; make the frames a multiple of {self.frames} and the "
                       f"sides multiples of {self.patch}")
    nt, gh, gw = t // self.frames, h // self.patch, w // self.patch
    x = einops.rearrange(x, "b (nt f) (gh p) (gw q) c -> b nt (gh gw) (f p q c)", f=self.frames, p=self.patch,
                         q=self.patch)
    x = nn.Dense(self.width, dtype=self.dtype, name="patch_embed")(x)  # [B, nt, patches, width]
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (gh * gw, self.width), jnp.float32)
    when = jnp.asarray(sinusoidal(nt, self.width))[:, None, :]
    x = x + (pos[None] + when).astype(x.dtype)
    x = self.blocks(x.reshape(b, nt * gh * gw, self.width))
    per_tubelet = jnp.mean(x.reshape(b, nt, gh * gw, self.width), axis=2)
    return jnp.repeat(per_tubelet, self.frames, axis=1)  # each frame: its tubelet's vector


def make_tubelet(m, dtype, name: str = "frame_encoder") -> TubeletViT:
  """The tubelet encoder `config.model` names: the ViT's fields (make_vit) and tubelet_frames."""
  return make_vit(m, dtype, "mean", name, TubeletViT, frames=m.tubelet_frames)
