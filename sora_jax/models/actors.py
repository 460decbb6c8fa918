"""Per-actor features: RoIAlign at each actor's box in each frame, a temporal model over each track.

From the frame encoder's last feature map (before its global pool), each actor's box in each frame
is pooled to size x size cells (`roi.roi_align`), flattened, optionally joined by the box's size and
its motion since the previous frame (`box_motion`, as ORViT's object dynamics embed the boxes: the
RoI follows the actor, so its contents alone see little of its displacement), and
projected to the frame features' width. A temporal model of its own (the clip's kind: LSTM, GRU or
Transformer) runs over each track, and a projection head gives each actor a unit embedding. With
`actor_predict_steps` = K, a DPC predictor (`heads.Predictor`) reads the track's temporal state at t
and predicts steps t+1..t+K of the track: its box's size and motion (`actor_predict_target=motion`)
or its whole input (`track`). Objective `actor_predictive`: an action is how a track evolves. With
`actor_appearance`, the time-mean of the track's RoI contents, projected, is how the actor looks
(`actor_appearance`, objective `actor_appearance`); `actor_pooled` is then the temporal features and
that look, each at unit norm.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from sora_jax.linalg import half_means, l2_normalize
from sora_jax.models.heads import Predictor, ProjectionHead
from sora_jax.models.roi import roi_align
from sora_jax.models.temporal import make_temporal


def box_motion(boxes):
  """[..., T, 4] boxes -> [..., T, 7]: per frame the box's size (w, h), its centre's displacement since
  the previous frame (signed and absolute; zero at the first frame) and its speed, displacements in
  tenths of the frame (an actor moves 0.01-0.05 of it per frame). Not where the box is: a crop moves
  that, and the action does not depend on it."""
  boxes = boxes.astype(jnp.float32)
  size = boxes[..., 2:] - boxes[..., :2]
  centre = (boxes[..., :2] + boxes[..., 2:]) / 2
  moved = 10.0 * jnp.concatenate([jnp.zeros_like(centre[..., :1, :]), jnp.diff(centre, axis=-2)], axis=-2)
  speed = jnp.sqrt(jnp.sum(moved * moved, -1, keepdims=True) + 1e-12)
  return jnp.concatenate([size, moved, jnp.abs(moved), speed], -1)


class ActorTracks(nn.Module):
  """maps [B, T, h, w, C], boxes [B, A, T, 4] (normalised x0, y0, x1, y1) -> {'actor_pooled' [B, A, D'],
  'actor_embedding' [B, A, E] (unit norm)}, with model.actor_appearance also 'actor_appearance' [B, A, E]
  (unit norm) and 'actor_pooled' [B, A, D' + C]."""
  model_config: object
  dtype: object = jnp.float32
  unroll: int = 1

  @nn.compact
  def __call__(self, maps, boxes, train: bool = False):
    m = self.model_config
    b, t, h, w, c = maps.shape
    a = boxes.shape[1]
    per_frame = jnp.swapaxes(boxes, 1, 2).reshape(b * t, a, 4)  # [B*T, A, 4]
    rois = roi_align(maps.reshape(b * t, h, w, c), per_frame, m.actor_roi_size)  # [B*T, A, p, p, C]
    contents = jnp.swapaxes(rois.reshape(b, t, a, -1), 1, 2)  # [B, A, T, p*p*C]
    x = contents
    if m.actor_box_features:
      geometry = nn.relu(nn.Dense(32, dtype=self.dtype, name="box_embed")(box_motion(boxes).astype(self.dtype)))
      # In training, a whole track's box features are dropped with this probability: then its RoI
      # contents alone must give the embedding its view gets from both (modality dropout).
      geometry = nn.Dropout(m.actor_box_dropout, broadcast_dims=(2, 3), deterministic=not train)(geometry)
      x = jnp.concatenate([x.astype(self.dtype), geometry], -1)
    x = nn.Dense(c, dtype=self.dtype, name="roi_proj")(x.astype(self.dtype))
    sequence, pooled = make_temporal(m, self.dtype, self.unroll, name="actor_temporal")(x.reshape(b * a, t, c))
    proj = ProjectionHead(m.head_hidden, m.head_layers, m.embed_dim, self.dtype, name="actor_projection")(pooled)
    pooled = pooled.reshape(b, a, -1)
    out = {"actor_embedding": l2_normalize(proj).reshape(b, a, -1)}
    if m.actor_appearance:  # how the actor looks over the clip, beside how its track evolves
      look_in = nn.Dense(c, dtype=self.dtype, name="appearance_proj")
      look_proj = ProjectionHead(m.head_hidden, m.head_layers, m.embed_dim, self.dtype, name="appearance_projection")
      look = look_in(jnp.mean(contents.astype(self.dtype), 2))
      out["actor_appearance"] = l2_normalize(look_proj(look))
      # the first and the second half of the track apart [B, A, 2, E]: objective actor_appearance pairs one
      # view's first half with another's second, so the look must hold over time, not only across views
      halves = half_means(contents, 2)
      out["actor_appearance_halves"] = l2_normalize(look_proj(look_in(halves.astype(self.dtype))))
      # each part at unit norm: a probe (which L2-normalises the whole) weighs them alike, whatever their scales
      pooled = jnp.concatenate([l2_normalize(pooled), l2_normalize(look).astype(pooled.dtype)], -1)
    out["actor_pooled"] = pooled.astype(jnp.float32)
    if m.actor_predict_steps > 0:
      target = x if m.actor_predict_target == "track" else box_motion(boxes).astype(self.dtype)
      targets, predictions = Predictor(m.actor_predict_steps, m.head_hidden, m.embed_dim, self.dtype,
                                       name="actor_predictor")(target.reshape(b * a, t, -1), sequence)
      out["actor_targets"] = targets.reshape(b, a, t, -1).astype(jnp.float32)
      out["actor_predictions"] = predictions.reshape(b, a, t, m.actor_predict_steps, -1).astype(jnp.float32)
    return out
